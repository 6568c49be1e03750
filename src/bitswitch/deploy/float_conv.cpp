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
#define BS_AVX2 __attribute__((target("avx2,fma")))

// Rows [0, MR) x columns [j0, j0 + 8) from `a` (MR x K doubles), weights w[k * ws + (0..7)]:
// 2 * MR accumulators of 4 doubles.
// Each lane adds its products in increasing k, as the reference does, with one fused
// multiply-add per product: the weights are floats widened to double (float_conv.h), so each
// product of two floats is exact in double and fma(a, w, c) rounds exactly as c + a * w does.
// The accumulators are named variables (with arrays GCC 12 stores all of them to the stack on
// every k: 2x slower).
template <int MR>
BS_AVX2 void block_avx2(const double* a, int K, int N, const double* w, int ws, int j0, const float* bias, float* y) {
  static_assert(MR >= 1 && MR <= 6, "block rows");
  const __m256d z = _mm256_setzero_pd();
  __m256d c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;
  const double *a0 = a, *a1 = a + std::min(1, MR - 1) * size_t(K), *a2 = a + std::min(2, MR - 1) * size_t(K),
               *a3 = a + std::min(3, MR - 1) * size_t(K), *a4 = a + std::min(4, MR - 1) * size_t(K),
               *a5 = a + std::min(5, MR - 1) * size_t(K);
#define BS_ROW(r, c0, c1)                                        \
  if constexpr (MR > r) {                                        \
    const __m256d av = _mm256_broadcast_sd(a##r + k);            \
    c0 = _mm256_fmadd_pd(av, w0, c0);                            \
    c1 = _mm256_fmadd_pd(av, w1, c1);                            \
  }
  for (int k = 0; k < K; ++k, w += ws) {
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

#define BS_AVX512 __attribute__((target("avx512f")))

// The AVX-512 form of block_avx2: rows [0, MR) x columns [j0, j0 + 16), weights
// w[k * ws + (0..15)], 2 * MR accumulators of 8 doubles, the same per-lane order. Per k it issues
// half the instructions of the AVX2 block for the same multiplies, and its 32 registers hold 8
// rows. The row's value enters each FMA as an embedded broadcast ({1to8} memory operand), which
// GCC does not emit for a value used twice: a separate vbroadcastsd per row measured 22.4-22.9
// against 23.3-24.2 GMAC/s on the stem shape (sequential runs of a scratch program).
template <int MR>
BS_AVX512 void block_avx512(const double* a, int K, int N, const double* w, int ws, int j0, const float* bias,
                            float* y) {
  static_assert(MR >= 1 && MR <= 8, "block rows");
  const __m512d z = _mm512_setzero_pd();
  __m512d c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z,
          c60 = z, c61 = z, c70 = z, c71 = z;
  const double *a0 = a, *a1 = a + std::min(1, MR - 1) * size_t(K), *a2 = a + std::min(2, MR - 1) * size_t(K),
               *a3 = a + std::min(3, MR - 1) * size_t(K), *a4 = a + std::min(4, MR - 1) * size_t(K),
               *a5 = a + std::min(5, MR - 1) * size_t(K), *a6 = a + std::min(6, MR - 1) * size_t(K),
               *a7 = a + std::min(7, MR - 1) * size_t(K);
#define BS_ROW(r, c0, c1)                                        \
  if constexpr (MR > r) {                                        \
    __asm__("vfmadd231pd %2%{1to8%}, %1, %0" : "+v"(c0) : "v"(w0), "m"(a##r[k])); \
    __asm__("vfmadd231pd %2%{1to8%}, %1, %0" : "+v"(c1) : "v"(w1), "m"(a##r[k])); \
  }
  for (int k = 0; k < K; ++k, w += ws) {
    const __m512d w0 = _mm512_loadu_pd(w), w1 = _mm512_loadu_pd(w + 8);
    BS_ROW(0, c00, c01) BS_ROW(1, c10, c11) BS_ROW(2, c20, c21) BS_ROW(3, c30, c31) BS_ROW(4, c40, c41)
    BS_ROW(5, c50, c51) BS_ROW(6, c60, c61) BS_ROW(7, c70, c71)
  }
#undef BS_ROW
  const __m512d acc[16] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71};
  for (int r = 0; r < MR; ++r) {
    __m512d lo = acc[2 * r], hi = acc[2 * r + 1];
    if (bias) {
      lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm256_loadu_ps(bias + j0)));
      hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_loadu_ps(bias + j0 + 8)));
    }
    _mm256_storeu_ps(y + size_t(r) * N + j0, _mm512_cvtpd_ps(lo));
    _mm256_storeu_ps(y + size_t(r) * N + j0 + 8, _mm512_cvtpd_ps(hi));
  }
}

using BlockFn = void (*)(const double*, int, int, const double*, int, int, const float*, float*);
constexpr BlockFn kBlocks[7] = {nullptr,           block_avx2<1>, block_avx2<2>, block_avx2<3>,
                                block_avx2<4>, block_avx2<5>, block_avx2<6>};
constexpr BlockFn kBlocks512[9] = {nullptr,          block_avx512<1>, block_avx512<2>, block_avx512<3>, block_avx512<4>,
                                   block_avx512<5>, block_avx512<6>, block_avx512<7>, block_avx512<8>};

// Rows widened to double once per row block, for all its column blocks.
BS_AVX2 void widen_avx2(const float* A, size_t n, double* a) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) _mm256_storeu_pd(a + i, _mm256_cvtps_pd(_mm_loadu_ps(A + i)));
  for (; i < n; ++i) a[i] = double(A[i]);
}

// Row blocks of kMr rows: the widest column blocks first (16 with AVX-512, then 8), the last
// N % 8 columns in the reference's order. With AVX-512 and enough rows to pay for it, the
// 16-column blocks read their weights from a copy made per call in panel order ([N/16][K][16]:
// each k's 16 weights in one 128-byte run, a sequential stream) instead of rows N doubles apart.
template <bool kWide>
void fconv_blocks(const float* A, int M, int K, int N, const double* wt, const float* bias, float* y) {
  constexpr int kMr = kWide ? 8 : 6;
  std::vector<double> a(size_t(kMr) * K);  // rows m0 .. m0 + mr, widened once for all column blocks
  const int n16 = kWide ? N / 16 * 16 : 0, n8 = N / 8 * 8;
  std::vector<double> panels;
  const bool use_panels = kWide && M >= 4 * kMr && n16 > 0;
  if (use_panels) {
    panels.resize(size_t(n16) * K);
    for (int j0 = 0; j0 < n16; j0 += 16)
      for (int k = 0; k < K; ++k)
        std::copy_n(wt + size_t(k) * N + j0, 16, panels.data() + (size_t(j0) * K + size_t(k) * 16));
  }
  for (int m0 = 0; m0 < M; m0 += kMr) {
    const int mr = std::min(kMr, M - m0);
    widen_avx2(A + size_t(m0) * K, size_t(mr) * K, a.data());
    float* ym = y + size_t(m0) * N;
    for (int j0 = 0; j0 < n16; j0 += 16) {
      if (use_panels) kBlocks512[mr](a.data(), K, N, panels.data() + size_t(j0) * K, 16, j0, bias, ym);
      else kBlocks512[mr](a.data(), K, N, wt + j0, N, j0, bias, ym);
    }
    for (int j0 = n16; j0 < n8; j0 += 8) {  // 6-row AVX2 blocks
      for (int r0 = 0; r0 < mr; r0 += 6)
        kBlocks[std::min(6, mr - r0)](a.data() + size_t(r0) * K, K, N, wt + j0, N, j0, bias, ym + size_t(r0) * N);
    }
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
  // AVX-512 blocks where the CPU has them and `isa` allows (kAuto / kAvx512Vnni), else AVX2.
  if (isa != QgemmIsa::kScalar && isa != QgemmIsa::kAvx2 && cpu::features().avx512f) {
    fconv_blocks<true>(A, M, K, N, wt, bias, y);
    return;
  }
  if (isa != QgemmIsa::kScalar && cpu::features().avx2 && cpu::features().fma) {
    fconv_blocks<false>(A, M, K, N, wt, bias, y);
    return;
  }
#endif
  (void)isa;
  fconv_rows_ref(A, M, K, N, wt, bias, y);
}

}  // namespace bitswitch::deploy
