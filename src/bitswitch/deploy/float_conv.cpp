// Full-precision conv/linear rows; the definition is in float_conv.h.
#include "bitswitch/deploy/float_conv.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "bitswitch/deploy/x86_simd.h"

namespace bitswitch::deploy {

void fconv_rows_ref(const float* A, int M, int K, int N, const float* wt, const float* bias, float* y) {
  for (int m = 0; m < M; ++m) {
    const float* a = A + size_t(m) * K;
    for (int j = 0; j < N; ++j) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += double(a[k]) * double(wt[size_t(k) * N + j]);
      y[size_t(m) * N + j] = float(bias ? s + double(bias[j]) : s);
    }
  }
}

namespace {

// Rows [m0, m0 + mr) of the GEMM's A operand, widened to double into a[0 .. mr * K): the rows of
// A itself (fconv_rows), or the conv's im2col rows built from its NHWC input (fconv_conv), so the
// conv's K-wide rows are never written out as floats (7.4 MB per image for ResNet's stem).
struct DenseRows {
  const float* A;
  int K;
  void operator()(int m0, int mr, double* a) const;
};

struct ConvRows {
  FconvInput in;
  int ho, wo;
  void operator()(int m0, int mr, double* a) const;
};

// The definition on rows filled by `fill` (the scalar path).
template <typename Fill>
void fconv_ref_rows(const Fill& fill, int M, int K, int N, const float* wt, const float* bias, float* y) {
  std::vector<double> a(static_cast<size_t>(K));
  for (int m = 0; m < M; ++m) {
    fill(m, 1, a.data());
    for (int j = 0; j < N; ++j) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += a[size_t(k)] * double(wt[size_t(k) * N + j]);
      y[size_t(m) * N + j] = float(bias ? s + double(bias[j]) : s);
    }
  }
}

#if BS_DEPLOY_X86
#define BS_AVX2 __attribute__((target("avx2,fma")))

// Rows [0, MR) x columns [j0, j0 + 8) from `a` (MR x K doubles), weights w[k * ws + (0..7)]:
// 2 * MR accumulators of 4 doubles.
// Each lane adds its products in increasing k, as the reference does, with one fused
// multiply-add per product: the weights are floats widened to double (float_conv.h), so each
// product of two floats is exact in double and fma(a, w, c) rounds exactly as c + a * w does.
// The accumulators are named variables (with arrays GCC 12 stores all of them to the stack on
// every k: 2x slower).
BS_AVX2 inline __m256d load4(const double* w) { return _mm256_loadu_pd(w); }
BS_AVX2 inline __m256d load4(const float* w) { return _mm256_cvtps_pd(_mm_loadu_ps(w)); }

template <int MR, typename W>
BS_AVX2 void block_avx2(const double* a, int K, int N, const W* w, int ws, int j0, const float* bias, float* y) {
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
    const __m256d w0 = load4(w), w1 = load4(w + 4);
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
BS_AVX512 inline __m512d load8(const double* w) { return _mm512_loadu_pd(w); }
BS_AVX512 inline __m512d load8(const float* w) { return _mm512_cvtps_pd(_mm256_loadu_ps(w)); }

// The AVX-512 form of block_avx2: rows [0, MR) x columns [j0, j0 + 16), weights
// w[k * ws + (0..15)], 2 * MR accumulators of 8 doubles, the same per-lane order. Per k it issues
// half the instructions of the AVX2 block for the same multiplies, and its 32 registers hold 8
// rows. The row's value enters each FMA as an embedded broadcast ({1to8} memory operand), which
// GCC does not emit for a value used twice: a separate vbroadcastsd per row measured 22.4-22.9
// against 23.3-24.2 GMAC/s on the stem shape (sequential runs of a scratch program).
template <int MR, typename W>
BS_AVX512 void block_avx512(const double* a, int K, int N, const W* w, int ws, int j0, const float* bias, float* y) {
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
    const __m512d w0 = load8(w), w1 = load8(w + 8);
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

// Rows [0, MR) x columns [j0, j0 + 32): 4 * MR accumulators of 8 doubles (24 of the 32 registers
// at MR = 6), the same per-lane order. Per k it loads 4 weight vectors and broadcasts each row's
// value once into a register for its 4 multiply-adds: 10 loads per 24 multiply-adds, against 18 per
// 16 in block_avx512 (whose multiply-adds each take the row's value as a memory operand). On the
// stem's shape (bench_qgemm FpStem, Zen 5): 30 GMAC/s with 16-column blocks.
template <int MR, typename W>
BS_AVX512 void block32_avx512(const double* a, int K, int N, const W* w, int ws, int j0, const float* bias,
                              float* y) {
  static_assert(MR >= 1 && MR <= 6, "block rows");
  const __m512d z = _mm512_setzero_pd();
  __m512d c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z, c20 = z, c21 = z, c22 = z, c23 = z,
          c30 = z, c31 = z, c32 = z, c33 = z, c40 = z, c41 = z, c42 = z, c43 = z, c50 = z, c51 = z, c52 = z, c53 = z;
  const double *a0 = a, *a1 = a + std::min(1, MR - 1) * size_t(K), *a2 = a + std::min(2, MR - 1) * size_t(K),
               *a3 = a + std::min(3, MR - 1) * size_t(K), *a4 = a + std::min(4, MR - 1) * size_t(K),
               *a5 = a + std::min(5, MR - 1) * size_t(K);
#define BS_ROW(r)                                   \
  if constexpr (MR > r) {                           \
    const __m512d av = _mm512_set1_pd(a##r[k]);     \
    c##r##0 = _mm512_fmadd_pd(av, w0, c##r##0);     \
    c##r##1 = _mm512_fmadd_pd(av, w1, c##r##1);     \
    c##r##2 = _mm512_fmadd_pd(av, w2, c##r##2);     \
    c##r##3 = _mm512_fmadd_pd(av, w3, c##r##3);     \
  }
  for (int k = 0; k < K; ++k, w += ws) {
    const __m512d w0 = load8(w), w1 = load8(w + 8), w2 = load8(w + 16), w3 = load8(w + 24);
    BS_ROW(0) BS_ROW(1) BS_ROW(2) BS_ROW(3) BS_ROW(4) BS_ROW(5)
  }
#undef BS_ROW
  const __m512d acc[24] = {c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23,
                           c30, c31, c32, c33, c40, c41, c42, c43, c50, c51, c52, c53};
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 4; ++q) {
      __m512d v = acc[4 * r + q];
      if (bias) v = _mm512_add_pd(v, _mm512_cvtps_pd(_mm256_loadu_ps(bias + j0 + 8 * q)));
      _mm256_storeu_ps(y + size_t(r) * N + j0 + 8 * q, _mm512_cvtpd_ps(v));
    }
}

// The weights of a block as the layer's floats (K x N, row stride N; each load widened) or as
// a per-call copy in double panels (row stride = the block's width).
template <typename W>
using BlockFn = void (*)(const double*, int, int, const W*, int, int, const float*, float*);
template <typename W>
constexpr BlockFn<W> kBlocks[7] = {nullptr,          block_avx2<1, W>, block_avx2<2, W>, block_avx2<3, W>,
                                   block_avx2<4, W>, block_avx2<5, W>, block_avx2<6, W>};
template <typename W>
constexpr BlockFn<W> kBlocks32[7] = {nullptr,             block32_avx512<1, W>, block32_avx512<2, W>,
                                     block32_avx512<3, W>, block32_avx512<4, W>, block32_avx512<5, W>,
                                     block32_avx512<6, W>};
template <typename W>
constexpr BlockFn<W> kBlocks512[9] = {nullptr,           block_avx512<1, W>, block_avx512<2, W>,
                                      block_avx512<3, W>, block_avx512<4, W>, block_avx512<5, W>,
                                      block_avx512<6, W>, block_avx512<7, W>, block_avx512<8, W>};

BS_AVX2 inline void widen_avx2(const float* A, size_t n, double* a) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) _mm256_storeu_pd(a + i, _mm256_cvtps_pd(_mm_loadu_ps(A + i)));
  for (; i < n; ++i) a[i] = double(A[i]);
}

// Columns [n32, N) of rows a (mr x K, widened): 16-column AVX-512 blocks (from `panels` when
// given), 8-column AVX2 blocks, then the reference's order.
void fconv_narrow_columns(const double* a, int mr, int K, int N, const float* wt, int n32, int n16, int n8,
                          const double* panels, const float* bias, float* ym) {
  for (int j0 = n32; j0 < n16; j0 += 16) {
    if (panels) kBlocks512<double>[mr](a, K, N, panels + size_t(j0) * K, 16, j0, bias, ym);
    else kBlocks512<float>[mr](a, K, N, wt + j0, N, j0, bias, ym);
  }
  for (int j0 = n16; j0 < n8; j0 += 8) {  // 6-row AVX2 blocks
    for (int r0 = 0; r0 < mr; r0 += 6)
      kBlocks<float>[std::min(6, mr - r0)](a + size_t(r0) * K, K, N, wt + j0, N, j0, bias, ym + size_t(r0) * N);
  }
  for (int r = 0; r < mr; ++r)  // the last N % 8 columns, in the reference's order
    for (int j = n8; j < N; ++j) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += a[size_t(r) * K + k] * double(wt[size_t(k) * N + j]);
      ym[size_t(r) * N + j] = float(bias ? s + double(bias[j]) : s);
    }
}

// Few rows (the classifier of a small batch: there the weights are the bytes that stream from
// memory): all N sums of each row kept in a double buffer in L1, the weights read once, row by
// row in memory order (a sequential stream; the column blocks below read them N floats apart, at a
// third of this core's read bandwidth for ResNet-50's 2048 x 1000 classifier). Each sum still
// takes its products in increasing k, one fused multiply-add each (exact products).
BS_AVX512 void fconv_few_rows_avx512(const double* a, int M, int K, int N, const float* wt, const float* bias,
                                     float* y, double* acc) {
  const int n8 = N / 8 * 8;
  std::fill(acc, acc + size_t(M) * N, 0.0);
  for (int k = 0; k < K; ++k) {
    const float* wk = wt + size_t(k) * N;
    for (int m = 0; m < M; ++m) {
      const __m512d av = _mm512_set1_pd(a[size_t(m) * K + k]);
      double* am = acc + size_t(m) * N;
      for (int j = 0; j < n8; j += 8)
        _mm512_storeu_pd(am + j, _mm512_fmadd_pd(av, load8(wk + j), _mm512_loadu_pd(am + j)));
      for (int j = n8; j < N; ++j) am[j] = std::fma(a[size_t(m) * K + k], double(wk[j]), am[j]);
    }
  }
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < N; ++j) {
      const double v = acc[size_t(m) * N + j];
      y[size_t(m) * N + j] = float(bias ? v + double(bias[j]) : v);
    }
}

// Row blocks of `mr_max` rows, each filled (widened to double) once for all its column blocks:
// the widest column blocks first (with AVX-512 32 columns in 6-row blocks, then 16 in 8-row
// blocks where N has no 32-column block; then 8), the last N % 8 columns in the reference's
// order. With AVX-512 and enough rows to pay for it, the AVX-512 blocks read their weights from a
// copy made per call, widened to double, in panel order (each block of columns [j0, j0 + width)
// as [K][width] at offset j0 * K: each k's weights in one run, a sequential stream); otherwise
// (few rows: the classifier of a small batch, where the weights are the bytes that stream from
// memory) straight from the layer's floats.
template <bool kWide, typename Fill>
void fconv_blocks(const Fill& fill, int M, int K, int N, const float* wt, const float* bias, float* y) {
  const int n32 = kWide ? N / 32 * 32 : 0, n16 = kWide ? N / 16 * 16 : 0, n8 = N / 8 * 8;
  const int mr_max = !kWide ? 6 : n32 > 0 ? 6 : 8;
  const bool use_panels = kWide && M >= 4 * mr_max && n16 > 0;
  if (kWide && !use_panels && N >= 32) {
    std::vector<double> rows(size_t(M) * K), acc(size_t(M) * N);
    fill(0, M, rows.data());
    fconv_few_rows_avx512(rows.data(), M, K, N, wt, bias, y, acc.data());
    return;
  }
  std::vector<double> a(size_t(mr_max) * K);  // rows m0 .. m0 + mr, widened once for all column blocks
  std::vector<double> panels;
  if (use_panels) {
    panels.resize(size_t(n16) * K);
    for (int j0 = 0; j0 < n16;) {
      const int width = j0 < n32 ? 32 : 16;
      for (int k = 0; k < K; ++k)
        for (int q = 0; q < width; ++q)
          panels[size_t(j0) * K + size_t(k) * width + size_t(q)] = double(wt[size_t(k) * N + j0 + q]);
      j0 += width;
    }
  }
  for (int m0 = 0; m0 < M; m0 += mr_max) {
    const int mr = std::min(mr_max, M - m0);
    fill(m0, mr, a.data());
    float* ym = y + size_t(m0) * N;
    for (int j0 = 0; j0 < n32; j0 += 32) {
      if (use_panels) kBlocks32<double>[mr](a.data(), K, N, panels.data() + size_t(j0) * K, 32, j0, bias, ym);
      else kBlocks32<float>[mr](a.data(), K, N, wt + j0, N, j0, bias, ym);
    }
    fconv_narrow_columns(a.data(), mr, K, N, wt, n32, n16, n8, use_panels ? panels.data() : nullptr, bias, ym);
  }
}
#endif

void widen(const float* src, size_t n, double* a) {
#if BS_DEPLOY_X86
  if (cpu::features().avx2) {
    widen_avx2(src, n, a);
    return;
  }
#endif
  for (size_t i = 0; i < n; ++i) a[i] = double(src[i]);
}

void DenseRows::operator()(int m0, int mr, double* a) const { widen(A + size_t(m0) * K, size_t(mr) * K, a); }

// Output pixel m as (b, oy, ox), stepped pixel by pixel (three integer divisions per row cost
// more than the multiply-adds of a 3x3 conv on one channel).
struct OutPixel {
  int ho, wo, b, oy, ox;
  OutPixel(int m, int ho_, int wo_) : ho(ho_), wo(wo_), b(m / (ho_ * wo_)), oy(m / wo_ % ho_), ox(m % wo_) {}
  void next() {
    if (++ox == wo) {
      ox = 0;
      if (++oy == ho) oy = 0, ++b;
    }
  }
};

// The rows of ConvRows; Widen(src, n, dst) widens n floats.
template <typename Widen>
inline void conv_rows(const ConvRows& cr, int m0, int mr, double* a, const Widen& widen_fn) {
  const FconvInput& in = cr.in;
  const int k = in.kernel, c = in.c;
  OutPixel px(m0, cr.ho, cr.wo);
  for (int r = 0; r < mr; ++r, px.next()) {
    const int b = px.b, iy0 = px.oy * in.stride - in.padding, ix0 = px.ox * in.stride - in.padding;
    const bool x_inside = ix0 >= 0 && ix0 + k <= in.w;
    for (int ky = 0; ky < k; ++ky) {
      const int iy = iy0 + ky;
      if (iy < 0 || iy >= in.h) {
        std::fill(a, a + size_t(k) * c, 0.0);
        a += size_t(k) * c;
        continue;
      }
      const float* row = in.x + (size_t(b) * in.h + iy) * in.w * size_t(c);
      if (x_inside) {  // the kernel row's k pixels are contiguous in NHWC
        widen_fn(row + size_t(ix0) * c, size_t(k) * c, a);
        a += size_t(k) * c;
        continue;
      }
      for (int kx = 0; kx < k; ++kx, a += c) {
        const int ix = ix0 + kx;
        if (ix < 0 || ix >= in.w) std::fill(a, a + c, 0.0);
        else widen_fn(row + size_t(ix) * c, size_t(c), a);
      }
    }
  }
}

#if BS_DEPLOY_X86
// With AVX2 the widening inlined (a call per kernel row cost as much as the multiply-adds of
// MobileNetV2's 3x3 stem, K = 27).
struct WidenAvx2 {
  BS_AVX2 void operator()(const float* src, size_t n, double* dst) const { widen_avx2(src, n, dst); }
};
BS_AVX2 __attribute__((flatten)) void conv_rows_avx2(const ConvRows& cr, int m0, int mr, double* a) {
  conv_rows(cr, m0, mr, a, WidenAvx2());
}
#endif

void ConvRows::operator()(int m0, int mr, double* a) const {
#if BS_DEPLOY_X86
  if (cpu::features().avx2) {
    conv_rows_avx2(*this, m0, mr, a);
    return;
  }
#endif
  conv_rows(*this, m0, mr, a, [](const float* src, size_t n, double* dst) {
    for (size_t i = 0; i < n; ++i) dst[i] = double(src[i]);
  });
}

template <typename Fill>
void fconv_dispatch(const Fill& fill, int M, int K, int N, const float* wt, const float* bias, float* y,
                    QgemmIsa isa) {
  if (M <= 0 || N <= 0) return;
#if BS_DEPLOY_X86
  if (isa == QgemmIsa::kAuto) isa = qgemm_auto_isa(/*packed=*/false);
  // AVX-512 blocks where the CPU has them and `isa` allows (kAuto / kAvx512Vnni), else AVX2.
  if (isa != QgemmIsa::kScalar && isa != QgemmIsa::kAvx2 && cpu::features().avx512f) {
    fconv_blocks<true>(fill, M, K, N, wt, bias, y);
    return;
  }
  if (isa != QgemmIsa::kScalar && cpu::features().avx2 && cpu::features().fma) {
    fconv_blocks<false>(fill, M, K, N, wt, bias, y);
    return;
  }
#endif
  (void)isa;
  fconv_ref_rows(fill, M, K, N, wt, bias, y);
}

}  // namespace

void fconv_rows(const float* A, int M, int K, int N, const float* wt, const float* bias, float* y, QgemmIsa isa) {
  fconv_dispatch(DenseRows{A, K}, M, K, N, wt, bias, y, isa);
}

void fconv_conv(const FconvInput& in, int m0, int m1, int N, const float* wt, const float* bias, float* y,
                QgemmIsa isa) {
  const int ho = (in.h + 2 * in.padding - in.kernel) / in.stride + 1;
  const int wo = (in.w + 2 * in.padding - in.kernel) / in.stride + 1;
  const int K = in.kernel * in.kernel * in.c;
  if (m1 <= m0) return;
  // Short kernel rows (k * C <= 16 values: ResNet-20's 3x3 stem on one channel) of small images:
  // the images these rows touch widened once into a zero-padded double copy, each row then k
  // runs of k * C values copied from it (built from the floats, with the bounds checks of every
  // kernel row, a row cost more than its multiply-adds). The same rows, so the same sums.
  const int hp = in.h + 2 * in.padding, wp = in.w + 2 * in.padding, b0 = m0 / (ho * wo), b1 = (m1 - 1) / (ho * wo) + 1;
  const size_t padded = size_t(b1 - b0) * hp * wp * in.c;
  if (in.kernel * in.c <= 16 && padded * sizeof(double) <= (256u << 10)) {
    thread_local std::vector<double> pad;
    pad.assign(padded, 0.0);
    const size_t row = size_t(in.w) * in.c;
    for (int b = b0; b < b1; ++b)
      for (int iy = 0; iy < in.h; ++iy)
        widen(in.x + (size_t(b) * in.h + iy) * row, row,
              pad.data() + ((size_t(b - b0) * hp + iy + in.padding) * wp + in.padding) * in.c);
    const size_t kc = size_t(in.kernel) * in.c, prow = size_t(wp) * in.c;
    const double* p = pad.data();
    const auto fill = [&](int r0, int mr, double* a) {
      OutPixel px(m0 + r0, ho, wo);
      for (int r = 0; r < mr; ++r, px.next()) {
        const double* src =
            p + ((size_t(px.b - b0) * hp + size_t(px.oy) * in.stride) * wp + size_t(px.ox) * in.stride) * in.c;
        for (int ky = 0; ky < in.kernel; ++ky, a += kc)
          for (size_t i = 0; i < kc; ++i) a[i] = src[ky * prow + i];
      }
    };
    fconv_dispatch(fill, m1 - m0, K, N, wt, bias, y + size_t(m0) * N, isa);
    return;
  }
  const ConvRows rows{in, ho, wo};
  // Row m of this call is output pixel m0 + m.
  const auto fill = [&](int r0, int mr, double* a) { rows(m0 + r0, mr, a); };
  fconv_dispatch(fill, m1 - m0, K, N, wt, bias, y + size_t(m0) * N, isa);
}

}  // namespace bitswitch::deploy
