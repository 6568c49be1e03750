// Pieces of one training step that the trainer and the step benchmark share (paper Alg. A.2:
// one optimizer step per width).
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace bitswitch::train {

// Makes every gradient undefined rather than zero, so that the optimizer skips the per-width
// parameters (activation scales, BNs) of widths that did not run in this step. A zeroed
// gradient would still move them: Adam's running moments keep stepping a parameter whose
// gradient is zero, and every step would cost an update of all widths' parameters.
void clear_grads(const std::vector<at::Tensor>& params);

// Backward of one width's loss when all widths share one optimizer step (summed mode) and ALRS
// scales this width's contribution to the gradients of `scaled` (the scale/BN/norm group) by
// `eta`: their gradients become before + eta * (after - before). Other gradients accumulate.
void backward_scaled(const at::Tensor& loss, const std::vector<at::Tensor>& scaled, double eta);

}  // namespace bitswitch::train
