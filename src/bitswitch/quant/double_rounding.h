// Double Rounding: the integer definition shared by training, export, switching and the runtime.
// Implements "Nearly Lossless Adaptive Bit Switching" (arXiv 2502.01199), Sec. 3.1 / SPEC.md Sec. 2:
//   q_h = clamp(round_half_even(W / s), -2^(h-1), 2^(h-1)-1)       (first rounding, once)
//   q_l = clamp((q_h + 2^(d-1)) >> d, -2^(l-1), 2^(l-1)-1), d = h-l  (second rounding, integers)
//   W_l = q_l * s * 2^d
// This header has no LibTorch dependency so that the integer runtime can include it.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

// BITSWITCH_HD: the scalar definitions below are also the device functions of the CUDA kernels
// (quant/cuda/kernels.cu, compiled by nvcc with --expt-relaxed-constexpr for std::min/max).
#if defined(__CUDACC__)
#define BITSWITCH_HD __host__ __device__
#else
#define BITSWITCH_HD
#endif

namespace bitswitch::quant {

// How q_h / 2^d is rounded to an integer. kHalfUp is the default: (q + 2^(d-1)) >> d.
// kFloor is the plain arithmetic shift q >> d (a worse quantizer, kept for ablation).
enum class SecondRounding : int { kHalfUp = 0, kFloor = 1 };

constexpr int kMinBits = 2;
constexpr int kMaxBits = 8;

BITSWITCH_HD constexpr int32_t signed_qmin(int bits) { return -(1 << (bits - 1)); }
BITSWITCH_HD constexpr int32_t signed_qmax(int bits) { return (1 << (bits - 1)) - 1; }
BITSWITCH_HD constexpr int32_t unsigned_qmax(int bits) { return (1 << bits) - 1; }

// Integer second rounding of an h-bit code to d fewer bits (no clamp).
BITSWITCH_HD inline int32_t second_round(int32_t q_high, int d, SecondRounding mode) {
  if (d <= 0) return q_high;
  if (mode == SecondRounding::kFloor) return q_high >> d;  // arithmetic shift on int32
  return (q_high + (1 << (d - 1))) >> d;
}

// The l-bit code derived from the h-bit code: second rounding then clamp to the l-bit range.
BITSWITCH_HD inline int32_t derive_code(int32_t q_high, int high_bits, int low_bits, SecondRounding mode) {
  const int32_t q = second_round(q_high, high_bits - low_bits, mode);
  return std::min(std::max(q, signed_qmin(low_bits)), signed_qmax(low_bits));
}

// Round half to even for |x| < 2^22 using the float magic number; exact and vectorisable.
// Callers clamp first (clamp and round commute because the bounds are integers).
BITSWITCH_HD inline float round_half_even_small(float x) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (x + kMagic) - kMagic;
}

// Unsigned activation code (SPEC Sec. 2), as a float: clamp(x / a, 0, 2^b - 1) rounded half to
// even, with inv = 1 / a computed in float. Training's quantizer and the integer runtime share it.
BITSWITCH_HD inline float act_code(float x, float inv, float qmax) {
  return round_half_even_small(std::min(std::max(x * inv, 0.0f), qmax));
}

// First rounding: float weight to its h-bit code, with inv_scale = 1 / s (computed in float).
BITSWITCH_HD inline int32_t weight_code(float w, float inv_scale, int high_bits) {
  const float v = std::min(std::max(w * inv_scale, float(signed_qmin(high_bits))),
                           float(signed_qmax(high_bits)));
  return static_cast<int32_t>(round_half_even_small(v));
}

}  // namespace bitswitch::quant
