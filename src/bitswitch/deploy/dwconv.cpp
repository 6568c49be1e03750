// Depthwise integer convolution and the signed-input correction (see dwconv.h).
#include "bitswitch/deploy/dwconv.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "bitswitch/deploy/x86_simd.h"

namespace bitswitch::deploy {

void dwconv_u8s8_s32_ref(int n, int h, int w, int C, int k, int stride, int pad, uint8_t pad_value, const uint8_t* x,
                         const int8_t* wt, int32_t* out) {
  const int ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
  for (int b = 0; b < n; ++b)
    for (int oy = 0; oy < ho; ++oy)
      for (int ox = 0; ox < wo; ++ox)
        for (int c = 0; c < C; ++c) {
          int32_t acc = 0;
          for (int ky = 0; ky < k; ++ky)
            for (int kx = 0; kx < k; ++kx) {
              const int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
              const bool inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
              const int32_t v = inside ? x[((size_t(b) * h + iy) * w + ix) * C + c] : pad_value;
              acc += v * wt[size_t(ky * k + kx) * C + c];
            }
          out[((size_t(b) * ho + oy) * wo + ox) * C + c] = acc;
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define BS_DW_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define BS_DW_CLONES
#endif

namespace {
// acc[c] += x[c] * w[c] over C channels: int16 products (|u8 * s8| < 2^15) widened to int32;
// the channel loop vectorises (16 or 32 lanes per instruction with AVX2 / AVX-512).
BS_DW_CLONES
void tap(int32_t* __restrict acc, const uint8_t* __restrict x, const int8_t* __restrict w, int C) {
#pragma omp simd
  for (int c = 0; c < C; ++c) acc[c] += int32_t(int16_t(x[c]) * int16_t(w[c]));
}
BS_DW_CLONES
void tap_const(int32_t* __restrict acc, int32_t v, const int8_t* __restrict w, int C) {
#pragma omp simd
  for (int c = 0; c < C; ++c) acc[c] += v * int32_t(w[c]);
}
}  // namespace

#if BS_DEPLOY_X86
// AVX-512: per output pixel and 16 channels, the k*k taps accumulate in registers and the 16
// sums are stored once (the channel-loop clones above load and store every accumulator once per
// tap and call a function per tap). Each product is one vpdpwssd: the u8 code zero-extended to
// int32 is the int16 pair (x, 0), the s8 weight sign-extended is (w, -1 or 0), so the pair's dot
// product is exactly x * w. Measured against the clones on MobileNetV2 at 8 bits, 1 thread,
// alternating in one process: batch 16 best 101.7 vs 114.2 ms, batch 1 6.65 vs 7.14 ms.
BS_TARGET_VNNI void dwconv_avx512(int h, int w, int C, int k, int stride, int pad, uint8_t pad_value, const uint8_t* x,
                                  const int8_t* wt, int32_t* out, int row0, int row1) {
  const int ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
  const __m512i padv = _mm512_set1_epi32(pad_value);
  for (int r = row0; r < row1; ++r) {
    const int b = r / ho, oy = r % ho;
    for (int ox = 0; ox < wo; ++ox) {
      int32_t* dst = out + ((size_t(b) * ho + oy) * wo + ox) * C;
      // 64 channels per pass: four independent accumulator chains (vpdpwssd has a latency of
      // several cycles; one chain per 16 channels left the kernel waiting on it).
      for (int c0 = 0; c0 < C; c0 += 64) {
        auto mask = [&](int c) {
          return c >= C ? __mmask16(0) : C - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (C - c)) - 1);
        };
        const __mmask16 m0 = mask(c0), m1 = mask(c0 + 16), m2 = mask(c0 + 32), m3 = mask(c0 + 48);
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
        for (int ky = 0; ky < k; ++ky) {
          const int iy = oy * stride - pad + ky;
          for (int kx = 0; kx < k; ++kx) {
            const int ix = ox * stride - pad + kx;
            const int8_t* wk = wt + size_t(ky * k + kx) * C + c0;
            const __m512i w0 = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m0, wk)),
                          w1 = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m1, wk + 16)),
                          w2 = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m2, wk + 32)),
                          w3 = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m3, wk + 48));
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) {
              if (pad_value) {
                a0 = _mm512_dpwssd_epi32(a0, padv, w0);
                a1 = _mm512_dpwssd_epi32(a1, padv, w1);
                a2 = _mm512_dpwssd_epi32(a2, padv, w2);
                a3 = _mm512_dpwssd_epi32(a3, padv, w3);
              }
            } else {
              const uint8_t* xp = x + ((size_t(b) * h + iy) * w + ix) * C + c0;
              a0 = _mm512_dpwssd_epi32(a0, _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m0, xp)), w0);
              a1 = _mm512_dpwssd_epi32(a1, _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m1, xp + 16)), w1);
              a2 = _mm512_dpwssd_epi32(a2, _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m2, xp + 32)), w2);
              a3 = _mm512_dpwssd_epi32(a3, _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m3, xp + 48)), w3);
            }
          }
        }
        _mm512_mask_storeu_epi32(dst + c0, m0, a0);
        _mm512_mask_storeu_epi32(dst + c0 + 16, m1, a1);
        _mm512_mask_storeu_epi32(dst + c0 + 32, m2, a2);
        _mm512_mask_storeu_epi32(dst + c0 + 48, m3, a3);
      }
    }
  }
}
#endif

void dwconv_u8s8_s32(int n, int h, int w, int C, int k, int stride, int pad, uint8_t pad_value, const uint8_t* x,
                     const int8_t* wt, int32_t* out, int row0, int row1) {
  const int ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
  (void)n;
#if BS_DEPLOY_X86
  if (cpu::avx512_vnni()) {
    dwconv_avx512(h, w, C, k, stride, pad, pad_value, x, wt, out, row0, row1);
    return;
  }
#endif
  for (int r = row0; r < row1; ++r) {
    const int b = r / ho, oy = r % ho;
    for (int ox = 0; ox < wo; ++ox) {
      int32_t* acc = out + ((size_t(b) * ho + oy) * wo + ox) * C;
      std::memset(acc, 0, sizeof(int32_t) * size_t(C));
      for (int ky = 0; ky < k; ++ky) {
        const int iy = oy * stride - pad + ky;
        for (int kx = 0; kx < k; ++kx) {
          const int ix = ox * stride - pad + kx;
          const int8_t* wk = wt + size_t(ky * k + kx) * C;
          if (iy < 0 || iy >= h || ix < 0 || ix >= w) {
            if (pad_value) tap_const(acc, pad_value, wk, C);
          } else {
            tap(acc, x + ((size_t(b) * h + iy) * w + ix) * C, wk, C);
          }
        }
      }
    }
  }
}

void signed_input_correction(const int8_t* B, int N, int K, int32_t* corr) {
  for (int j = 0; j < N; ++j) {
    int32_t s = 0;
    for (int k = 0; k < K; ++k) s += B[size_t(j) * K + k];
    corr[j] = -128 * s;
  }
}

}  // namespace bitswitch::deploy
