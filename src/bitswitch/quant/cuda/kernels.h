// Fused CUDA kernels of the Double Rounding fake-quantizers (SPEC.md Sec. 2; paper Sec. 3.1):
// raw-pointer launchers, free of LibTorch so that only this pair of files goes through nvcc.
// They mirror the fused CPU kernels (quant/kernels.cpp) operation for operation: the same
// scalar definitions (quant/double_rounding.h, compiled for the device), so the forward
// results are bit-identical; the scale-gradient sums are reduced in a fixed order (per tile of
// kTile elements in float, then in double), deterministic for a given shape, but in a
// different order than on the CPU, so they agree with it within float rounding.
// Built only in the CUDA build (CMake option BITSWITCH_CUDA); quant/cuda/fused_cuda.h is the
// tensor-level entry point.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace bitswitch::quant::cuda {

// Elements per tile: one thread block handles one tile (of one channel, for weights).
constexpr int64_t kTile = 4096;

// Tiles of a channel of `per` elements (at least 1).
inline int64_t tiles_per_channel(int64_t per) { return per > kTile ? (per + kTile - 1) / kTile : 1; }

// The weight quantizer's widths and second rounding (quant::WeightQuantSpec without LibTorch).
struct WeightArgs {
  int high_bits;
  int bits;
  int rounding;  // quant::SecondRounding as int
};

// Activations (unsigned, one scale `scale[0]`, a device pointer): y = clamp(round(x / a), 0, Qp) * a.
cudaError_t act_forward(const float* x, float* y, int64_t n, const float* scale, int bits, cudaStream_t stream);

// dx = g inside the range (and, with `relu`, where x > 0), 0 elsewhere; *grad_scale = gscale *
// sum g * (round(v) - v | 0 | Qp). `partial`: tiles_per_channel(n) doubles of device memory.
cudaError_t act_backward(const float* g, const float* x, float* gx, float* grad_scale, double* partial, int64_t n,
                         const float* scale, int bits, bool relu, double gscale, cudaStream_t stream);

// Weights [channels, per] (channel-major buffer), per-channel scales: W_l = q_l * s * 2^(h-l).
cudaError_t weight_forward(const float* w, float* y, int64_t channels, int64_t per, const float* scale,
                           WeightArgs args, cudaStream_t stream);

// dW = g inside the l-bit range, 0 outside; grad_scale[c] = gscale * sum_c g * (q_l - v | Qn | Qp).
// `partial`: channels * tiles_per_channel(per) doubles of device memory.
cudaError_t weight_backward(const float* g, const float* w, float* gw, float* grad_scale, double* partial,
                            int64_t channels, int64_t per, const float* scale, WeightArgs args, double gscale,
                            cudaStream_t stream);

}  // namespace bitswitch::quant::cuda
