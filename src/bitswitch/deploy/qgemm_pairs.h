// Integer GEMM for AVX2 CPUs without VNNI, in outer-product form: C[m][n] = sum_k A[m][k] B[n][k],
// u8 x s8 -> s32, exact (the paper's deployed l-bit model, Sec. 3.1, run in integers; SPEC.md Sec. 7).
//
// The weights are re-arranged once into "pair panels": for each group of 16 output channels and
// each pair of consecutive k, the 16 x 2 codes as 32 bytes, [ceil(N/16)][ceil(K/2)][16][2] (codes
// past N or K are 0). The kernel widens a 4-row block of A to int16 once per K block, then for
// every pair of k broadcasts each row's int16 pair and multiplies it with the 16 channels' pairs
// (vpmaddwd: two u8 x s8 products summed in int32, which cannot saturate), keeping 4 x 16 int32
// accumulators in registers: no horizontal reductions, and each accumulator row is 16 channels of
// one output, stored straight into C. The row-form kernels of qgemm.h (dot products over K rows)
// spend a reduction per 4 x 2 block and widen both operands on every step: per multiply the two
// forms do the same work, so the pair form wins where K is short (measured on AVX2, Zen: 2-5x at
// K = 16..128, even at K = 576, behind at K >= 768 where its K blocks cost more than the
// reductions it saves); the runtime picks the form per layer (runtime.cpp).
//
// The scalar reference is qgemm_u8s8_s32_ref on the rows the panels came from.
#pragma once
#include <cstddef>
#include <cstdint>

namespace bitswitch::deploy {

// Whether this CPU runs the AVX2 kernel (else qgemm_u8_pairs_s32 runs a portable loop over the
// same layout).
bool qgemm_pairs_supported();

// Bytes of the pair panels of an N x K weight matrix.
size_t qgemm_pairs_bytes(int N, int K);
// N x K int8 rows -> pair panels (out: qgemm_pairs_bytes bytes).
void qgemm_pairs_from_rows(const int8_t* B, int N, int K, int8_t* out);
// Packed `bits`-bit rows (packing.h's pack_rows layout) -> pair panels, without an N x K int8 copy.
void qgemm_pairs_from_packed(const uint8_t* packed, int bits, int N, int K, int8_t* out);

// C (M x N, row stride N) = A (M x K, row stride lda >= K) x B^T, B given as pair panels.
// `portable` forces the portable loop (tests).
void qgemm_u8_pairs_s32(int M, int N, int K, const uint8_t* A, size_t lda, const int8_t* pairs, int32_t* C,
                        bool portable = false);

}  // namespace bitswitch::deploy
