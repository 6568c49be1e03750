// Implements evaluate.h: top-1 accuracy and mean cross-entropy over a batch source, with
// integer-exact evaluation of quantized configurations and exact cross-process sums.
#include "bitswitch/eval/evaluate.h"

#include <torch/torch.h>

#include "bitswitch/nn/layers.h"

namespace bitswitch::eval {

bool is_channels_last(torch::nn::Module& model) {
  for (const auto& p : model.parameters())
    if (p.dim() == 4 && !p.is_contiguous()) return p.is_contiguous(torch::MemoryFormat::ChannelsLast);
  return false;
}

torch::Tensor in_layout(const torch::Tensor& images, bool channels_last) {
  return channels_last && images.dim() == 4 ? images.contiguous(torch::MemoryFormat::ChannelsLast) : images;
}

EvalResult evaluate(models::ModelImpl& model, data::BatchSource& loader, const nn::BitConfig& bits,
                    const SumReduce& reduce) {
  torch::NoGradGuard ng;
  const bool was_training = model.is_training();
  model.eval();
  nn::apply_bits(model, bits);
  // Quantized widths are evaluated with the deploy runtime's arithmetic, so the accuracy reported
  // here is the accuracy of the exported integer model (nn::set_integer_eval).
  nn::set_integer_eval(model, !(bits.is_uniform() && bits.default_bits() == nn::kFloatBits));
  EvalResult r;
  double loss_sum = 0;
  int64_t correct = 0;
  data::Batch b;
  loader.start_epoch(0);
  const auto device = model.parameters().empty() ? torch::Device(torch::kCPU) : model.parameters().front().device();
  const bool channels_last = is_channels_last(model);
  while (loader.next(b)) {
    const auto labels = b.labels.to(device);
    auto logits = model.forward(in_layout(b.images.to(device), channels_last));
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
    r.count += b.labels.size(0);
  }
  nn::set_integer_eval(model, false);
  model.train(was_training);
  if (reduce) {
    // Exact sums: counts are integers well below 2^53, the loss sum is summed in float64.
    auto t = torch::tensor({loss_sum, double(correct), double(r.count)}, torch::kFloat64);
    reduce(t);
    loss_sum = t[0].item<double>();
    correct = static_cast<int64_t>(t[1].item<double>());
    r.count = static_cast<int64_t>(t[2].item<double>());
  }
  r.accuracy = r.count ? 100.0 * correct / r.count : 0;
  r.loss = r.count ? loss_sum / r.count : 0;
  return r;
}

}  // namespace bitswitch::eval
