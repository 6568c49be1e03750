// Test-set evaluation of a model at one bit configuration (SPEC.md Sec. 5: every width is
// evaluated; quantized widths with the deployed integer model's arithmetic). Its own unit, below
// training and mixed-precision search, which both evaluate: quant <- nn <- models <- eval <-
// train, mixed.
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>

#include "bitswitch/data/loader.h"
#include "bitswitch/models/model.h"
#include "bitswitch/nn/bit_config.h"

namespace bitswitch::eval {

struct EvalResult {
  double accuracy = 0;  // top-1, percent
  double loss = 0;      // mean cross-entropy
  int64_t count = 0;
};

// Sums a float64 tensor in place over the processes of a data-parallel job (train/distributed.h
// provides one); empty: one process.
using SumReduce = std::function<void(torch::Tensor&)>;

// Evaluates `model` at `bits` on every batch of `loader` (eval mode, no grad), on the model's
// device. Quantized configurations use integer-exact evaluation (nn::set_integer_eval): the
// result is the deployed integer model's. With `reduce`, each process evaluates its shard (a
// sharded loader) and the loss sum, the correct count and the image count are summed over the
// processes before the means are taken.
EvalResult evaluate(models::ModelImpl& model, data::BatchSource& loader, const nn::BitConfig& bits,
                    const SumReduce& reduce = {});

// Batches follow the model's memory layout: a model is channels-last when its 4-D parameters
// are (train/layout.h); `in_layout` converts 4-D images to it when `channels_last`.
bool is_channels_last(torch::nn::Module& model);
torch::Tensor in_layout(const torch::Tensor& images, bool channels_last);

}  // namespace bitswitch::eval
