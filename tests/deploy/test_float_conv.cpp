// The full-precision conv rows (float_conv.h: the FP stem and FP layers of the runtime) against
// their scalar definition, bit for bit, on random shapes: every row remainder of the 8-row
// AVX-512 and 6-row AVX2 blocks, column counts with and without remainders of 16 and 8, with and
// without bias, K from 1 up; each SIMD path this CPU has.
#include <gtest/gtest.h>

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
  for (int trial = 0; trial < 80; ++trial) {
    const int M = 1 + int(rng() % 40), K = 1 + int(rng() % 160), N = 1 + int(rng() % 70);
    const bool with_bias = trial % 3 != 0;
    std::vector<float> A(size_t(M) * K), bias(static_cast<size_t>(N));
    std::vector<double> wt(size_t(K) * N);
    for (auto& v : A) v = nf(rng) * 3.0f;
    for (auto& v : wt) v = double(nf(rng) * 0.1f);  // floats widened, as the runtime's weights
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
  const double wt[3] = {1.0, 1.0, 1.0};
  const float bias = 0.25f;
  float y = 0;
  fconv_rows(A, 1, 3, 1, wt, &bias, &y);
  EXPECT_EQ(y, 1.25f);
  fconv_rows_ref(A, 1, 3, 1, wt, nullptr, &y);
  EXPECT_EQ(y, 1.0f);
}
