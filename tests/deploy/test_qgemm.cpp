// Tests of the integer GEMM kernels: every ISA path (forced explicitly, skipped where the CPU
// lacks it) against the scalar references, bit-exactly, on random full-range data and edge shapes.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "bitswitch/deploy/packing.h"
#include "bitswitch/deploy/qgemm.h"
#include "bitswitch/deploy/qgemm_pairs.h"
#include "bitswitch/deploy/qgemm_panels.h"
#include "bitswitch/util/error.h"
#include "deploy_test_util.h"

using namespace bitswitch;
using namespace bitswitch::deploy;

namespace {

struct Shape {
  int M, N, K;
};

std::vector<Shape> edge_shapes() {
  return {{1, 1, 1},   {0, 5, 7},   {5, 0, 7},    {5, 5, 0},    {3, 5, 1},     {4, 4, 64},
          {5, 5, 65},  {7, 3, 63},  {1, 1, 1000}, {17, 9, 127}, {2, 3, 4097},  {9, 7, 16},
          {6, 6, 15},  {33, 2, 17}, {1, 64, 576}, {64, 1, 576}, {3, 70, 2},    {40, 40, 3},
          {5, 6, 20000}};
}

std::vector<Shape> random_shapes(std::mt19937& rng, int count) {
  std::vector<Shape> s;
  for (int i = 0; i < count; ++i)
    s.push_back({1 + int(rng() % 70), 1 + int(rng() % 70), 1 + int(rng() % 300)});
  return s;
}

std::vector<uint8_t> random_u8(std::mt19937& rng, size_t n) {
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = uint8_t(rng());
  return v;
}

std::vector<int8_t> random_codes(std::mt19937& rng, size_t n, int bits) {
  std::uniform_int_distribution<int> d(quant::signed_qmin(bits), quant::signed_qmax(bits));
  std::vector<int8_t> v(n);
  for (auto& x : v) x = int8_t(d(rng));
  return v;
}

std::string shape_str(const Shape& s) {
  return "M=" + std::to_string(s.M) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K);
}

class QgemmIsaTest : public ::testing::TestWithParam<QgemmIsa> {
 protected:
  void SetUp() override {
    if (!qgemm_isa_supported(GetParam()))
      GTEST_SKIP() << qgemm_isa_name(GetParam()) << " is not supported by this CPU";
  }
  void check_plain(const Shape& s, const std::vector<uint8_t>& A, const std::vector<int8_t>& B) {
    std::vector<int32_t> ref(size_t(s.M) * s.N, 123), got(size_t(s.M) * s.N, -456);
    qgemm_u8s8_s32_ref(s.M, s.N, s.K, A.data(), B.data(), ref.data());
    qgemm_u8s8_s32(s.M, s.N, s.K, A.data(), B.data(), got.data(), GetParam());
    ASSERT_EQ(got, ref) << shape_str(s);
  }
};

TEST_P(QgemmIsaTest, MatchesReferenceOnRandomShapes) {
  std::mt19937 rng(1);
  auto shapes = edge_shapes();
  for (const auto& s : random_shapes(rng, 60)) shapes.push_back(s);
  for (const auto& s : shapes) {
    const auto A = random_u8(rng, size_t(s.M) * s.K);
    const auto B = random_codes(rng, size_t(s.N) * s.K, 8);
    check_plain(s, A, B);
  }
}

TEST_P(QgemmIsaTest, ExtremeValuesDoNotSaturate) {
  // 255 * -128 everywhere at the largest K: any int16 saturation or int32 overflow shows.
  for (int8_t b : {int8_t(-128), int8_t(127)}) {
    const Shape s{3, 5, kQgemmMaxK};
    const std::vector<uint8_t> A(size_t(s.M) * s.K, 255);
    const std::vector<int8_t> B(size_t(s.N) * s.K, b);
    std::vector<int32_t> C(size_t(s.M) * s.N);
    qgemm_u8s8_s32(s.M, s.N, s.K, A.data(), B.data(), C.data(), GetParam());
    for (int32_t c : C) ASSERT_EQ(int64_t(c), int64_t(s.K) * 255 * b);
  }
  // Alternating extremes, where a saturating maddubs pair (255*-128 + 255*-128) would clip.
  std::mt19937 rng(2);
  const Shape s{9, 11, 777};
  std::vector<uint8_t> A(size_t(s.M) * s.K);
  std::vector<int8_t> B(size_t(s.N) * s.K);
  for (auto& a : A) a = (rng() & 1) ? 255 : 254;
  for (auto& b : B) b = (rng() & 3) ? -128 : 127;
  check_plain(s, A, B);
}

TEST_P(QgemmIsaTest, PackedMatchesReferenceForEveryWidth) {
  if (!qgemm_packed_isa_supported(GetParam()))
    GTEST_SKIP() << "packed " << qgemm_isa_name(GetParam()) << " is not supported by this CPU";
  std::mt19937 rng(3);
  for (int bits = 2; bits <= 8; ++bits) {
    auto shapes = edge_shapes();
    for (const auto& s : random_shapes(rng, 25)) shapes.push_back(s);
    for (const auto& s : shapes) {
      SCOPED_TRACE("bits=" + std::to_string(bits) + " " + shape_str(s));
      const auto A = random_u8(rng, size_t(s.M) * s.K);
      const auto codes = random_codes(rng, size_t(s.N) * s.K, bits);
      const auto packed = pack_rows(codes.data(), size_t(s.N), size_t(s.K), bits);
      ASSERT_EQ(packed.size(), size_t(s.N) * qgemm_packed_row_bytes(s.K, bits));
      std::vector<int32_t> plain(size_t(s.M) * s.N), ref(plain.size(), 7), got(plain.size(), -7);
      qgemm_u8s8_s32_ref(s.M, s.N, s.K, A.data(), codes.data(), plain.data());
      qgemm_u8_packed_s32_ref(s.M, s.N, s.K, A.data(), packed.data(), bits, ref.data());
      ASSERT_EQ(ref, plain);  // the packed reference decodes the documented layout
      qgemm_u8_packed_s32(s.M, s.N, s.K, A.data(), packed.data(), bits, got.data(), GetParam());
      ASSERT_EQ(got, ref);
    }
  }
}

TEST_P(QgemmIsaTest, PackedExtremesAtLargeK) {
  if (!qgemm_packed_isa_supported(GetParam())) GTEST_SKIP();
  for (int bits : {2, 3, 4, 6}) {
    const Shape s{4, 6, kQgemmMaxK};
    const std::vector<uint8_t> A(size_t(s.M) * s.K, 255);
    const std::vector<int8_t> codes(size_t(s.N) * s.K, int8_t(quant::signed_qmin(bits)));
    const auto packed = pack_rows(codes.data(), size_t(s.N), size_t(s.K), bits);
    std::vector<int32_t> C(size_t(s.M) * s.N);
    qgemm_u8_packed_s32(s.M, s.N, s.K, A.data(), packed.data(), bits, C.data(), GetParam());
    for (int32_t c : C) ASSERT_EQ(int64_t(c), int64_t(s.K) * 255 * quant::signed_qmin(bits)) << bits;
  }
}

// Memory whose last byte is followed by an inaccessible page: a kernel that reads past the end
// of A or B (e.g. a full-width vector load on the last row) faults instead of passing.
class GuardedBuffer {
 public:
  GuardedBuffer(const void* data, size_t size) {
    const size_t page = size_t(::sysconf(_SC_PAGESIZE));
    span_ = (size + page - 1) / page * page + page;
    base_ = static_cast<uint8_t*>(::mmap(nullptr, span_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    EXPECT_NE(base_, MAP_FAILED);
    EXPECT_EQ(::mprotect(base_ + span_ - page, page, PROT_NONE), 0);
    ptr_ = base_ + span_ - page - size;
    if (size) std::memcpy(ptr_, data, size);
  }
  ~GuardedBuffer() { ::munmap(base_, span_); }
  const uint8_t* get() const { return ptr_; }

 private:
  uint8_t* base_ = nullptr;
  uint8_t* ptr_ = nullptr;
  size_t span_ = 0;
};

TEST_P(QgemmIsaTest, NeverReadsPastTheMatrices) {
  std::mt19937 rng(6);
  for (const Shape& s : std::vector<Shape>{{1, 1, 1}, {5, 3, 7}, {3, 5, 17}, {6, 7, 63}, {2, 9, 65}, {7, 2, 130}, {30, 30, 1}}) {
    for (int bits : {2, 3, 4, 6, 8}) {
      if (bits < 8 && !qgemm_packed_isa_supported(GetParam())) continue;
      SCOPED_TRACE("bits=" + std::to_string(bits) + " " + shape_str(s));
      const auto A = random_u8(rng, size_t(s.M) * s.K);
      const auto codes = random_codes(rng, size_t(s.N) * s.K, bits);
      const auto packed = pack_rows(codes.data(), size_t(s.N), size_t(s.K), bits);
      const GuardedBuffer ga(A.data(), A.size()), gb(packed.data(), packed.size());
      std::vector<int32_t> ref(size_t(s.M) * s.N), got(ref.size());
      qgemm_u8s8_s32_ref(s.M, s.N, s.K, A.data(), codes.data(), ref.data());
      if (bits == 8) {
        qgemm_u8s8_s32(s.M, s.N, s.K, ga.get(), reinterpret_cast<const int8_t*>(gb.get()), got.data(), GetParam());
        ASSERT_EQ(got, ref);
      }
      qgemm_u8_packed_s32(s.M, s.N, s.K, ga.get(), gb.get(), bits, got.data(), GetParam());
      ASSERT_EQ(got, ref);
    }
  }
}

// qgemm_u8s8_s32_narrow: int8 rows whose codes are l-bit (the runtime's unpacked low-bit rows),
// every width, against the reference: random shapes (K with and without a remainder of 32), the
// extremes 255 x -2^(l-1) and 255 x (2^(l-1) - 1) over a K long enough for many int16 runs
// (a run one step longer than kUbRun, or saturating arithmetic, would show), and no read past
// either matrix.
TEST_P(QgemmIsaTest, NarrowCodesMatchReferenceForEveryWidth) {
  std::mt19937 rng(8);
  auto shapes = edge_shapes();
  for (const auto& s : random_shapes(rng, 40)) shapes.push_back(s);
  for (int bits = 2; bits <= 8; ++bits) {
    for (const auto& s : shapes) {
      const auto A = random_u8(rng, size_t(s.M) * s.K);
      const auto B = random_codes(rng, size_t(s.N) * s.K, bits);
      std::vector<int32_t> ref(size_t(s.M) * s.N, 123), got(size_t(s.M) * s.N, -456);
      qgemm_u8s8_s32_ref(s.M, s.N, s.K, A.data(), B.data(), ref.data());
      qgemm_u8s8_s32_narrow(s.M, s.N, s.K, A.data(), B.data(), bits, got.data(), GetParam());
      ASSERT_EQ(got, ref) << "bits " << bits << " " << shape_str(s);
    }
    for (int8_t b : {int8_t(quant::signed_qmin(bits)), int8_t(quant::signed_qmax(bits))}) {
      const Shape s{5, 3, 32 * 70 + 9};
      const std::vector<uint8_t> A(size_t(s.M) * s.K, 255);
      const std::vector<int8_t> B(size_t(s.N) * s.K, b);
      std::vector<int32_t> C(size_t(s.M) * s.N);
      qgemm_u8s8_s32_narrow(s.M, s.N, s.K, A.data(), B.data(), bits, C.data(), GetParam());
      for (int32_t c : C) ASSERT_EQ(int64_t(c), int64_t(s.K) * 255 * b) << "bits " << bits;
    }
    for (const Shape& s : std::vector<Shape>{{1, 1, 1}, {5, 3, 7}, {3, 5, 33}, {6, 7, 63}, {2, 9, 65}, {30, 30, 1}}) {
      const auto A = random_u8(rng, size_t(s.M) * s.K);
      const auto B = random_codes(rng, size_t(s.N) * s.K, bits);
      const GuardedBuffer ga(A.data(), A.size()),
          gb(reinterpret_cast<const uint8_t*>(B.data()), B.size());
      std::vector<int32_t> ref(size_t(s.M) * s.N), got(ref.size());
      qgemm_u8s8_s32_ref(s.M, s.N, s.K, A.data(), B.data(), ref.data());
      qgemm_u8s8_s32_narrow(s.M, s.N, s.K, ga.get(), reinterpret_cast<const int8_t*>(gb.get()), bits, got.data(),
                            GetParam());
      ASSERT_EQ(got, ref) << "guarded, bits " << bits << " " << shape_str(s);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, QgemmIsaTest,
                         ::testing::Values(QgemmIsa::kScalar, QgemmIsa::kAvx2, QgemmIsa::kAvx512Vnni),
                         [](const ::testing::TestParamInfo<QgemmIsa>& info) {
                           return std::string(qgemm_isa_name(info.param));
                         });

TEST(QgemmTest, AutoPicksASupportedPath) {
  EXPECT_TRUE(qgemm_isa_supported(qgemm_auto_isa(false)));
  EXPECT_TRUE(qgemm_packed_isa_supported(qgemm_auto_isa(true)));
  std::printf("auto path: %s (packed: %s)\n", qgemm_isa_name(qgemm_auto_isa(false)),
              qgemm_isa_name(qgemm_auto_isa(true)));
  std::mt19937 rng(4);
  const Shape s{13, 10, 300};
  const auto A = random_u8(rng, size_t(s.M) * s.K);
  const auto B = random_codes(rng, size_t(s.N) * s.K, 8);
  std::vector<int32_t> ref(size_t(s.M) * s.N), got(ref.size());
  qgemm_u8s8_s32_ref(s.M, s.N, s.K, A.data(), B.data(), ref.data());
  qgemm_u8s8_s32(s.M, s.N, s.K, A.data(), B.data(), got.data());
  EXPECT_EQ(got, ref);
}

TEST(QgemmTest, RejectsBadArguments) {
  std::vector<uint8_t> A(16);
  std::vector<int8_t> B(16);
  std::vector<int32_t> C(16);
  auto err = [&](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_CONTAINS(err([&] { qgemm_u8s8_s32(-1, 2, 2, A.data(), B.data(), C.data()); }),
                  "qgemm_u8s8_s32: sizes must be non-negative, got M=-1 N=2 K=2");
  EXPECT_CONTAINS(err([&] { qgemm_u8s8_s32(1, 1, kQgemmMaxK + 1, A.data(), B.data(), C.data()); }),
                  "K=65794 exceeds 65793");
  EXPECT_CONTAINS(err([&] { qgemm_u8s8_s32(1, 1, 4, nullptr, B.data(), C.data()); }), "null matrix pointer");
  EXPECT_CONTAINS(err([&] { qgemm_u8_packed_s32(2, 2, 2, A.data(), A.data(), 1, C.data()); }),
                  "qgemm_u8_packed_s32: bits must be in [2, 8], got 1");
  EXPECT_CONTAINS(err([&] { qgemm_u8_packed_s32_ref(2, 2, 2, A.data(), A.data(), 9, C.data()); }),
                  "bits must be in [2, 8], got 9");
  if (!qgemm_isa_supported(QgemmIsa::kAvx512Vnni)) {
    EXPECT_CONTAINS(err([&] { qgemm_u8s8_s32(1, 1, 1, A.data(), B.data(), C.data(), QgemmIsa::kAvx512Vnni); }),
                    "ISA path 'avx512vnni' is not supported by this CPU");
  }
  EXPECT_EQ(qgemm_packed_row_bytes(576, 3), 216u);
  EXPECT_EQ(qgemm_packed_row_bytes(5, 6), 4u);
}

}  // namespace

TEST(QgemmPanels, MatchesReferenceOnConvShapesAndEveryWidth) {
  if (!qgemm_panels_supported()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  std::mt19937 rng(11);
  // (M, N, K): ResNet-20 / small-CNN shapes, odd M (row tails) and N not a multiple of 16.
  const std::vector<std::tuple<int, int, int>> shapes = {{784, 16, 144}, {197, 32, 288}, {49, 64, 576}, {13, 24, 16},
                                                         {5, 80, 36},    {1, 10, 64},   {100, 128, 8}};
  for (const auto& [M, N, K] : shapes) {
    std::uniform_int_distribution<int> u8(0, 255);
    std::vector<uint8_t> A(size_t(M) * (K + 4));
    for (auto& v : A) v = uint8_t(u8(rng));
    const int lda = K + 4;  // a row stride larger than K
    std::vector<uint8_t> A_dense(size_t(M) * K);
    for (int m = 0; m < M; ++m) std::memcpy(&A_dense[size_t(m) * K], &A[size_t(m) * lda], size_t(K));
    for (int bits : {8, 6, 4, 3, 2}) {
      std::uniform_int_distribution<int> code(quant::signed_qmin(bits), quant::signed_qmax(bits));
      std::vector<int8_t> B(size_t(N) * K);
      for (auto& v : B) v = int8_t(code(rng));
      std::vector<int32_t> want(size_t(M) * N), got(size_t(M) * N, -1);
      qgemm_u8s8_s32_ref(M, N, K, A_dense.data(), B.data(), want.data());
      std::vector<int8_t> panels(qgemm_panels_bytes(N, K));
      if (bits == 8) {
        qgemm_panels_from_rows(B.data(), N, K, panels.data());
      } else {
        const auto packed = pack_rows(B.data(), size_t(N), size_t(K), bits);
        qgemm_panels_from_packed(packed.data(), bits, N, K, panels.data());
      }
      qgemm_u8_panels_s32(M, N, K, A.data(), lda, panels.data(), got.data());
      ASSERT_EQ(got, want) << "M " << M << " N " << N << " K " << K << " bits " << bits;
      if (bits < 8) {
        // Packed panels: round trip, and the kernel that unpacks inside its K loop.
        std::vector<uint8_t> packed(qgemm_packed_panels_bytes(N, K, bits));
        qgemm_pack_panels(panels.data(), N, K, bits, packed.data());
        std::vector<int8_t> back(panels.size());
        qgemm_unpack_panels(packed.data(), N, K, bits, back.data());
        ASSERT_EQ(back, panels) << bits;
        if (qgemm_packed_panels_supported()) {
          std::vector<const uint8_t*> rows(static_cast<size_t>(M));
          for (int m = 0; m < M; ++m) rows[size_t(m)] = &A[size_t(m) * lda];
          std::fill(got.begin(), got.end(), -1);
          qgemm_u8_panels_rows_s32(M, N, PanelRows{rows.data(), 1, K / 4, 0},
                                   reinterpret_cast<const int8_t*>(packed.data()), got.data(), bits);
          ASSERT_EQ(got, want) << "packed panels, M " << M << " N " << N << " K " << K << " bits " << bits;
        }
      }
    }
  }
  EXPECT_FALSE(qgemm_panels_usable(16, 18));
  std::vector<int8_t> p(64);
  EXPECT_THROW(qgemm_u8_panels_s32(1, 16, 18, nullptr, 18, p.data(), nullptr), Error);
}

// Panel ranges (threads splitting a layer by its channels): each range writes exactly its
// columns, and the ranges of a random split together give the reference, on random shapes and
// widths, int8 and packed panels.
TEST(QgemmPanels, PanelRangesWriteExactlyTheirColumns) {
  if (!qgemm_panels_supported()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  std::mt19937 rng(12);
  for (int it = 0; it < 40; ++it) {
    const int M = 1 + int(rng() % 60), N = 1 + int(rng() % 140), K = 4 * (1 + int(rng() % 80));
    const int bits = std::vector<int>{8, 8, 6, 4, 3, 2}[rng() % 6];
    if (bits < 8 && !qgemm_packed_panels_supported()) continue;
    SCOPED_TRACE("M " + std::to_string(M) + " N " + std::to_string(N) + " K " + std::to_string(K) + " bits " +
                 std::to_string(bits));
    std::vector<uint8_t> A(size_t(M) * K);
    for (auto& v : A) v = uint8_t(rng());
    std::uniform_int_distribution<int> code(quant::signed_qmin(bits), quant::signed_qmax(bits));
    std::vector<int8_t> B(size_t(N) * K);
    for (auto& v : B) v = int8_t(code(rng));
    std::vector<int32_t> want(size_t(M) * N), got(size_t(M) * N, -7);
    qgemm_u8s8_s32_ref(M, N, K, A.data(), B.data(), want.data());
    std::vector<int8_t> panels(qgemm_panels_bytes(N, K));
    qgemm_panels_from_rows(B.data(), N, K, panels.data());
    std::vector<uint8_t> packed(qgemm_packed_panels_bytes(N, K, bits));
    if (bits < 8) qgemm_pack_panels(panels.data(), N, K, bits, packed.data());
    const int8_t* w = bits < 8 ? reinterpret_cast<const int8_t*>(packed.data()) : panels.data();
    std::vector<const uint8_t*> rows(static_cast<size_t>(M));
    for (int m = 0; m < M; ++m) rows[size_t(m)] = &A[size_t(m) * K];
    // A random split into ranges, run in a random order.
    const int nbs = (N + 15) / 16;
    std::vector<std::pair<int, int>> ranges;
    for (int nb0 = 0; nb0 < nbs;) {
      const int nb1 = std::min(nbs, nb0 + 1 + int(rng() % 6));
      ranges.emplace_back(nb0, nb1);
      nb0 = nb1;
    }
    std::shuffle(ranges.begin(), ranges.end(), rng);
    std::vector<bool> done(size_t(nbs), false);
    for (const auto& [nb0, nb1] : ranges) {
      qgemm_u8_panels_rows_s32(M, N, PanelRows{rows.data(), 1, K / 4, 0}, w, got.data(), bits, nb0, nb1);
      for (int nb = nb0; nb < nb1; ++nb) done[size_t(nb)] = true;
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
          const size_t i = size_t(m) * N + n;
          if (done[size_t(n / 16)]) ASSERT_EQ(got[i], want[i]) << "m " << m << " n " << n << " after " << nb0 << "-" << nb1;
          else ASSERT_EQ(got[i], -7) << "written outside [" << nb0 << ", " << nb1 << "): m " << m << " n " << n;
        }
    }
  }
  std::vector<uint8_t> a(64);
  std::vector<const uint8_t*> r{a.data()};
  std::vector<int8_t> p(qgemm_panels_bytes(32, 4));
  std::vector<int32_t> c(32);
  EXPECT_THROW(qgemm_u8_panels_rows_s32(1, 32, PanelRows{r.data(), 1, 1, 0}, p.data(), c.data(), 8, 1, 3), Error);
  EXPECT_THROW(qgemm_u8_panels_rows_s32(1, 32, PanelRows{r.data(), 1, 1, 0}, p.data(), c.data(), 8, 2, 1), Error);
}

// The AVX2 pair-panel GEMM (and its portable loop) against the reference: edge and random shapes
// (odd K, N not a multiple of 16, M not a multiple of 6, K over one K block of 512 codes), a row
// stride larger than K, the extremes, and guarded buffers.
TEST(QgemmPairs, MatchesReferenceOnEdgeAndRandomShapes) {
  std::mt19937 rng(21);
  std::vector<Shape> shapes = edge_shapes();
  for (const Shape& s : random_shapes(rng, 40)) shapes.push_back(s);
  for (int i = 0; i < 12; ++i) shapes.push_back({1 + int(rng() % 40), 1 + int(rng() % 90), 400 + int(rng() % 1700)});
  for (const Shape& s : shapes) {
    SCOPED_TRACE(shape_str(s));
    const size_t lda = size_t(s.K) + size_t(rng() % 3);
    const auto A = random_u8(rng, size_t(s.M) * lda);
    std::vector<uint8_t> dense(size_t(s.M) * s.K);
    for (int m = 0; m < s.M; ++m) std::copy_n(A.begin() + long(size_t(m) * lda), s.K, dense.begin() + long(size_t(m) * s.K));
    const auto B = random_codes(rng, size_t(s.N) * s.K, 8);
    std::vector<int32_t> want(size_t(s.M) * s.N), got(want.size(), -7);
    qgemm_u8s8_s32_ref(s.M, s.N, s.K, dense.data(), B.data(), want.data());
    std::vector<int8_t> pairs(qgemm_pairs_bytes(s.N, s.K), int8_t(0x55));  // a reused, dirty buffer
    qgemm_pairs_from_rows(B.data(), s.N, s.K, pairs.data());
    for (bool portable : {false, true}) {
      if (portable && size_t(s.M) * s.N * s.K > 3000000) continue;
      std::fill(got.begin(), got.end(), -7);
      qgemm_u8_pairs_s32(s.M, s.N, s.K, A.data(), lda, pairs.data(), got.data(), portable);
      ASSERT_EQ(got, want) << (portable ? "portable" : "kernel");
    }
  }
}

TEST(QgemmPairs, ExtremesAndGuardedBuffers) {
  for (const Shape& s : std::vector<Shape>{{7, 17, 1}, {6, 16, 513}, {13, 33, 20001}, {1, 1, kQgemmMaxK}}) {
    SCOPED_TRACE(shape_str(s));
    for (int8_t w : {int8_t(-128), int8_t(127)}) {
      const std::vector<uint8_t> A(size_t(s.M) * s.K, 255);
      const std::vector<int8_t> B(size_t(s.N) * s.K, w);
      std::vector<int8_t> pairs(qgemm_pairs_bytes(s.N, s.K));
      qgemm_pairs_from_rows(B.data(), s.N, s.K, pairs.data());
      const GuardedBuffer ga(A.data(), A.size()), gb(reinterpret_cast<const uint8_t*>(pairs.data()), pairs.size());
      std::vector<int32_t> got(size_t(s.M) * s.N);
      qgemm_u8_pairs_s32(s.M, s.N, s.K, ga.get(), size_t(s.K), reinterpret_cast<const int8_t*>(gb.get()), got.data());
      for (int32_t v : got) ASSERT_EQ(v, int32_t(255) * w * s.K);
    }
  }
  std::vector<int8_t> p(64);
  std::vector<int32_t> c(4, -1);
  EXPECT_THROW(qgemm_u8_pairs_s32(1, 1, 4, nullptr, 3, p.data(), c.data()), Error);  // lda < K
  EXPECT_THROW(qgemm_u8_pairs_s32(1, 1, kQgemmMaxK + 1, nullptr, kQgemmMaxK + 1, p.data(), c.data()), Error);
  qgemm_u8_pairs_s32(2, 2, 0, nullptr, 0, p.data(), c.data());
  EXPECT_EQ(c, std::vector<int32_t>({0, 0, 0, 0, }));
}

// Pair panels straight from packed rows equal the panels of the unpacked rows, for every width,
// N with and without a remainder of 16 and odd K.
TEST(QgemmPairs, FromPackedEqualsFromUnpackedRows) {
  std::mt19937 rng(23);
  for (const Shape& s : std::vector<Shape>{{1, 1, 1}, {1, 16, 9}, {1, 17, 144}, {1, 70, 255}, {1, 33, 2}, {1, 5, 0}}) {
    for (int bits : {2, 3, 4, 5, 6, 7, 8}) {
      SCOPED_TRACE("bits=" + std::to_string(bits) + " " + shape_str(s));
      const auto codes = random_codes(rng, size_t(s.N) * s.K, bits);
      const auto packed = pack_rows(codes.data(), size_t(s.N), size_t(s.K), bits);
      std::vector<int8_t> want(qgemm_pairs_bytes(s.N, s.K)), got(want.size(), int8_t(0x55));
      qgemm_pairs_from_rows(codes.data(), s.N, s.K, want.data());
      qgemm_pairs_from_packed(packed.data(), bits, s.N, s.K, got.data());
      ASSERT_EQ(got, want);
    }
  }
}
