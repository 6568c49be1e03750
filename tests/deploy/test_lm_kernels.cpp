// Tests of the LM decoder's integer linear layers (deploy/lm_kernels.h): every path (forced,
// skipped where the CPU lacks it) against lm_linear_ref bit for bit on random shapes, groups,
// widths, token counts and thread counts; extreme codes; from_packed == from_codes; the resident
// bytes falling with the width; error paths; the per-token quantizer against its scalar definition.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bitswitch/deploy/lm_kernels.h"
#include "bitswitch/deploy/packing.h"
#include "bitswitch/quant/double_rounding.h"
#include "deploy_test_util.h"

using namespace bitswitch;
using namespace bitswitch::deploy;

namespace {

std::vector<int8_t> random_codes(std::mt19937& rng, size_t n, int lo, int hi) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = int8_t(d(rng));
  return v;
}

std::vector<float> random_floats(std::mt19937& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool isa_available(QgemmIsa isa) {
  try {
    LmLinear::from_codes(1, 32, 8, 0, std::vector<int8_t>(32, 0).data(), std::vector<float>(1, 1.0f).data(), isa);
    return true;
  } catch (const Error&) {
    return false;
  }
}

class LmLinearIsaTest : public ::testing::TestWithParam<QgemmIsa> {
 protected:
  void SetUp() override {
    if (GetParam() == QgemmIsa::kAvx512Vnni ? !(qgemm_isa_supported(GetParam()) && isa_available(GetParam()))
                                            : !qgemm_isa_supported(GetParam()))
      GTEST_SKIP() << qgemm_isa_name(GetParam()) << " is not available here";
  }

  // One layer against the reference for every M and thread count; codes drawn in [lo, hi].
  void check(std::mt19937& rng, int N, int K, int bits, int group, int lo, int hi, int qlo = -127, int qhi = 127) {
    const int G = group == 0 ? K : group;
    const auto codes = random_codes(rng, size_t(N) * K, lo, hi);
    const auto scales = random_floats(rng, size_t(N) * (K / G), 1e-4f, 2e-2f);
    const auto layer = LmLinear::from_codes(N, K, bits, group, codes.data(), scales.data(), GetParam());
    ASSERT_EQ(layer.isa(), GetParam());
    for (int M : {1, 3, 17}) {
      const auto q = random_codes(rng, size_t(M) * K, qlo, qhi);
      const auto a = random_floats(rng, size_t(M), 1e-3f, 1.0f);
      std::vector<float> ref(size_t(M) * N, -1.0f);
      lm_linear_ref(M, N, K, group, q.data(), a.data(), codes.data(), scales.data(), ref.data());
      for (int threads : {1, 2}) {
        std::vector<float> got(size_t(M) * N, 7.0f);
        layer.forward(M, q.data(), a.data(), got.data(), threads);
        ASSERT_TRUE(bits_equal(got, ref)) << "N=" << N << " K=" << K << " bits=" << bits << " G=" << group
                                          << " M=" << M << " threads=" << threads;
      }
    }
  }
};

TEST_P(LmLinearIsaTest, MatchesReferenceOnRandomShapes) {
  std::mt19937 rng(13);
  for (int group : {0, 32, 64, 128}) {
    for (int bits = 2; bits <= 8; ++bits) {
      // K: multiples of the group; per channel also K not a multiple of 32; N odd and not of 8.
      const int K = group == 0 ? int(1 + rng() % 300) : group * int(1 + rng() % 4);
      const int N = 1 + 2 * int(rng() % 40);
      check(rng, N, K, bits, group, quant::signed_qmin(bits), quant::signed_qmax(bits));
    }
  }
  // Groups that are not multiples of 32 (each group padded in the layout).
  check(rng, 9, 96, 4, 24, -8, 7);
  check(rng, 5, 50, 3, 10, -4, 3);
  check(rng, 3, 7, 8, 7, -128, 127);
}

TEST_P(LmLinearIsaTest, ExtremeCodes) {
  std::mt19937 rng(5);
  for (int bits = 2; bits <= 8; ++bits) {
    const int lo = quant::signed_qmin(bits);
    // All weights -2^(l-1) against activations +-127: the largest signed products.
    check(rng, 11, 256, bits, 0, lo, lo, 127, 127);
    check(rng, 11, 256, bits, 0, lo, lo, -127, -127);
    // All weights 2^(l-1) - 1: the largest offset code u = 2^l - 1 (int16 runs at their bound).
    const int hi = quant::signed_qmax(bits);
    check(rng, 11, 1024, bits, 0, hi, hi, 127, 127);
    check(rng, 11, 1024, bits, 128, hi, hi, -127, -127);
    check(rng, 11, 128, bits, 64, lo, hi, -127, 127);
    // Long rows: int32 accumulation over K = 8192 of extreme products.
    check(rng, 3, 8192, bits, 0, lo, lo, -127, -127);
  }
}

TEST_P(LmLinearIsaTest, FromPackedEqualsFromCodes) {
  std::mt19937 rng(7);
  for (int bits = 2; bits <= 8; ++bits) {
    const int N = 13, K = 96;
    const auto codes = random_codes(rng, size_t(N) * K, quant::signed_qmin(bits), quant::signed_qmax(bits));
    const auto scales = random_floats(rng, size_t(N) * 3, 1e-3f, 1e-2f);
    const auto packed = pack_rows(codes.data(), N, K, bits);
    const auto a = LmLinear::from_codes(N, K, bits, 32, codes.data(), scales.data(), GetParam());
    const auto b = LmLinear::from_packed(N, K, bits, 32, packed.data(), packed.size(), scales.data(), GetParam());
    EXPECT_EQ(a.weight_bytes(), b.weight_bytes());
    const int M = 5;
    const auto q = random_codes(rng, size_t(M) * K, -127, 127);
    const std::vector<float> s(M, 0.01f);
    std::vector<float> ya(size_t(M) * N), yb(size_t(M) * N);
    a.forward(M, q.data(), s.data(), ya.data());
    b.forward(M, q.data(), s.data(), yb.data());
    EXPECT_TRUE(bits_equal(ya, yb)) << bits << " bits";
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, LmLinearIsaTest,
                         ::testing::Values(QgemmIsa::kScalar, QgemmIsa::kAvx2, QgemmIsa::kAvx512Vnni),
                         [](const auto& info) { return std::string(qgemm_isa_name(info.param)); });

TEST(LmLinear, ResidentBytesFallWithTheWidth) {
  const int N = 64, K = 1024;
  const std::vector<int8_t> codes(size_t(N) * K, 1);
  const std::vector<float> scales(N, 1.0f);
  size_t prev = 0;
  for (int bits = 8; bits >= 2; --bits) {
    const auto l = LmLinear::from_codes(N, K, bits, 0, codes.data(), scales.data());
    // Exactly `bits` bits per weight plus the scales (N and K are multiples of the tile).
    EXPECT_EQ(l.weight_bytes(), size_t(N) * K * bits / 8 + N * sizeof(float)) << bits;
    if (prev) EXPECT_LT(l.weight_bytes(), prev);
    prev = l.weight_bytes();
    EXPECT_EQ(l.rows(), N);
    EXPECT_EQ(l.cols(), K);
    EXPECT_EQ(l.bits(), bits);
    EXPECT_EQ(l.group(), K);
  }
}

TEST(LmLinear, AutoPathIsTheBestAvailable) {
  const std::vector<int8_t> codes(64, 0);
  const std::vector<float> scales(2, 1.0f);
  const auto l = LmLinear::from_codes(2, 32, 4, 0, codes.data(), scales.data());
  if (qgemm_auto_isa(false) == QgemmIsa::kScalar) EXPECT_EQ(l.isa(), QgemmIsa::kScalar);
  else EXPECT_EQ(l.isa(), QgemmIsa::kAvx2);
}

TEST(LmLinear, Errors) {
  const std::vector<int8_t> codes(6 * 64, 0);
  const std::vector<float> scales(6 * 64, 1.0f);
  EXPECT_CONTAINS(error_of([&] { LmLinear::from_codes(6, 64, 4, 48, codes.data(), scales.data()); }),
                  "group 48 must divide K=64");
  EXPECT_CONTAINS(error_of([&] { LmLinear::from_codes(6, 64, 4, -1, codes.data(), scales.data()); }), "group -1");
  EXPECT_CONTAINS(error_of([&] { LmLinear::from_codes(0, 64, 4, 0, codes.data(), scales.data()); }),
                  "N and K must be positive, got N=0");
  EXPECT_CONTAINS(error_of([&] { LmLinear::from_codes(6, 0, 4, 0, codes.data(), scales.data()); }), "K=0");
  EXPECT_CONTAINS(error_of([&] { LmLinear::from_codes(1, kLmMaxK + 1, 4, 0, codes.data(), scales.data()); }),
                  "int32-exact limit");
  EXPECT_CONTAINS(error_of([&] { LmLinear::from_codes(6, 64, 1, 0, codes.data(), scales.data()); }),
                  "bits must be in [2, 8], got 1");
  EXPECT_CONTAINS(error_of([&] { LmLinear::from_codes(6, 64, 9, 0, codes.data(), scales.data()); }), "got 9");
  auto bad = codes;
  bad[3 * 64 + 5] = 8;  // outside [-8, 7]
  EXPECT_CONTAINS(error_of([&] { LmLinear::from_codes(6, 64, 4, 0, bad.data(), scales.data()); }),
                  "code 8 of row 3 is outside the 4-bit range [-8, 7]");
  bad[3 * 64 + 5] = -3;  // inside 3 bits' [-4, 3]; -5 is not
  bad[5 * 64] = -5;
  EXPECT_CONTAINS(error_of([&] { LmLinear::from_codes(6, 64, 3, 0, bad.data(), scales.data()); }),
                  "code -5 of row 5 is outside the 3-bit range");
  const auto packed = pack_rows(codes.data(), 6, 64, 4);
  EXPECT_CONTAINS(error_of([&] { LmLinear::from_packed(6, 64, 4, 0, packed.data(), packed.size() - 1, scales.data()); }),
                  "packed weights hold 191 bytes, 6 rows of 64 4-bit codes need 192");
  EXPECT_CONTAINS(error_of([] { LmLinear().forward(1, nullptr, nullptr, nullptr); }), "empty layer");
  const auto l = LmLinear::from_codes(6, 64, 4, 0, codes.data(), scales.data());
  EXPECT_CONTAINS(error_of([&] { l.forward(-1, nullptr, nullptr, nullptr); }), "M must be non-negative");
  EXPECT_CONTAINS(error_of([&] { LmLinear::from_codes(6, 64, 4, 0, codes.data(), scales.data(), QgemmIsa::kAvx512Vnni); }),
                  "avx");
}

// lm_quantize_tokens (AVX2 where the CPU has it) against the scalar functions it must equal, on
// lengths with and without a tail, an all-zero token, a negative maximum and exact ties: a token
// whose maximum is 127 has scale 1, so x = n + 0.5 lies half-way between two codes.
TEST(LmLinear, QuantizeTokensIsTheScalarDefinition) {
  std::mt19937 rng(3);
  for (int K : {7, 77, 1024, 2821}) {
    const int M = 7;
    auto x = random_floats(rng, size_t(M) * K, -3.0f, 3.0f);
    for (int k = 0; k < K; ++k) x[size_t(2) * K + k] = 0.0f;  // an all-zero token
    x[size_t(4) * K + K / 2] = -50.0f;                          // a negative maximum
    for (int k = 0; k < K; ++k) x[size_t(5) * K + k] = float(k % 254) - 126.5f;  // ties
    x[size_t(5) * K] = 127.0f;
    std::vector<int8_t> q(size_t(M) * K);
    std::vector<float> a(M);
    lm_quantize_tokens(M, K, x.data(), q.data(), a.data());
    for (int m = 0; m < M; ++m) {
      float mx = 0.0f;
      for (int k = 0; k < K; ++k) mx = std::max(mx, std::fabs(x[size_t(m) * K + k]));
      const float s = quant::per_token_scale(mx, 8);
      EXPECT_EQ(a[m], s) << m;
      for (int k = 0; k < K; ++k) {
        const float c = quant::per_token_code(x[size_t(m) * K + k], 1.0f / s, 8);
        ASSERT_EQ(int(q[size_t(m) * K + k]), int(c)) << "K " << K << " token " << m << " element " << k;
        ASSERT_LE(std::abs(int(c)), 127);
      }
    }
    EXPECT_EQ(int(q[size_t(4) * K + K / 2]), -127);
    EXPECT_EQ(a[5], 1.0f);
    if (K > 3) EXPECT_EQ(int(q[size_t(5) * K + 1]), -126);  // -125.5 rounds to even -126
  }
}

}  // namespace
