// Full-precision conv/linear rows of the integer runtime: the layers a network keeps in floating
// point (ImageNet stems, e.g. ResNet's 7x7 stride-2 conv on the image; FP classifiers), as a GEMM
// over im2col rows (paper Sec. 4.1: the first and last layers may stay at full precision).
//
// THE definition every path reproduces bit for bit, for rows m < M and columns j < N:
//   y[m][j] = float(s + double(bias[j]))   (float(s) without bias), where
//   s = (...((0 + double(A[m][0]) * wt[0][j]) + double(A[m][1]) * wt[1][j]) + ...) in double,
// k in increasing order, each product and each sum rounded to double (no fused multiply-add:
// -ffp-contract=off). Double accumulation keeps the result within a float rounding of the exact
// sum, so it matches the training side's float convolution except within rounding of a code
// boundary of the next quantizer.
#pragma once
#include "bitswitch/deploy/qgemm.h"

namespace bitswitch::deploy {

// A: M x K floats (row-major), wt: K x N doubles, each a float widened to double (the layer's
// float weights; then every product double(A) * wt is exact, which lets the SIMD paths use fused
// multiply-adds with the definition's rounding), bias: N floats or nullptr, y: M x N floats.
void fconv_rows_ref(const float* A, int M, int K, int N, const double* wt, const float* bias, float* y);

// The same result: AVX-512 (8 rows x 16 columns in registers) where the CPU has it and `isa` is
// kAuto or kAvx512Vnni, else AVX2 + FMA (6 rows x 8 columns) unless `isa` is kScalar (kAuto
// follows BITSWITCH_QGEMM_ISA like the integer GEMMs), else the reference.
void fconv_rows(const float* A, int M, int K, int N, const double* wt, const float* bias, float* y,
                QgemmIsa isa = QgemmIsa::kAuto);

}  // namespace bitswitch::deploy
