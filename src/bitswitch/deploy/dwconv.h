// Depthwise convolution in integers for the integer runtime (MobileNetV2's 3x3 depthwise convs,
// Sandler et al. 2018, Sec. 3.1): u8 activation codes x s8 weight codes, exact int32 sums.
//
// Layout: x is NHWC, n x h x w x C u8; wt is tap-major, k*k x C s8 (wt[(ky*k + kx)*C + c]);
// out is n x ho x wo x C int32 with ho = (h + 2 pad - k) / stride + 1. Pixels outside the image
// read `pad_value` (the code of 0: 0 for unsigned codes, 128 for offset signed codes).
// The optimised kernel runs output rows [row0, row1) of the n * ho rows (callers split rows
// over threads) and is bit-exact with the reference for every input.
#pragma once
#include <cstdint>

namespace bitswitch::deploy {

void dwconv_u8s8_s32_ref(int n, int h, int w, int C, int k, int stride, int pad, uint8_t pad_value, const uint8_t* x,
                         const int8_t* wt, int32_t* out);
void dwconv_u8s8_s32(int n, int h, int w, int C, int k, int stride, int pad, uint8_t pad_value, const uint8_t* x,
                     const int8_t* wt, int32_t* out, int row0, int row1);

// Exact GEMM of signed activation codes with the u8 x s8 kernels (qgemm.h): the codes are stored
// offset by +128 (u8 = code + 128), and sum_k (code + 128) w = sum_k code w + 128 sum_k w, so
// corr[n] = -128 * sum_k B[n][k] added to every output of row n gives the signed sum.
void signed_input_correction(const int8_t* B, int N, int K, int32_t* corr);

}  // namespace bitswitch::deploy
