// Export of a trained multi-precision model to the master deployment artifact (SPEC.md Sec. 7):
// the first rounding (float weights to INT(h) codes) with exactly the function training uses
// (quant::weight_code), plus scales, per-width BNs and the full-precision edge layers.
// This is the only deploy file that needs LibTorch; the artifact and runtime do not.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "bitswitch/deploy/artifact.h"
#include "bitswitch/models/model.h"

namespace bitswitch::deploy {

// The master artifact of `model` (built from `spec`, scales initialised by training).
Artifact export_model(models::ModelImpl& model, const models::ModelSpec& spec,
                      nlohmann::json provenance = nlohmann::json::object());

// Loads a checkpoint (train/checkpoint.h) and exports it; provenance records the checkpoint
// path, the dataset it was trained on and its summary accuracies.
Artifact export_checkpoint(const std::string& checkpoint_path);

}  // namespace bitswitch::deploy
