// Checkpoint writing and validated loading.
#include "bitswitch/train/checkpoint.h"

#include <torch/optim/optimizer.h>
#include <torch/torch.h>

#include <filesystem>

#include "bitswitch/nn/bit_config.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/util/atomic_file.h"
#include "bitswitch/util/error.h"

namespace bitswitch::train {

using json = nlohmann::json;

json spec_to_json(const models::ModelSpec& s) {
  json j{{"name", s.name},
              {"in_channels", s.in_channels},
              {"num_classes", s.num_classes},
              {"bits", s.bits},
              {"first_last_bits", s.first_last_bits},
              {"quantize_image", s.quantize_image},
              {"second_rounding", s.rounding == quant::SecondRounding::kFloor ? "floor" : "half-up"},
              {"exact_scale_grad", s.exact_scale_grad},
              {"act_init", s.act_init_mse ? "mse" : "lsq"}};
  if (!s.arch.empty()) j["arch"] = s.arch;
  return j;
}

models::ModelSpec spec_from_json(const json& j, const std::string& source) {
  models::ModelSpec s;
  try {
    s.name = j.at("name").get<std::string>();
    s.in_channels = j.at("in_channels").get<int64_t>();
    s.num_classes = j.at("num_classes").get<int64_t>();
    s.bits = nn::check_bit_list(j.at("bits").get<std::vector<int>>(), source + ": spec.bits");
    s.first_last_bits = j.at("first_last_bits").get<int>();
    s.quantize_image = j.value("quantize_image", false);  // absent before it existed: off
    s.rounding = j.at("second_rounding").get<std::string>() == "floor" ? quant::SecondRounding::kFloor
                                                                       : quant::SecondRounding::kHalfUp;
    s.exact_scale_grad = j.at("exact_scale_grad").get<bool>();
    s.act_init_mse = j.value("act_init", std::string("lsq")) == "mse";
    if (j.contains("arch")) s.arch = j.at("arch");
  } catch (const json::exception& e) {
    fail(source, ": bad model spec: ", e.what());
  }
  return s;
}

void save_checkpoint(const std::string& path, const CheckpointData& data) {
  BS_CHECK(data.model != nullptr, "save_checkpoint: no model");
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  json meta = data.meta;
  meta["format"] = kCheckpointFormat;
  meta["version"] = kCheckpointVersion;
  torch::serialize::OutputArchive archive;
  archive.write("meta", c10::IValue(meta.dump()));
  c10::Dict<std::string, torch::Tensor> state;
  for (const auto& p : data.model->named_parameters()) state.insert(p.key(), p.value().detach());
  for (const auto& b : data.model->named_buffers()) state.insert(b.key(), b.value().detach());
  for (const auto& [name, t] : data.model_overrides) {
    auto it = state.find(name);
    BS_CHECK(it != state.end(), "save_checkpoint: override of unknown tensor '", name, "'");
    BS_CHECK(it->value().sizes() == t.sizes(), "save_checkpoint: override of '", name, "' has shape ", t.sizes(),
             ", the model's is ", it->value().sizes());
    state.insert_or_assign(name, t.detach());
  }
  archive.write("model", c10::IValue(state));
  if (data.optimizer) {
    torch::serialize::OutputArchive opt;
    data.optimizer->save(opt);
    archive.write("optimizer", opt);
  }
  c10::Dict<std::string, torch::Tensor> extra;
  for (const auto& [k, v] : data.extra)
    if (v.defined()) extra.insert(k, v);
  archive.write("extra", c10::IValue(extra));
  write_atomically(path, [&](const std::string& tmp) { archive.save_to(tmp); });
}

Checkpoint::Checkpoint(const std::string& path, c10::optional<torch::Device> device) : path_(path) {
  BS_CHECK(std::filesystem::exists(path), "checkpoint '", path, "' does not exist");
  archive_ = std::make_unique<torch::serialize::InputArchive>();
  try {
    archive_->load_from(path, device.value_or(torch::Device(torch::kCPU)));
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    fail("checkpoint '", path, "' is corrupt or not a bitswitch checkpoint (", msg.substr(0, msg.find('\n')), ")");
  }
  c10::IValue meta_v, model_v, extra_v;
  BS_CHECK(archive_->try_read("meta", meta_v) && meta_v.isString(),
           "checkpoint '", path, "' has no bitswitch metadata (not a bitswitch checkpoint)");
  try {
    meta_ = json::parse(meta_v.toStringRef());
  } catch (const json::exception& e) {
    fail("checkpoint '", path, "': metadata is not valid JSON: ", e.what());
  }
  BS_CHECK(meta_.value("format", "") == kCheckpointFormat, "checkpoint '", path, "' is not a bitswitch checkpoint (format '",
           meta_.value("format", ""), "')");
  BS_CHECK(meta_.value("version", 0) == kCheckpointVersion, "checkpoint '", path, "' has unsupported version ",
           meta_.value("version", 0), " (this build reads ", kCheckpointVersion, ")");
  BS_CHECK(meta_.contains("spec"), "checkpoint '", path, "' has no model spec");
  BS_CHECK(archive_->try_read("model", model_v) && model_v.isGenericDict(), "checkpoint '", path, "' has no model state");
  for (const auto& kv : model_v.toGenericDict()) tensors_[kv.key().toStringRef()] = kv.value().toTensor();
  if (archive_->try_read("extra", extra_v) && extra_v.isGenericDict())
    for (const auto& kv : extra_v.toGenericDict()) extra_[kv.key().toStringRef()] = kv.value().toTensor();
  torch::serialize::InputArchive opt;
  has_optimizer_ = archive_->try_read("optimizer", opt);
}

models::ModelSpec Checkpoint::spec() const { return spec_from_json(meta_.at("spec"), "checkpoint '" + path_ + "'"); }

void Checkpoint::load_model(torch::nn::Module& model, bool strict) const {
  torch::NoGradGuard ng;
  auto load_one = [&](const std::string& name, torch::Tensor& t, bool required) {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      BS_CHECK(!required, "checkpoint '", path_, "' does not match the model: missing tensor '", name, "'");
      return;
    }
    BS_CHECK(it->second.sizes() == t.sizes(), "checkpoint '", path_, "' does not match the model: tensor '", name,
             "' has shape ", it->second.sizes(), ", the model expects ", t.sizes());
    t.copy_(it->second);
  };
  size_t used = 0;
  // Transitional BNs (SPEC Sec. 3) are optional even when strict: checkpoints written before
  // they existed lack them, and they start as copies of their uniform BN.
  bool missing_transitional = false;
  auto required = [&](const std::string& name, bool core) {
    if (!nn::is_transitional_bn_tensor(name)) return strict || core;
    missing_transitional |= tensors_.count(name) == 0;
    return false;
  };
  for (auto& p : model.named_parameters()) {
    const auto& name = p.key();
    const bool core = name.size() >= 6 && (name.rfind("weight") == name.size() - 6 || name.rfind("bias") == name.size() - 4) &&
                      name.find("bn_") == std::string::npos;
    used += tensors_.count(name);
    load_one(name, p.value(), required(name, core));
  }
  for (auto& b : model.named_buffers()) {
    used += tensors_.count(b.key());
    load_one(b.key(), b.value(), required(b.key(), false));
  }
  if (missing_transitional) nn::init_transitional_from_uniform(model);
  if (strict)
    BS_CHECK(used == tensors_.size(), "checkpoint '", path_, "' does not match the model: it holds ",
             tensors_.size() - used, " tensors the model does not have");
}

void Checkpoint::load_optimizer(torch::optim::Optimizer& opt) const {
  BS_CHECK(has_optimizer_, "checkpoint '", path_, "' holds no optimizer state");
  torch::serialize::InputArchive a;
  archive_->read("optimizer", a);
  try {
    opt.load(a);
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    fail("checkpoint '", path_, "': optimizer state does not match (", msg.substr(0, msg.find('\n')), ")");
  }
}

torch::Tensor Checkpoint::extra(const std::string& key) const {
  auto it = extra_.find(key);
  return it == extra_.end() ? torch::Tensor() : it->second;
}

}  // namespace bitswitch::train
