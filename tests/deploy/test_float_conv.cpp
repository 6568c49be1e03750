// The full-precision conv rows (float_conv.h: the FP stem and FP layers of the runtime) against
// their scalar definition, bit for bit, on random shapes: every row remainder of the 8-row
// and 6-row AVX-512 and 6-row AVX2 blocks, column counts with and without remainders of 32, 16
// and 8 (N < 32 takes 8-row AVX-512 blocks, N >= 32 6-row ones), with and
// without bias, K from 1 up; each SIMD path this CPU has.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "bitswitch/deploy/float_conv.h"

using namespace bitswitch::deploy;

namespace {
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
}  // namespace

TEST(FloatConv, MatchesTheDefinitionBitForBitOnRandomShapes) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nf(0.0f, 1.0f);
  for (int trial = 0; trial < 120; ++trial) {
    const int M = 1 + int(rng() % 60), K = 1 + int(rng() % 160), N = 1 + int(rng() % 70);
    const bool with_bias = trial % 3 != 0;
    std::vector<float> A(size_t(M) * K), bias(static_cast<size_t>(N));
    std::vector<float> wt(size_t(K) * N);
    for (auto& v : A) v = nf(rng) * 3.0f;
    for (auto& v : wt) v = nf(rng) * 0.1f;
    for (auto& v : bias) v = nf(rng);
    if (trial % 5 == 0) A[0] = -0.0f;  // signed zero and large magnitudes
    if (trial % 7 == 0) A[size_t(M) * K - 1] = 1e30f;
    std::vector<float> ref(size_t(M) * N), got(ref.size(), 7.0f), avx2(ref.size(), 7.0f), scalar(ref.size(), 7.0f);
    const float* b = with_bias ? bias.data() : nullptr;
    fconv_rows_ref(A.data(), M, K, N, wt.data(), b, ref.data());
    fconv_rows(A.data(), M, K, N, wt.data(), b, got.data(), QgemmIsa::kAuto);
    fconv_rows(A.data(), M, K, N, wt.data(), b, avx2.data(), QgemmIsa::kAvx2);
    fconv_rows(A.data(), M, K, N, wt.data(), b, scalar.data(), QgemmIsa::kScalar);
    ASSERT_TRUE(same_bits(got, ref)) << "trial " << trial << ": M " << M << " K " << K << " N " << N << " bias "
                                     << with_bias;
    ASSERT_TRUE(same_bits(avx2, ref)) << "trial " << trial << " (AVX2 path)";
    ASSERT_TRUE(same_bits(scalar, ref)) << "trial " << trial;
  }
}

// The definition itself on a case worked by hand: products and sums in double, then one rounding
// to float (a float accumulation would lose the 1 against 2^25).
TEST(FloatConv, AccumulatesInDoubleThenRoundsOnce) {
  const float A[3] = {33554432.0f, 1.0f, -33554432.0f};  // 2^25, 1, -2^25
  const float wt[3] = {1.0f, 1.0f, 1.0f};
  const float bias = 0.25f;
  float y = 0;
  fconv_rows(A, 1, 3, 1, wt, &bias, &y);
  EXPECT_EQ(y, 1.25f);
  fconv_rows_ref(A, 1, 3, 1, wt, nullptr, &y);
  EXPECT_EQ(y, 1.0f);
}

// The convolution entry point (rows built from the NHWC input per block) against im2col written
// out here from the definition, then the reference rows: random geometries (kernel 1-7, stride
// 1-3, padding 0-3, channels 1-9, batch 1-2, up to 70 output channels) and random row ranges,
// on each SIMD path this CPU has.
TEST(FloatConv, ConvRowsMatchIm2colThenReference) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nf(0.0f, 1.0f);
  for (int trial = 0; trial < 60; ++trial) {
    FconvInput in;
    in.kernel = 1 + int(rng() % 7);
    in.stride = 1 + int(rng() % 3);
    in.padding = int(rng() % 4);
    in.c = 1 + int(rng() % 9);
    in.n = 1 + int(rng() % 2);
    in.h = std::max(1, in.kernel - 2 * in.padding) + int(rng() % 12);
    in.w = std::max(1, in.kernel - 2 * in.padding) + int(rng() % 12);
    const int N = 1 + int(rng() % 70), K = in.kernel * in.kernel * in.c;
    const int ho = (in.h + 2 * in.padding - in.kernel) / in.stride + 1;
    const int wo = (in.w + 2 * in.padding - in.kernel) / in.stride + 1;
    const int M = in.n * ho * wo;
    std::vector<float> x(size_t(in.n) * in.h * in.w * in.c), wt(size_t(K) * N), bias(static_cast<size_t>(N));
    for (auto& v : x) v = nf(rng);
    for (auto& v : wt) v = nf(rng) * 0.1f;
    for (auto& v : bias) v = nf(rng);
    in.x = x.data();
    std::vector<float> col(size_t(M) * K);
    for (int b = 0, m = 0; b < in.n; ++b)
      for (int oy = 0; oy < ho; ++oy)
        for (int ox = 0; ox < wo; ++ox, ++m)
          for (int ky = 0, k = 0; ky < in.kernel; ++ky)
            for (int kx = 0; kx < in.kernel; ++kx)
              for (int ci = 0; ci < in.c; ++ci, ++k) {
                const int iy = oy * in.stride - in.padding + ky, ix = ox * in.stride - in.padding + kx;
                const bool inside = iy >= 0 && iy < in.h && ix >= 0 && ix < in.w;
                col[size_t(m) * K + k] = inside ? x[((size_t(b) * in.h + iy) * in.w + ix) * in.c + ci] : 0.0f;
              }
    const float* bp = trial % 2 ? bias.data() : nullptr;
    std::vector<float> ref(size_t(M) * N);
    fconv_rows_ref(col.data(), M, K, N, wt.data(), bp, ref.data());
    const int m0 = int(rng() % unsigned(M)), m1 = m0 + 1 + int(rng() % unsigned(M - m0));
    for (QgemmIsa isa : {QgemmIsa::kAuto, QgemmIsa::kAvx2, QgemmIsa::kScalar}) {
      std::vector<float> got(ref.size(), 7.0f);
      fconv_conv(in, 0, M, N, wt.data(), bp, got.data(), isa);
      ASSERT_TRUE(same_bits(got, ref)) << "trial " << trial << " isa " << qgemm_isa_name(isa) << ": k " << in.kernel
                                       << " s " << in.stride << " p " << in.padding << " c " << in.c << " N " << N;
      std::vector<float> part(ref.size(), 7.0f);
      fconv_conv(in, m0, m1, N, wt.data(), bp, part.data(), isa);
      for (int m = 0; m < M; ++m)
        for (int j = 0; j < N; ++j) {
          const float want = m >= m0 && m < m1 ? ref[size_t(m) * N + j] : 7.0f;
          ASSERT_EQ(std::memcmp(&part[size_t(m) * N + j], &want, sizeof(float)), 0)
              << "trial " << trial << " rows " << m0 << ".." << m1 << " row " << m;
        }
    }
  }
}
