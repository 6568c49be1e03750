// Implements hasb.h: the roulette over the model's quantized layers and the per-step draw.
#include "bitswitch/mixed/hasb.h"

#include <map>
#include <optional>

#include <fmt/format.h>

#include "bitswitch/mixed/hessian.h"
#include "bitswitch/mixed/roulette.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/util/error.h"

namespace bitswitch::mixed {

namespace {

class HasbSchedule : public train::WidthSchedule {
 public:
  explicit HasbSchedule(const train::TrainConfig& c) : cfg_(c) {}

  std::string attach(models::ModelImpl& model, const std::vector<int>& bits) override {
    layers_.clear();
    for (const auto& [name, q] : nn::quant_layers(model)) layers_.push_back(name);
    if (cfg_.roulette == "uniform") {
      roulette_ = Roulette::uniform(layers_.size(), bits);
    } else {
      const auto traces = read_traces(cfg_.traces);
      std::map<std::string, double> by_name;
      for (const auto& t : traces.layers) by_name[t.name] = t.trace;
      std::vector<double> t;
      for (const auto& n : layers_) {
        BS_CHECK(by_name.count(n), "traces file '", cfg_.traces, "' has no layer '", n, "' of model ", cfg_.model);
        t.push_back(by_name[n]);
      }
      roulette_ = Roulette::hessian(t, bits);
    }
    int sensitive = 0;
    for (size_t l = 0; l < layers_.size(); ++l) sensitive += roulette_->sensitive(l);
    return fmt::format("HASB: {} roulette, {} of {} layers sensitive, sigma {}, warm-up {} epoch(s)", cfg_.roulette,
                       sensitive, layers_.size(), cfg_.hasb_sigma, cfg_.hasb_warmup_epochs);
  }

  void start_from(models::ModelImpl& model, const std::string& init, bool from_fp) override {
    BS_CHECK(!from_fp, "hasb: '", init, "' is an FP32 checkpoint; HASB starts from a multi-precision one");
    // Transitional BNs (SPEC Sec. 3) start as copies of their width's uniform BN.
    nn::init_transitional_from_uniform(model);
  }

  nn::BitConfig step_bits(int epoch, int64_t iteration, size_t width_index, int bits) override {
    BS_CHECK(roulette_, "HASB schedule: step_bits() before attach()");
    auto rng = step_rng(cfg_.seed, epoch, iteration, int(width_index));
    const double sigma = hasb_sigma(cfg_.hasb_sigma, epoch, cfg_.epochs, cfg_.hasb_warmup_epochs);
    const auto widths = draw_layer_widths(*roulette_, bits, sigma, rng);
    std::map<std::string, int> m;
    for (size_t l = 0; l < widths.size(); ++l) m[layers_[l]] = widths[l];
    return nn::layer_bits_config(m, bits);
  }

 private:
  train::TrainConfig cfg_;
  std::optional<Roulette> roulette_;
  std::vector<std::string> layers_;
};

}  // namespace

std::unique_ptr<train::WidthSchedule> hasb_schedule(const train::TrainConfig& config) {
  return std::make_unique<HasbSchedule>(config);
}

}  // namespace bitswitch::mixed
