// Full-precision conv/linear rows of the integer runtime: the layers a network keeps in floating
// point (ImageNet stems, e.g. ResNet's 7x7 stride-2 conv on the image; FP classifiers), as a GEMM
// over im2col rows (paper Sec. 4.1: the first and last layers may stay at full precision).
//
// THE definition every path reproduces bit for bit, for rows m < M and columns j < N:
//   y[m][j] = float(s + double(bias[j]))   (float(s) without bias), where
//   s = (...((0 + double(A[m][0]) * double(wt[0][j])) + double(A[m][1]) * double(wt[1][j])) + ...)
// in double, k in increasing order, each product and each sum rounded to double. The product of
// two floats is exact in double, so the SIMD paths' fused multiply-adds round exactly as an add
// after the multiply does. Double accumulation keeps the result within a float rounding of the
// exact sum, so it matches the training side's float convolution except within rounding of a
// code boundary of the next quantizer.
#pragma once
#include "bitswitch/deploy/qgemm.h"

namespace bitswitch::deploy {

// A: M x K floats (row-major), wt: K x N floats (the layer's weights, transposed), bias: N floats
// or nullptr, y: M x N floats.
void fconv_rows_ref(const float* A, int M, int K, int N, const float* wt, const float* bias, float* y);

// The same result: AVX-512 (6 rows x 32 columns, or 8 x 16, in registers) where the CPU has it
// and `isa` is kAuto or kAvx512Vnni, else AVX2 + FMA (6 rows x 8 columns) unless `isa` is kScalar
// (kAuto follows BITSWITCH_QGEMM_ISA like the integer GEMMs), else the reference.
void fconv_rows(const float* A, int M, int K, int N, const float* wt, const float* bias, float* y,
                QgemmIsa isa = QgemmIsa::kAuto);

// A convolution's NHWC float input [n, h, w, c] and its geometry (square kernel, zero padding).
struct FconvInput {
  const float* x = nullptr;
  int n = 0, h = 0, w = 0, c = 0, kernel = 1, stride = 1, padding = 0;
};

// Output pixels [m0, m1) of the convolution (pixel m = (b * ho + oy) * wo + ox; y is the whole
// n*ho*wo x N output, rows m0..m1 written): bit for bit fconv_rows on its im2col rows (each row
// kernel x kernel x c values in (ky, kx, channel) order, 0 outside the image), each block of rows
// built from the input into a small double buffer instead of written out as a K-wide float matrix.
void fconv_conv(const FconvInput& in, int m0, int m1, int N, const float* wt, const float* bias, float* y,
                QgemmIsa isa = QgemmIsa::kAuto);

}  // namespace bitswitch::deploy
