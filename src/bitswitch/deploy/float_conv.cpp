// Full-precision conv/linear rows; the definition is in float_conv.h.
#include "bitswitch/deploy/float_conv.h"

#include <algorithm>
#include <cstddef>
#include <vector>

#include "bitswitch/deploy/x86_simd.h"

namespace bitswitch::deploy {

void fconv_rows_ref(const float* A, int M, int K, int N, const double* wt, const float* bias, float* y) {
  for (int m = 0; m < M; ++m) {
    const float* a = A + size_t(m) * K;
    for (int j = 0; j < N; ++j) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += double(a[k]) * wt[size_t(k) * N + j];
      y[size_t(m) * N + j] = float(bias ? s + double(bias[j]) : s);
    }
  }
}

namespace {

#if BS_DEPLOY_X86
#define BS_AVX2 __attribute__((target("avx2")))

// Rows [0, MR) x columns [j0, j0 + 8) from `a` (MR x K doubles): 2 * MR accumulators of 4 doubles.
// Each lane adds its products in increasing k, as the reference does. The accumulators are named
// variables (with arrays GCC 12 stores all of them to the stack on every k: 2x slower).
template <int MR>
BS_AVX2 void block_avx2(const double* a, int K, int N, const double* wt, int j0, const float* bias, float* y) {
  static_assert(MR >= 1 && MR <= 6, "block rows");
  const __m256d z = _mm256_setzero_pd();
  __m256d c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;
  const double* w = wt + j0;
  const double *a0 = a, *a1 = a + std::min(1, MR - 1) * size_t(K), *a2 = a + std::min(2, MR - 1) * size_t(K),
               *a3 = a + std::min(3, MR - 1) * size_t(K), *a4 = a + std::min(4, MR - 1) * size_t(K),
               *a5 = a + std::min(5, MR - 1) * size_t(K);
#define BS_ROW(r, c0, c1)                                        \
  if constexpr (MR > r) {                                        \
    const __m256d av = _mm256_broadcast_sd(a##r + k);            \
    c0 = _mm256_add_pd(c0, _mm256_mul_pd(av, w0));               \
    c1 = _mm256_add_pd(c1, _mm256_mul_pd(av, w1));               \
  }
  for (int k = 0; k < K; ++k, w += N) {
    const __m256d w0 = _mm256_loadu_pd(w), w1 = _mm256_loadu_pd(w + 4);
    BS_ROW(0, c00, c01) BS_ROW(1, c10, c11) BS_ROW(2, c20, c21) BS_ROW(3, c30, c31) BS_ROW(4, c40, c41)
    BS_ROW(5, c50, c51)
  }
#undef BS_ROW
  const __m256d acc[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
  for (int r = 0; r < MR; ++r) {
    __m256d lo = acc[2 * r], hi = acc[2 * r + 1];
    if (bias) {
      lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm_loadu_ps(bias + j0)));
      hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm_loadu_ps(bias + j0 + 4)));
    }
    _mm_storeu_ps(y + size_t(r) * N + j0, _mm256_cvtpd_ps(lo));
    _mm_storeu_ps(y + size_t(r) * N + j0 + 4, _mm256_cvtpd_ps(hi));
  }
}

using BlockFn = void (*)(const double*, int, int, const double*, int, const float*, float*);
constexpr BlockFn kBlocks[7] = {nullptr,           block_avx2<1>, block_avx2<2>, block_avx2<3>,
                                block_avx2<4>, block_avx2<5>, block_avx2<6>};

void fconv_avx2(const float* A, int M, int K, int N, const double* wt, const float* bias, float* y) {
  constexpr int kMr = 6;
  std::vector<double> a(size_t(kMr) * K);  // rows m0 .. m0 + mr, widened once for all column blocks
  const int n8 = N / 8 * 8;
  for (int m0 = 0; m0 < M; m0 += kMr) {
    const int mr = std::min(kMr, M - m0);
    for (int r = 0; r < mr; ++r)
      for (int k = 0; k < K; ++k) a[size_t(r) * K + k] = double(A[size_t(m0 + r) * K + k]);
    float* ym = y + size_t(m0) * N;
    for (int j0 = 0; j0 < n8; j0 += 8) kBlocks[mr](a.data(), K, N, wt, j0, bias, ym);
    for (int r = 0; r < mr; ++r)  // the last N % 8 columns, in the reference's order
      for (int j = n8; j < N; ++j) {
        double s = 0;
        for (int k = 0; k < K; ++k) s += a[size_t(r) * K + k] * wt[size_t(k) * N + j];
        ym[size_t(r) * N + j] = float(bias ? s + double(bias[j]) : s);
      }
  }
}
#endif

}  // namespace

void fconv_rows(const float* A, int M, int K, int N, const double* wt, const float* bias, float* y, QgemmIsa isa) {
  if (M <= 0 || N <= 0) return;
#if BS_DEPLOY_X86
  if (isa == QgemmIsa::kAuto) isa = qgemm_auto_isa(/*packed=*/false);
  if (isa != QgemmIsa::kScalar && cpu::features().avx2) {
    fconv_avx2(A, M, K, N, wt, bias, y);
    return;
  }
#endif
  (void)isa;
  fconv_rows_ref(A, M, K, N, wt, bias, y);
}

}  // namespace bitswitch::deploy
