// FP32 weight import/export in torchvision's naming (see pretrained.h for the mapping rule).
#include "bitswitch/models/pretrained.h"

#include <torch/torch.h>

#include <cstring>
#include <set>

#include "bitswitch/format/safetensors.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/util/error.h"

namespace bitswitch::models {

namespace {
bool is_counter(const std::string& name) {
  const std::string suffix = ".num_batches_tracked";
  return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}
}  // namespace

std::vector<FpTensor> fp_tensors(torch::nn::Module& model) {
  std::vector<FpTensor> out;
  std::set<std::string> under_bn;  // module names inside a SwitchableBatchNorm2d
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    const std::string& path = item.key();
    auto* m = item.value().get();
    if (under_bn.count(path)) continue;
    if (auto* sbn = dynamic_cast<nn::SwitchableBatchNorm2dImpl*>(m)) {
      for (const auto& child : sbn->named_modules("", false)) under_bn.insert(join(path, child.key()));
      auto& bn = sbn->bn_for(nn::kFloatBits);
      for (const auto& t : bn->named_parameters(false))
        out.push_back({join(path, t.key()), join(path, "bn_fp." + t.key()), t.value()});
      for (const auto& t : bn->named_buffers(false))
        out.push_back({join(path, t.key()), join(path, "bn_fp." + t.key()), t.value()});
      continue;
    }
    const bool quant_layer = dynamic_cast<nn::QuantLayer*>(m) != nullptr;
    for (const auto& t : m->named_parameters(false)) {
      if (quant_layer && (t.key() == "weight" || t.key() == "bias")) {
        out.push_back({join(path, t.key()), join(path, t.key()), t.value()});
      } else if (!quant_layer) {
        fail("module '", path, "' (", m->name(), ") holds tensor '", t.key(), "' with no torchvision name");
      }
    }
    if (!quant_layer)
      for (const auto& t : m->named_buffers(false))
        fail("module '", path, "' (", m->name(), ") holds buffer '", t.key(), "' with no torchvision name");
  }
  return out;
}

void load_fp_safetensors(torch::nn::Module& model, const std::string& path) {
  const auto file = format::read_safetensors(path);
  const auto targets = fp_tensors(model);
  std::set<std::string> used;
  torch::NoGradGuard ng;
  for (const auto& t : targets) {
    const auto& name = t.torchvision_name;
    std::vector<int64_t> shape(t.tensor.sizes().begin(), t.tensor.sizes().end());
    if (is_counter(name)) {
      if (!file.contains(name)) {
        t.tensor.zero_();
        continue;
      }
      const auto& v = file.get(name, "I64", shape);
      int64_t count = 0;
      std::memcpy(&count, v.data, sizeof(count));
      t.tensor.fill_(count);
    } else {
      BS_CHECK(file.contains(name), path, ": tensor '", name, "' (bitswitch '", t.bitswitch_name,
               "') is missing from the file");
      const auto& v = file.get(name, "F32", shape);
      auto src = torch::empty(t.tensor.sizes(), torch::kFloat32);
      std::memcpy(src.data_ptr<float>(), v.data, v.nbytes);
      t.tensor.copy_(src);
    }
    used.insert(name);
  }
  for (const auto& name : file.names())
    BS_CHECK(used.count(name), path, ": tensor '", name, "' has no counterpart in this model (wrong architecture?)");
}

void save_fp_safetensors(torch::nn::Module& model, const std::string& path,
                         const std::map<std::string, std::string>& metadata) {
  std::vector<format::TensorToWrite> out;
  for (const auto& t : fp_tensors(model)) {
    std::vector<int64_t> shape(t.tensor.sizes().begin(), t.tensor.sizes().end());
    const bool counter = is_counter(t.torchvision_name);
    auto c = t.tensor.detach().to(torch::kCPU, counter ? torch::kInt64 : torch::kFloat32).contiguous();
    out.push_back(format::make_tensor(t.torchvision_name, counter ? "I64" : "F32", shape, c.data_ptr(),
                                      c.numel() * c.element_size()));
  }
  format::write_safetensors(path, out, metadata);
}

}  // namespace bitswitch::models
