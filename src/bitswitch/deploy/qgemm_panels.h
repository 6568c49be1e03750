// Integer GEMM for convolutions with few output channels (the shape of small CNN layers:
// N = 16..512 output channels, K = kh*kw*C_in <= a few thousand, M = many output pixels),
// C[m][n] = sum_k A[m][k] * B[n][k], u8 x s8 -> s32, exact.
//
// The weights are re-arranged once into "VNNI panels": 16 output channels x 4 consecutive k per
// 64-byte vector, [ceil(N/16)][K/4][16][4]. The AVX-512 VNNI kernel keeps an MR x NB block of
// accumulators (MR output pixels x NB*16 channels), and for every 4 k broadcasts one 32-bit
// group of each A row and multiplies it with NB panel vectors (vpdpbusd): no horizontal
// reductions, and each accumulator row is 16 channels of one output pixel, ready for a
// per-channel epilogue. Low-bit weights stay packed in panel order and are unpacked inside the
// K loop (AVX-512 VBMI: one vpermb + vpmultishiftqb per 64 codes), so the weight bytes read fall
// with the width; without VBMI they are unpacked into panels once per GEMM call.
//
// Requires K % 4 == 0 (im2col rows of C_in % 4 == 0 channels); callers check
// qgemm_panels_usable() and otherwise use qgemm.h. The scalar reference is qgemm_u8s8_s32_ref.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace bitswitch::deploy {

// Whether this CPU runs the panel kernel and the shape fits it.
bool qgemm_panels_supported();
bool qgemm_panels_usable(int N, int K);

// Bytes of the panels of an N x K weight matrix.
size_t qgemm_panels_bytes(int N, int K);
// N x K int8 rows -> panels (out: qgemm_panels_bytes bytes; channels beyond N are zero).
void qgemm_panels_from_rows(const int8_t* B, int N, int K, int8_t* out);
// Packed `bits`-bit rows (packing.h layout, row r at r * ceil(K*bits/8)) -> panels.
void qgemm_panels_from_packed(const uint8_t* B_packed, int bits, int N, int K, int8_t* out);

// A without im2col: row m of A is `segs` segments of seg_q * 4 bytes, segment i starting at
// rows[m] + i * seg_stride. For a k x k convolution over a zero-padded NHWC input of C channels,
// rows[m] points at the top-left input pixel of output pixel m, segs = k, seg_q = k*C/4 and
// seg_stride = padded width * C; K = segs * seg_q * 4.
struct PanelRows {
  const uint8_t* const* rows;
  int segs;
  int seg_q;
  size_t seg_stride;
};
// `bits` 8: `panels` as qgemm_panels_from_rows makes them. bits < 8: "packed panels"
// (qgemm_pack_panels), unpacked 64 codes at a time inside the K loop (needs AVX-512 VBMI).
// Only the 16-channel panels [nb0, nb1) of C (all of them with nb1 = -1): the columns
// [16 * nb0, min(N, 16 * nb1)) of every row, C's row stride still N (threads splitting a layer
// by its channels; ceil(N / 16) panels).
void qgemm_u8_panels_rows_s32(int M, int N, const PanelRows& A, const int8_t* panels, int32_t* C, int bits = 8,
                              int nb0 = 0, int nb1 = -1);

// Packed panels: each 64-byte panel vector's codes packed to `bits` bits (8*bits bytes, the
// LSB-first stream of packing.h), in panel order, so the kernel unpacks a whole vector with one
// vpermb + vpmultishiftqb. The weights stay `bits` bits per code in memory.
bool qgemm_packed_panels_supported();
size_t qgemm_packed_panels_bytes(int N, int K, int bits);
void qgemm_pack_panels(const int8_t* panels, int N, int K, int bits, uint8_t* out);
// The inverse: packed panels -> int8 panels (64 codes per VBMI unpack; scalar without VBMI).
void qgemm_unpack_panels(const uint8_t* packed, int N, int K, int bits, int8_t* out);

// C (M x N, row stride N) = A (M x K, row stride lda >= K) x B^T, B given as panels.
void qgemm_u8_panels_s32(int M, int N, int K, const uint8_t* A, int lda, const int8_t* panels, int32_t* C);

}  // namespace bitswitch::deploy
