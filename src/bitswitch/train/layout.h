// Memory layout of training: channels-last (NHWC) tensors make LibTorch's CPU convolutions
// faster (oneDNN); the layout changes results only through float summation order.
#pragma once
#include <torch/nn/module.h>

namespace bitswitch::train {

// Puts every 4-D parameter of `model` in the channels-last layout (in place; optimizers that
// already hold the parameters keep working).
void to_channels_last(torch::nn::Module& model);

}  // namespace bitswitch::train
