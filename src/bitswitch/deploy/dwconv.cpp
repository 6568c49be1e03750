// Depthwise integer convolution and the signed-input correction (see dwconv.h).
#include "bitswitch/deploy/dwconv.h"

#include <algorithm>
#include <cstring>
#include <vector>

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

void dwconv_u8s8_s32(int n, int h, int w, int C, int k, int stride, int pad, uint8_t pad_value, const uint8_t* x,
                     const int8_t* wt, int32_t* out, int row0, int row1) {
  const int ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
  (void)n;
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
