// Layer sensitivity: the average Hessian trace of the loss with respect to each quantized
// layer's weights, by Hutchinson's estimator (SPEC.md Sec. 6.1; paper Sec. 3.4; Hutchinson
// 1990; HAWQ-V2, Dong et al. 2020, Sec. 3).
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace bitswitch::data {
class Loader;
}
namespace bitswitch::models {
class ModelImpl;
}

namespace bitswitch::mixed {

// H v for the Hessian of `loss` with respect to `params` (double backward: the gradient with
// create_graph, then the gradient of <grad, v>). `loss` must still hold its graph.
std::vector<torch::Tensor> hessian_vector_product(const torch::Tensor& loss, const std::vector<torch::Tensor>& params,
                                                  const std::vector<torch::Tensor>& v);

struct HutchinsonOptions {
  int max_probes = 50;     // the reference uses 7
  int min_probes = 2;
  double tolerance = 1e-3; // stop when the running mean of the total trace changes by less (relative)
  uint64_t seed = 1;
  // false: one Rademacher vector over all blocks per probe (one Hessian-vector product; the
  // cross-block terms add variance). true: each block probed on its own (no cross terms, one
  // Hessian-vector product per block and probe).
  bool per_block = false;
  // Called after each probe with (probes done, running mean of the total trace).
  std::function<void(int, double)> on_probe;
};

struct TraceEstimate {
  double trace = 0;    // tr(H_ll) estimate (sum over the block)
  double std = 0;      // standard deviation of the per-probe estimates
  double stderr_ = 0;  // std / sqrt(probes)
};

struct HutchinsonResult {
  std::vector<TraceEstimate> blocks;  // one per parameter tensor
  int probes = 0;
  bool converged = false;  // stopped by the tolerance rather than the probe limit
};

// tr(H_pp) for every parameter tensor p: each probe draws one Rademacher vector v over all
// tensors, computes H v of the objective sum_i batch_loss(i) (batch_loss(i) returns batch i's
// share of the objective, with its graph) and takes v_p . (H v)_p per tensor (unbiased: the
// cross-block terms have mean zero; with `per_block`, H v_p for each block alone instead). Probes run until the running mean of the total trace
// changes by less than `tolerance` (relative) after min_probes, or max_probes is reached.
HutchinsonResult hutchinson(const std::vector<torch::Tensor>& params, int64_t num_batches,
                            const std::function<torch::Tensor(int64_t)>& batch_loss, const HutchinsonOptions& options);

struct LayerTrace {
  std::string name;
  int64_t params = 0;
  double trace = 0;       // average trace: tr(H_ll) / params (the t_l of SPEC Sec. 6)
  double trace_sum = 0;   // tr(H_ll)
  double std = 0;         // of the per-probe average-trace estimates
  double stderr_ = 0;
};

struct TraceReport {
  std::vector<LayerTrace> layers;  // config-following quantized layers, in model order
  int bits = 0;                    // width the model ran at (its highest)
  int64_t images = 0;
  int probes = 0;
  bool converged = false;
  double tolerance = 0;
  bool per_layer = false;  // probes per layer (HutchinsonOptions::per_block)
  std::string checkpoint;
};

// The average Hessian trace of every config-following quantized layer of `model`, run at its
// highest width in eval mode (BN running statistics, so the loss is a mean over images), on
// the mean cross-entropy over all images of `loader`. Quantizers are straight-through: this is
// the Hessian with respect to the 8-bit (highest-width) weights, masked to the clip range.
TraceReport layer_traces(models::ModelImpl& model, data::Loader& loader, const HutchinsonOptions& options);

nlohmann::json traces_to_json(const TraceReport& r);
// Reads a traces.json file; errors name the file and field.
TraceReport read_traces(const std::string& path);

}  // namespace bitswitch::mixed
