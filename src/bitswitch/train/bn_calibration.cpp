// BatchNorm re-estimation after training (see bn_calibration.h).
#include "bitswitch/train/bn_calibration.h"

#include <torch/torch.h>

#include "bitswitch/nn/layers.h"
#include "bitswitch/train/distributed.h"
#include "bitswitch/util/error.h"

namespace bitswitch::train {

int64_t recalibrate_bn(models::ModelImpl& model, data::BatchSource& loader, const std::vector<nn::BitConfig>& configs,
                       int64_t max_batches, Distributed* dist) {
  BS_CHECK(max_batches >= 0, "BN calibration: batches must be >= 0, got ", max_batches);
  torch::NoGradGuard ng;
  const bool was_training = model.is_training();
  const auto device = model.parameters().empty() ? torch::Device(torch::kCPU) : model.parameters().front().device();
  int64_t images = 0;
  for (const auto& config : configs) {
    nn::apply_bits(model, config);
    nn::set_integer_eval(model, false);
    // The BNs this configuration uses, switched to cumulative averaging from zero.
    std::vector<torch::nn::BatchNorm2d> active;
    std::vector<c10::optional<double>> momenta;
    for (const auto& m : model.modules(false)) {
      auto sbn = std::dynamic_pointer_cast<nn::SwitchableBatchNorm2dImpl>(m);
      if (!sbn) continue;
      auto bn = sbn->bn_for_key(sbn->active_key());
      momenta.push_back(bn->options.momentum());
      bn->options.momentum(c10::nullopt);
      bn->reset_running_stats();
      active.push_back(bn);
    }
    BS_CHECK(!active.empty(), "BN calibration: the model has no switchable BatchNorm layers");
    // Train mode makes BN normalise with batch statistics and accumulate them; nothing else in
    // these models depends on the mode (the quantizers' scales are already initialised).
    model.train(true);
    images = 0;
    int64_t n = 0;
    data::Batch b;
    loader.start_epoch(0);
    while ((max_batches == 0 || n < max_batches) && loader.next(b)) {
      model.forward(b.images.to(device));
      images += b.images.size(0);
      ++n;
    }
    BS_CHECK(n > 0, "BN calibration: the calibration data yielded no batch");
    for (size_t i = 0; i < active.size(); ++i) {
      auto& bn = active[i];
      if (dist && dist->active()) {
        for (auto* t : {&bn->running_mean, &bn->running_var}) {
          dist->all_reduce_sum(*t, "BN calibration");
          t->div_(dist->world_size());
        }
      }
      bn->options.momentum(momenta[i]);
    }
  }
  model.train(was_training);
  return images;
}

}  // namespace bitswitch::train
