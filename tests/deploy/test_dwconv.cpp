// The depthwise integer convolution against its scalar reference, bit-exactly, on random shapes
// (every stride / padding / kernel the runtime may see, odd channel counts, both pad values), and
// the signed-input correction against a plain signed GEMM.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "bitswitch/deploy/dwconv.h"
#include "bitswitch/deploy/qgemm.h"

using namespace bitswitch::deploy;

TEST(Dwconv, OptimisedMatchesReferenceOnRandomShapes) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 120; ++trial) {
    // Widths up to 40: runs of 3x3 interior pixels in blocks of 8 and their remainders.
    const int n = 1 + int(rng() % 3), h = 1 + int(rng() % 13), w = 1 + int(rng() % 40);
    const int C = 1 + int(rng() % 70), k = trial % 3 == 0 ? 1 + int(rng() % 5) : 3;
    const int stride = 1 + int(rng() % 2), pad = int(rng() % (k / 2 + 1));
    if (h + 2 * pad < k || w + 2 * pad < k) continue;
    const uint8_t padv = trial % 2 ? 128 : 0;
    std::vector<uint8_t> x(size_t(n) * h * w * C);
    std::vector<int8_t> wt(size_t(k) * k * C);
    for (auto& v : x) v = uint8_t(rng());
    for (auto& v : wt) v = int8_t(rng());
    // Full-range extremes in the first channel: 255 x -128 products.
    x[0] = 255;
    wt[0] = -128;
    const int ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
    std::vector<int32_t> ref(size_t(n) * ho * wo * C), got(ref.size(), 7);
    dwconv_u8s8_s32_ref(n, h, w, C, k, stride, pad, padv, x.data(), wt.data(), ref.data());
    // In two row ranges, as two threads would.
    const int rows = n * ho, mid = rows / 2;
    dwconv_u8s8_s32(n, h, w, C, k, stride, pad, padv, x.data(), wt.data(), got.data(), 0, mid);
    dwconv_u8s8_s32(n, h, w, C, k, stride, pad, padv, x.data(), wt.data(), got.data(), mid, rows);
    ASSERT_EQ(got, ref) << "trial " << trial << ": " << n << "x" << h << "x" << w << "x" << C << " k" << k << " s"
                        << stride << " p" << pad;
  }
}

TEST(Dwconv, ReferenceIsTheDefinition) {
  // One channel, 3x3 input, 3x3 kernel, pad 1 with pad value 0: the centre output is the full
  // dot product and a corner sees 4 pixels.
  const std::vector<uint8_t> x = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<int8_t> w = {1, 0, -1, 2, 0, -2, 1, 0, -1};
  std::vector<int32_t> out(9);
  dwconv_u8s8_s32_ref(1, 3, 3, 1, 3, 1, 1, 0, x.data(), w.data(), out.data());
  EXPECT_EQ(out[4], 1 * 1 - 3 + 2 * 4 - 2 * 6 + 7 - 9);
  EXPECT_EQ(out[0], 0 * 1 + 0 * 0 + 0 * -1 + 0 * 2 + 1 * 0 + 2 * -2 + 0 * 1 + 4 * 0 + 5 * -1);
}

TEST(SignedInput, OffsetCodesWithTheCorrectionAreTheSignedGemm) {
  std::mt19937 rng(12);
  for (int trial = 0; trial < 20; ++trial) {
    const int M = 1 + int(rng() % 40), N = 1 + int(rng() % 40), K = 1 + int(rng() % 600);
    std::vector<int8_t> a(size_t(M) * K), b(size_t(N) * K);
    for (auto& v : a) v = int8_t(rng());
    for (auto& v : b) v = int8_t(rng());
    a[0] = -128, b[0] = -128;
    std::vector<uint8_t> au(a.size());
    for (size_t i = 0; i < a.size(); ++i) au[i] = uint8_t(int(a[i]) + 128);
    std::vector<int32_t> corr(static_cast<size_t>(N)), got(static_cast<size_t>(M) * N);
    signed_input_correction(b.data(), N, K, corr.data());
    for (QgemmIsa isa : {QgemmIsa::kScalar, QgemmIsa::kAvx2}) {
      if (!qgemm_isa_supported(isa)) continue;
      qgemm_u8s8_s32(M, N, K, au.data(), b.data(), got.data(), isa);
      for (int m = 0; m < M; ++m)
        for (int j = 0; j < N; ++j) {
          int32_t want = 0;
          for (int k = 0; k < K; ++k) want += int32_t(a[size_t(m) * K + k]) * b[size_t(j) * K + k];
          ASSERT_EQ(got[size_t(m) * N + j] + corr[size_t(j)], want) << "trial " << trial;
        }
    }
  }
}
