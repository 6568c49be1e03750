// Model registry: builds models by name and validates their spec.
#include <functional>
#include <map>

#include "bitswitch/models/registry_impl.h"
#include "bitswitch/util/error.h"

namespace bitswitch::models {
namespace {
const std::map<std::string, std::function<Model(const ModelSpec&)>>& registry() {
  static const std::map<std::string, std::function<Model(const ModelSpec&)>> r = {
      {"resnet20", make_resnet20},
      {"resnet18", make_resnet18},
      {"resnet50", make_resnet50},
      {"mobilenetv2", make_mobilenetv2},
      {"smallcnn", make_small_cnn},
      {"llama", make_llama},
  };
  return r;
}
}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& kv : registry()) names.push_back(kv.first);
  return names;
}

Model create_model(const ModelSpec& spec) {
  auto it = registry().find(spec.name);
  if (it == registry().end()) {
    std::string known;
    for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
    fail("unknown model '", spec.name, "' (known: ", known, ")");
  }
  nn::check_bit_list(spec.bits, "model bits");
  BS_CHECK(spec.first_last_bits == nn::kFloatBits || spec.first_last_bits == 8,
           "`first_last_bits` must be 32 or 8, got ", spec.first_last_bits);
  BS_CHECK(!spec.quantize_image || spec.first_last_bits == 8,
           "`quantize_image` needs `first_last_bits: 8` (a full-precision first conv reads the float image)");
  BS_CHECK(spec.in_channels > 0 && spec.num_classes > 1, "model '", spec.name,
           "': bad in_channels ", spec.in_channels, " or num_classes ", spec.num_classes);
  return it->second(spec);
}

}  // namespace bitswitch::models

namespace bitswitch::models {
format::Graph ModelImpl::graph() const {
  fail("model '", name(), "' does not describe its inference graph (models::ModelImpl::graph), so it cannot be exported");
}
}  // namespace bitswitch::models
