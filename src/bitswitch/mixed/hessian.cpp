// Hutchinson trace estimation by double backward (SPEC.md Sec. 6.1; paper Sec. 3.4).
#include "bitswitch/mixed/hessian.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "bitswitch/data/loader.h"
#include "bitswitch/models/model.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/util/atomic_file.h"
#include "bitswitch/util/error.h"

namespace bitswitch::mixed {

using json = nlohmann::json;

std::vector<torch::Tensor> hessian_vector_product(const torch::Tensor& loss, const std::vector<torch::Tensor>& params,
                                                  const std::vector<torch::Tensor>& v) {
  BS_CHECK(params.size() == v.size(), "hessian_vector_product: ", params.size(), " parameters, ", v.size(), " vectors");
  auto grads = torch::autograd::grad({loss}, params, /*grad_outputs=*/{}, /*retain_graph=*/true, /*create_graph=*/true);
  torch::Tensor dot = torch::zeros({}, loss.options());
  for (size_t i = 0; i < params.size(); ++i) dot = dot + (grads[i] * v[i]).sum();
  if (!dot.requires_grad()) {  // the loss is linear in every block: H = 0
    std::vector<torch::Tensor> zero;
    for (const auto& p : params) zero.push_back(torch::zeros_like(p));
    return zero;
  }
  auto hv = torch::autograd::grad({dot}, params, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                  /*allow_unused=*/true);
  for (size_t i = 0; i < hv.size(); ++i)
    if (!hv[i].defined()) hv[i] = torch::zeros_like(params[i]);  // a block the loss is linear in
  return hv;
}

HutchinsonResult hutchinson(const std::vector<torch::Tensor>& params, int64_t num_batches,
                            const std::function<torch::Tensor(int64_t)>& batch_loss, const HutchinsonOptions& o) {
  BS_CHECK(o.max_probes >= 1, "max_probes must be >= 1, got ", o.max_probes);
  BS_CHECK(o.tolerance >= 0, "tolerance must be >= 0, got ", o.tolerance);
  BS_CHECK(num_batches >= 1, "Hutchinson estimator: no batches");
  const size_t P = params.size();
  auto gen = at::detail::createCPUGenerator(o.seed);
  std::vector<std::vector<double>> samples(P);  // per block, per probe: v_p . (H v)_p
  HutchinsonResult r;
  double prev_mean = 0;
  for (int k = 0; k < o.max_probes; ++k) {
    std::vector<torch::Tensor> v;
    for (const auto& p : params)
      v.push_back(torch::randint(0, 2, p.sizes(), gen, p.options()).mul_(2).sub_(1));  // Rademacher
    // (H v) summed over the batches, for the probe `u` (v, or v restricted to one block).
    auto hvp = [&](const std::vector<torch::Tensor>& u) {
      std::vector<torch::Tensor> hv(P);
      for (int64_t b = 0; b < num_batches; ++b) {
        auto part = hessian_vector_product(batch_loss(b), params, u);
        for (size_t i = 0; i < P; ++i) hv[i] = hv[i].defined() ? hv[i] + part[i] : part[i];
      }
      return hv;
    };
    if (o.per_block) {
      for (size_t i = 0; i < P; ++i) {
        std::vector<torch::Tensor> u;
        for (size_t j = 0; j < P; ++j) u.push_back(j == i ? v[j] : torch::zeros_like(v[j]));
        samples[i].push_back((v[i] * hvp(u)[i]).sum().item<double>());
      }
    } else {
      const auto hv = hvp(v);
      for (size_t i = 0; i < P; ++i) samples[i].push_back((v[i] * hv[i]).sum().item<double>());
    }
    r.probes = k + 1;
    double mean = 0;  // running mean of the total trace
    for (const auto& s : samples)
      for (double x : s) mean += x;
    mean /= double(r.probes);
    if (o.on_probe) o.on_probe(r.probes, mean);
    if (r.probes >= std::max(o.min_probes, 2) && std::abs(mean - prev_mean) <= o.tolerance * std::abs(prev_mean)) {
      r.converged = true;
      break;
    }
    prev_mean = mean;
  }
  r.blocks.resize(P);
  for (size_t i = 0; i < P; ++i) {
    const auto& s = samples[i];
    double mean = 0, var = 0;
    for (double x : s) mean += x;
    mean /= double(s.size());
    for (double x : s) var += (x - mean) * (x - mean);
    var = s.size() > 1 ? var / double(s.size() - 1) : 0.0;
    r.blocks[i] = {mean, std::sqrt(var), std::sqrt(var / double(s.size()))};
  }
  return r;
}

TraceReport layer_traces(models::ModelImpl& model, data::Loader& loader, const HutchinsonOptions& options) {
  auto layers = nn::quant_layers(model);
  BS_CHECK(!layers.empty(), "the model has no quantized layers that follow the bit configuration");
  TraceReport rep;
  rep.bits = layers.front().second->high_bits();
  rep.tolerance = options.tolerance;
  rep.per_layer = options.per_block;
  const bool was_training = model.is_training();
  model.eval();
  nn::apply_bits(model, nn::BitConfig::uniform(rep.bits));
  std::vector<data::Batch> batches;
  data::Batch b;
  loader.start_epoch(0);
  while (loader.next(b)) {
    rep.images += b.labels.size(0);
    batches.push_back(b);
  }
  BS_CHECK(rep.images > 0, "no images to estimate Hessian traces on");
  std::vector<torch::Tensor> params;
  for (auto& [name, q] : layers) params.push_back(q->weight_param());
  const double n = double(rep.images);
  auto loss = [&](int64_t i) {
    const auto& batch = batches[size_t(i)];
    return torch::cross_entropy_loss(model.forward(batch.images), batch.labels, {}, at::Reduction::Sum) / n;
  };
  auto h = hutchinson(params, int64_t(batches.size()), loss, options);
  model.train(was_training);
  rep.probes = h.probes;
  rep.converged = h.converged;
  for (size_t i = 0; i < layers.size(); ++i) {
    const double count = double(params[i].numel());
    rep.layers.push_back({layers[i].first, params[i].numel(), h.blocks[i].trace / count, h.blocks[i].trace,
                          h.blocks[i].std / count, h.blocks[i].stderr_ / count});
  }
  return rep;
}

json traces_to_json(const TraceReport& r) {
  json layers = json::array();
  for (const auto& l : r.layers)
    layers.push_back({{"name", l.name}, {"params", l.params}, {"trace", l.trace}, {"trace_sum", l.trace_sum},
                      {"std", l.std}, {"stderr", l.stderr_}});
  return json{{"format", "bitswitch-traces"}, {"checkpoint", r.checkpoint}, {"bits", r.bits}, {"images", r.images},
              {"probes", r.probes}, {"converged", r.converged}, {"tolerance", r.tolerance}, {"per_layer", r.per_layer},
              {"estimator", "Hutchinson, Rademacher probes, Hessian-vector products by double backward"},
              {"layers", layers}};
}

TraceReport read_traces(const std::string& path) {
  json j;
  try {
    j = json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    fail("traces file '", path, "': not valid JSON: ", e.what());
  }
  BS_CHECK(j.is_object() && j.value("format", "") == "bitswitch-traces", "traces file '", path,
           "': not a bitswitch traces file (expected \"format\": \"bitswitch-traces\"; write one with `bitswitch hessian`)");
  BS_CHECK(j.contains("layers") && j["layers"].is_array() && !j["layers"].empty(), "traces file '", path,
           "': field 'layers' must be a non-empty list");
  TraceReport r;
  r.checkpoint = j.value("checkpoint", "");
  r.bits = j.value("bits", 0);
  r.images = j.value("images", int64_t(0));
  r.probes = j.value("probes", 0);
  r.converged = j.value("converged", false);
  r.tolerance = j.value("tolerance", 0.0);
  r.per_layer = j.value("per_layer", false);
  for (const auto& l : j["layers"]) {
    BS_CHECK(l.is_object() && l.contains("name") && l["name"].is_string(), "traces file '", path,
             "': every layer needs a string 'name'");
    const std::string name = l["name"];
    BS_CHECK(l.contains("trace") && l["trace"].is_number() && std::isfinite(l["trace"].get<double>()), "traces file '",
             path, "': layer '", name, "': field 'trace' must be a finite number");
    r.layers.push_back({name, l.value("params", int64_t(0)), l["trace"].get<double>(), l.value("trace_sum", 0.0),
                        l.value("std", 0.0), l.value("stderr", 0.0)});
  }
  return r;
}

}  // namespace bitswitch::mixed
