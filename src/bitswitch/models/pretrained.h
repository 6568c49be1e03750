// FP32 weights in torchvision's naming, stored as safetensors: import of weights exported from
// PyTorch (scripts/export_torchvision.py) and export of bitswitch's own FP32 model.
//
// The name mapping (torchvision -> bitswitch) is one explicit rule over the module tree:
//   QConv2d / QLinear at P:          P.weight, P.bias            -> the same names
//   SwitchableBatchNorm2d at P:      P.{weight, bias, running_mean, running_var,
//                                      num_batches_tracked}     -> P.bn_fp.<same>
// Quantizer state (weight_scale, act_scale_<b>) and the per-width BNs (bn_8, ...) have no
// torchvision counterpart: they are initialised on the first quantized forward, and the
// per-width BNs from bn_fp (nn::init_widths_from_fp). Any other module holding tensors is an
// error, so the mapping covers every FP tensor of the model.
#pragma once
#include <torch/nn/module.h>

#include <map>
#include <string>
#include <vector>

namespace bitswitch::models {

struct FpTensor {
  std::string torchvision_name;
  std::string bitswitch_name;
  torch::Tensor tensor;  // the model's own parameter or buffer (shares storage)
};

// Every FP tensor of `model` with its torchvision name, in module registration order.
std::vector<FpTensor> fp_tensors(torch::nn::Module& model);

// Loads FP32 weights from a safetensors file with torchvision names into `model`'s FP tensors.
// Every tensor of the file must be used exactly once and every FP tensor of the model filled
// (num_batches_tracked may be missing: it is set to 0); dtype F32 (I64 for num_batches_tracked)
// and shapes must match. Errors name the file and the tensor. Does not touch per-width BNs.
void load_fp_safetensors(torch::nn::Module& model, const std::string& path);

// Writes `model`'s FP tensors as F32 (num_batches_tracked as I64) with torchvision names.
void save_fp_safetensors(torch::nn::Module& model, const std::string& path,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace bitswitch::models
