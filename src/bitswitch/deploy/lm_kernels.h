// Integer linear layers of the language-model decoder (SPEC.md Sec. 9; paper Sec. 3.1 and 4.3:
// W{l}A8, the l-bit weights derived from the stored INT8 codes by Double Rounding, inputs
// quantized to 8 bits per token). Torch-free: the decoder in the deployment library uses it.
//
// Operands. Activations: M tokens of K signed 8-bit codes q[m][k] in [-127, 127] with one scale
// a[m] per token (quant::per_token_scale / per_token_code). Weights: N output rows of K signed
// l-bit codes c[n][k] (l in 2..8) with one scale per group of G consecutive input elements,
// s[n][g], g = k / G (G = K: one scale per output row, "per channel").
//
// The result, THE definition every path reproduces bit for bit:
//   acc[m][n][g] = sum_{k in group g} q[m][k] * c[n][k]           exact int32
//   y[m][n]      = a[m] * (sum over g = 0, 1, ... in increasing order, in float, of
//                          float(acc[m][n][g]) * s[n][g])
// (float products and sums, rounded to nearest; no fused multiply-add: -ffp-contract=off).
// int32 cannot overflow: |acc| <= K * 127 * 128 < 2^31 for K <= kLmMaxK.
//
// LmLinear holds one layer's weights in the layout its kernel reads (chosen when it is built).
// Low-bit weights stay packed in memory and are unpacked in registers inside the kernel, so the
// bytes read per token fall with the width. Paths (QgemmIsa) are chosen at run time: scalar (the
// reference loops), AVX2, AVX-512 VNNI; kAuto picks the best this CPU runs (capped by
// BITSWITCH_QGEMM_ISA, as for the CNN GEMMs).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "bitswitch/deploy/qgemm.h"

namespace bitswitch::deploy {

constexpr int kLmMaxK = 131071;  // K * 127 * 128 < 2^31

// Per-token 8-bit quantization of M rows of K floats (quant::per_token_scale / per_token_code):
// q row-major M x K, a [M].
void lm_quantize_tokens(int M, int K, const float* x, int8_t* q, float* a);

// The scalar reference of the definition above. codes: N x K int8 (l-bit values), scales:
// N x (K / G). group: G, a divisor of K (0 means K).
void lm_linear_ref(int M, int N, int K, int group, const int8_t* q, const float* a, const int8_t* codes,
                   const float* scales, float* y);

class LmLinear {
 public:
  LmLinear();
  ~LmLinear();
  LmLinear(LmLinear&&) noexcept;
  LmLinear& operator=(LmLinear&&) noexcept;

  // From unpacked codes (N x K int8, each in the `bits`-bit range, else an Error naming the row
  // and value) or from rows packed as deploy::pack_rows(codes, N, K, bits) writes them.
  static LmLinear from_codes(int N, int K, int bits, int group, const int8_t* codes, const float* scales,
                             QgemmIsa isa = QgemmIsa::kAuto);
  static LmLinear from_packed(int N, int K, int bits, int group, const uint8_t* packed_rows, size_t packed_size,
                              const float* scales, QgemmIsa isa = QgemmIsa::kAuto);

  // y (M x N, row-major) from quantized tokens q (M x K) and their scales a [M]. Multi-threaded
  // over output rows with `threads` (0: all cores; 1: the calling thread only).
  void forward(int M, const int8_t* q, const float* a, float* y, int threads = 1) const;

  int rows() const;
  int cols() const;
  int bits() const;
  int group() const;
  QgemmIsa isa() const;
  size_t weight_bytes() const;  // resident bytes of codes and scales

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bitswitch::deploy
