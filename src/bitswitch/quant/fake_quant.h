// Fake-quantization autograd ops of Double Rounding (SPEC.md Sec. 2; paper Sec. 3.1).
// Two implementations with identical forward results: a fused CPU kernel (one pass forward,
// one pass backward) and the plain composed-ATen reference that tests compare against.
#pragma once
#include <torch/types.h>

#include <cstdint>

#include "bitswitch/quant/double_rounding.h"

namespace bitswitch::quant {

enum class Impl : int {
  kAuto = 0,       // fused kernel for float32 CPU (or, built with BITSWITCH_CUDA, CUDA) tensors,
                   // reference otherwise
  kFused = 1,      // fused kernel, CPU or CUDA (errors on unsupported tensors)
  kReference = 2,  // composed ATen ops
};

// Weight quantizer: signed, symmetric, per output channel (dim 0), one shared scale `s`
// stored for the highest width `high_bits`; the l-bit weight is derived by the second rounding.
struct WeightQuantSpec {
  int high_bits = 8;
  int bits = 8;
  SecondRounding rounding = SecondRounding::kHalfUp;
  // Multiply the scale gradient by 2^(h-l), the exact derivative of s * 2^(h-l).
  // Off by default like the reference code (SPEC Sec. 2, "Gradients").
  bool exact_scale_grad = false;
};

// W_l = q_l * s * 2^(h-l). `w`: [C, ...] float; `scale`: [C], > 0.
// Gradients (LSQ straight-through, g = 1/sqrt(N_c * Qp), N_c = elements of channel c):
//   dW = dOut inside [Qn, Qp], 0 outside, with v = W / (s 2^d);
//   ds_c = g * sum_c dOut * (q_l - v inside | Qn below | Qp above) [* 2^d if exact].
torch::Tensor fake_quant_weight(const torch::Tensor& w, const torch::Tensor& scale,
                                const WeightQuantSpec& spec, Impl impl = Impl::kAuto);

// Activation quantizer: unsigned, per tensor, one learned scale per width.
// x_b = clamp(round(x / a), 0, 2^b - 1) * a; gradients as above with Qn = 0, N = numel.
// `scale`: a one-element tensor.
// `relu`: quantize relu(x) instead. The forward is the same (the clamp at 0 is the ReLU); the
// fused backward also zeroes the input gradient where x <= 0 (the ReLU's own gradient), so the
// ReLU's output and its separate forward and backward passes are saved. Results are those of
// fake_quant_act(torch::relu(x), ...), which the reference implementation computes.
torch::Tensor fake_quant_act(const torch::Tensor& x, const torch::Tensor& scale, int bits,
                             Impl impl = Impl::kAuto, bool relu = false);

// Per-token input quantizer of the language model's linear layers (SPEC Sec. 9): signed,
// symmetric, one dynamic scale per token (the last dimension), computed on the fly at every
// width: a_t = max|x_t| / Qp, q = round_half_even(clamp(x * (1 / a_t), -Qp, Qp)), x_q = q * a_t,
// Qp = 2^(b-1) - 1 (127 at 8 bits). The scale is not learned; the gradient is the
// straight-through estimator dx_q / dx = 1 (nothing is clipped: |x / a_t| <= Qp by definition).
torch::Tensor fake_quant_per_token(const torch::Tensor& x, int bits);
// The codes (float, integer-valued) and the per-token scales [..., 1] of the same definition.
std::pair<torch::Tensor, torch::Tensor> per_token_codes(const torch::Tensor& x, int bits);
// The same codes element by element with the scalar definition (per_token_scale, per_token_code
// of double_rounding.h), what the integer decoder computes (deploy::lm_quantize_tokens): x
// [..., K] (converted to float32 on the CPU) -> int8 codes [..., K] and float scales [..., 1].
// The integer-exact evaluation uses this one; tests hold per_token_codes equal to it.
std::pair<torch::Tensor, torch::Tensor> per_token_codes_scalar(const torch::Tensor& x, int bits);

// Integer codes, the export/deploy side of the same definition (no autograd).
// weight_codes: int8 h-bit codes of `w` with per-channel `scale`.
torch::Tensor weight_codes(const torch::Tensor& w, const torch::Tensor& scale, int high_bits);
// derive_codes: l-bit codes (int8) from h-bit codes (int8), by the integer second rounding.
torch::Tensor derive_codes(const torch::Tensor& codes, int high_bits, int low_bits,
                           SecondRounding rounding);

// Checks that `bits` is a supported width; `what` names the value in the message.
void check_bits(int bits, const char* what);

// Initial scales (SPEC Sec. 2): weights max(|mu - 3 sigma|, |mu + 3 sigma|) / 2^(h-1) per
// channel; activations LSQ's 2 * mean|x| / sqrt(2^b - 1).
torch::Tensor init_weight_scale(const torch::Tensor& w, int high_bits);
torch::Tensor init_act_scale(const torch::Tensor& x, int bits);
// LSQ's initial scale 2 * mean|x| / sqrt(Qp) (>= 1e-8) as a one-element tensor, for any largest
// code Qp (unsigned activations: 2^b - 1; signed inputs: 2^(b-1) - 1).
torch::Tensor lsq_init_scale(const torch::Tensor& x, int32_t qmax);
// The weight scale's LSQ gradient scale for channels of `per_channel` elements under `spec`
// (lsq_grad_scale with Qp = 2^(l-1) - 1, times 2^(h-l) with exact_scale_grad).
double weight_grad_scale(int64_t per_channel, const WeightQuantSpec& spec);
// Alternative activation-scale init: the scale (on a grid of 100 clipping ranges up to max x)
// that minimises the mean squared quantization error of `x` at `bits`.
torch::Tensor init_act_scale_mse(const torch::Tensor& x, int bits);

namespace detail {
// Raw kernels, exposed for tests and benchmarks. All outputs are freshly allocated.
// Forward results are bit-identical between the two implementations.
torch::Tensor weight_forward_fused(const torch::Tensor& w, const torch::Tensor& scale,
                                   const WeightQuantSpec& spec);
torch::Tensor weight_forward_reference(const torch::Tensor& w, const torch::Tensor& scale,
                                       const WeightQuantSpec& spec);
// Returns {grad_w, grad_scale}.
std::pair<torch::Tensor, torch::Tensor> weight_backward_fused(const torch::Tensor& grad,
                                                              const torch::Tensor& w,
                                                              const torch::Tensor& scale,
                                                              const WeightQuantSpec& spec);
std::pair<torch::Tensor, torch::Tensor> weight_backward_reference(const torch::Tensor& grad,
                                                                  const torch::Tensor& w,
                                                                  const torch::Tensor& scale,
                                                                  const WeightQuantSpec& spec);
torch::Tensor act_forward_fused(const torch::Tensor& x, const torch::Tensor& scale, int bits);
torch::Tensor act_forward_reference(const torch::Tensor& x, const torch::Tensor& scale, int bits);
// `relu`: the backward of fake_quant_act(x, ..., relu = true) (input gradient 0 where x <= 0).
std::pair<torch::Tensor, torch::Tensor> act_backward_fused(const torch::Tensor& grad,
                                                           const torch::Tensor& x,
                                                           const torch::Tensor& scale, int bits,
                                                           bool relu = false);
std::pair<torch::Tensor, torch::Tensor> act_backward_reference(const torch::Tensor& grad,
                                                               const torch::Tensor& x,
                                                               const torch::Tensor& scale,
                                                               int bits);
bool fused_supported(const torch::Tensor& t);
// Run the portable backward loops even where the AVX-512 kernels could run (tests; the
// environment variable BITSWITCH_QUANT_ISA=portable does the same for a whole process).
void force_portable_kernels(bool on);
// Whether this CPU can run the explicit AVX-512 backward kernels.
bool avx512_backward_available();
// How many threads the fused kernels' loop over `n` elements runs on (at::parallel_for, chunks
// of 16384 elements): up to torch::get_num_threads(). 1 would mean a build without OpenMP.
int kernel_threads(int64_t n);
// Process-wide counts of the backward spans (chunks of an activation, channels of a weight)
// run by each path since start-up, so tests can check which path a switch selected.
struct BackwardPathCounts {
  int64_t avx512 = 0, portable = 0;
};
BackwardPathCounts backward_path_counts();
}  // namespace detail

}  // namespace bitswitch::quant
