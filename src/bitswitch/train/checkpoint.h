// Checkpoints: model state, optimizer state, run metadata, written atomically.
// Format: a LibTorch archive (zip) with "meta" (JSON text: format, version, model spec, config,
// progress), "model" (dict name -> tensor), optionally "optimizer" and extra tensors.
#pragma once
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "bitswitch/models/model.h"

namespace torch::optim {
class Optimizer;
}

namespace bitswitch::train {

constexpr const char* kCheckpointFormat = "bitswitch-checkpoint";
constexpr int kCheckpointVersion = 1;

nlohmann::json spec_to_json(const models::ModelSpec& spec);
models::ModelSpec spec_from_json(const nlohmann::json& j, const std::string& source);

struct CheckpointData {
  nlohmann::json meta;                          // must hold "spec"; format/version are added
  const torch::nn::Module* model = nullptr;
  const torch::optim::Optimizer* optimizer = nullptr;
  std::map<std::string, torch::Tensor> extra;   // e.g. KD targets of the previous epoch
  // Saved in place of the model's tensors of these names (each must exist); the model itself is
  // never changed by saving (e.g. nn::transitional_mirror_state).
  std::map<std::string, torch::Tensor> model_overrides;
};

// Writes `path` through a temporary file and rename: never a partial file under `path`.
void save_checkpoint(const std::string& path, const CheckpointData& data);

class Checkpoint {
 public:
  // Opens and validates `path`; errors name the file. Tensors (model, optimizer state, extras)
  // are loaded onto `device` (default: the CPU, so that a checkpoint written on a GPU opens on a
  // machine without one), e.g. the training GPU when resuming there.
  explicit Checkpoint(const std::string& path, c10::optional<torch::Device> device = c10::nullopt);
  const nlohmann::json& meta() const { return meta_; }
  models::ModelSpec spec() const;
  const std::string& path() const { return path_; }
  // Copies the stored tensors into `model`, checking names and shapes. With strict=false,
  // tensors the checkpoint lacks are left as they are (starting a new mode from an old run),
  // but every conv/linear weight must be present.
  void load_model(torch::nn::Module& model, bool strict) const;
  bool has_optimizer() const { return has_optimizer_; }
  void load_optimizer(torch::optim::Optimizer& opt) const;
  torch::Tensor extra(const std::string& key) const;  // undefined if absent

 private:
  std::string path_;
  nlohmann::json meta_;
  std::map<std::string, torch::Tensor> tensors_;
  std::map<std::string, torch::Tensor> extra_;
  bool has_optimizer_ = false;
  mutable std::unique_ptr<torch::serialize::InputArchive> archive_;
};

}  // namespace bitswitch::train
