// Model construction by name. A ModelSpec fully describes the architecture, so checkpoints
// store it and rebuild the same network.
#pragma once
#include <torch/nn/module.h>

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "bitswitch/format/graph.h"
#include "bitswitch/nn/bit_config.h"
#include "bitswitch/quant/fake_quant.h"

namespace bitswitch::models {

struct ModelSpec {
  std::string name = "resnet20";
  int64_t in_channels = 1;
  int64_t num_classes = 10;
  std::vector<int> bits = {8, 6, 4, 2};  // high to low
  // Width of the first conv and last linear: kFloatBits (default, SPEC Sec. 2) or 8.
  int first_last_bits = nn::kFloatBits;
  // With first_last_bits 8: the first conv's input, the normalised image, quantized too (signed
  // 8-bit, one learned scale per width, like every activation quantizer), so the whole first
  // layer is integer and deploys as an integer GEMM. Off: the image stays float.
  bool quantize_image = false;
  quant::SecondRounding rounding = quant::SecondRounding::kHalfUp;
  bool exact_scale_grad = false;
  quant::Impl impl = quant::Impl::kAuto;
  bool act_init_mse = false;  // activation-scale init: LSQ (false) or MSE-optimal (true)
  // Architecture fields beyond the above, for models sized by data (the language model's
  // layers, width, heads, ...: models/llama.h). Empty for the CNNs.
  nlohmann::json arch = nlohmann::json::object();
};

class ModelImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  // The inference computation as an op graph (format/graph.h), emitted by the model from its own
  // modules: what `bitswitch export` stores and the integer runtime runs. A model that does not
  // describe itself cannot be exported (the default throws, naming the model).
  virtual format::Graph graph() const;
};
using Model = std::shared_ptr<ModelImpl>;

// Builds a model by `spec.name`; throws bitswitch::Error listing the known names otherwise.
Model create_model(const ModelSpec& spec);
std::vector<std::string> model_names();

}  // namespace bitswitch::models
