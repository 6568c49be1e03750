// Tensor-level entry points of the fused CUDA quantizer kernels (quant/cuda/kernels.h), called by
// the quant::detail::*_fused functions (quant/kernels.cpp) for CUDA tensors in a build with the
// CMake option BITSWITCH_CUDA (which defines BITSWITCH_CUDA_KERNELS=1). The caller has put the
// input in its dense layout (NCHW or channels-last: any layout whose first dimension is
// outermost) and the gradient in the same one; outputs are allocated like the input, on its
// device and the current CUDA stream. Semantics and results: those of the CPU kernels.
#pragma once
#include <torch/types.h>

#include <utility>

#include "bitswitch/quant/fake_quant.h"

namespace bitswitch::quant::cuda {

torch::Tensor act_forward(const torch::Tensor& x, const torch::Tensor& scale, int bits);
// `gscale`: the LSQ gradient scale by which the sum is multiplied (computed by the caller).
std::pair<torch::Tensor, torch::Tensor> act_backward(const torch::Tensor& grad, const torch::Tensor& x,
                                                     const torch::Tensor& scale, int bits, bool relu, double gscale);
// `scale`: float32, contiguous, [channels].
torch::Tensor weight_forward(const torch::Tensor& w, const torch::Tensor& scale, const WeightQuantSpec& spec);
std::pair<torch::Tensor, torch::Tensor> weight_backward(const torch::Tensor& grad, const torch::Tensor& w,
                                                        const torch::Tensor& scale, const WeightQuantSpec& spec,
                                                        double gscale);

}  // namespace bitswitch::quant::cuda
