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

// The second rounding's offset: 2^(d-1) for half-up, 0 for floor and for d = 0.
BITSWITCH_HD constexpr int32_t second_round_offset(int d, SecondRounding mode) {
  return d > 0 && mode == SecondRounding::kHalfUp ? int32_t(1) << (d - 1) : 0;
}

// THE second rounding of an h-bit code to d >= 0 fewer bits (no clamp): (q + offset) >> d, an
// arithmetic shift on int32. This form, with the offset of second_round_offset precomputed, is
// what vector loops call; every other form (the float reference, the AVX-512 kernel) is tested
// against it on every int8 code and every d (tests/test_quant.cpp).
BITSWITCH_HD constexpr int32_t second_round(int32_t q_high, int d, int32_t offset) { return (q_high + offset) >> d; }

BITSWITCH_HD constexpr int32_t second_round(int32_t q_high, int d, SecondRounding mode) {
  return second_round(q_high, d, second_round_offset(d, mode));
}

// Clamp of a code to the signed `bits`-bit range.
BITSWITCH_HD constexpr int32_t clamp_signed(int32_t q, int bits) {
  return std::min(std::max(q, signed_qmin(bits)), signed_qmax(bits));
}

// The l-bit code derived from the h-bit code: second rounding then clamp to the l-bit range.
BITSWITCH_HD constexpr int32_t derive_code(int32_t q_high, int high_bits, int low_bits, SecondRounding mode) {
  return clamp_signed(second_round(q_high, high_bits - low_bits, mode), low_bits);
}

// LSQ's gradient scale (Esser et al. 2020, Sec. 2.2; SPEC Sec. 2): g = 1 / sqrt(N * Qp) for a
// scale shared by N elements with largest code Qp, times 2^extra_pow2 (the weight scale's exact
// derivative multiplies by 2^(h-l), exact_scale_grad). Every quantizer path uses this one.
inline double lsq_grad_scale(int64_t elements, int32_t qmax, int extra_pow2 = 0) {
  return 1.0 / std::sqrt(static_cast<double>(elements) * qmax) * std::ldexp(1.0, extra_pow2);
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

// Signed activation code (QuantOptions::signed_input, MobileNetV2's linear bottlenecks), as a
// float: clamp(x / a, -2^(b-1), 2^(b-1) - 1) rounded half to even, inv = 1 / a in float.
BITSWITCH_HD inline float signed_act_code(float x, float inv, float qmin, float qmax) {
  return round_half_even_small(std::min(std::max(x * inv, qmin), qmax));
}

// Per-token input quantizer of the language model's linear layers (SPEC Sec. 9;
// quant::fake_quant_per_token is its training form, tested against these): one dynamic scale per
// token, a = max(max_k |x_k|, 1e-30) / Qp in float (Qp = 2^(b-1) - 1), and the code
// clamp(x * inv, -Qp, Qp) rounded half to even, inv = 1 / a computed in float.
BITSWITCH_HD inline float per_token_scale(float max_abs, int bits) {
  return std::max(max_abs, 1e-30f) / float(signed_qmax(bits));
}
BITSWITCH_HD inline float per_token_code(float x, float inv, int bits) {
  const float qp = float(signed_qmax(bits));
  return round_half_even_small(std::min(std::max(x * inv, -qp), qp));
}

// First rounding of v_h = w / s to its h-bit code (clamp, then round half to even).
BITSWITCH_HD inline int32_t first_round(float vh, int high_bits) {
  const float v = std::min(std::max(vh, float(signed_qmin(high_bits))), float(signed_qmax(high_bits)));
  return static_cast<int32_t>(round_half_even_small(v));
}

// First rounding: float weight to its h-bit code, with inv_scale = 1 / s (computed in float).
inline int32_t weight_code(float w, float inv_scale, int high_bits) { return first_round(w * inv_scale, high_bits); }

}  // namespace bitswitch::quant
