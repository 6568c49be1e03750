// One rank of a small data-parallel training job, for the multi-process tests
// (test_distributed.cpp). Rank and peers come from RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (none
// set: one process). It trains a BatchNorm-free quantized network (so that a rank's local batch
// gives exactly its share of the global-batch gradient) for STEPS steps of per-width joint
// training (a step per width, highest first, SGD without momentum) on a synthetic dataset
// through the sharded loader, and saves its parameters before and after:
//   OUT.init.<rank>.pt and OUT.final.<rank>.pt
// Usage: dist_worker OUT STEPS [--widths 8,4|fp] [--timeout S] [--bucket-bytes N] [--die-at STEP]
//                    [--stall-at STEP]
//   --die-at: rank 1 kills itself (SIGKILL) at that step; --stall-at: rank 1 sleeps forever there.
#include <torch/torch.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

#include "bitswitch/data/loader.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/train/distributed.h"
#include "bitswitch/util/error.h"

using namespace bitswitch;

namespace {

struct TinyNetImpl : torch::nn::Module {
  TinyNetImpl() {
    const std::vector<int> bits{8, 4};
    c1 = register_module("c1", nn::QConv2d(nn::QConv2dOptions(1, 4, 3).padding(1).bias(true).quant(
                                   nn::QuantOptions().bits(bits).fixed_bits(nn::kFloatBits).quantize_input(false))));
    c2 = register_module("c2", nn::QConv2d(nn::QConv2dOptions(4, 8, 3).padding(1).bias(true).quant(
                                   nn::QuantOptions().bits(bits))));
    fc = register_module("fc", nn::QLinear(nn::QLinearOptions(8, 10).quant(nn::QuantOptions().bits(bits))));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = torch::relu(c1->forward(x));
    h = torch::relu(c2->forward(h));
    return fc->forward(torch::adaptive_avg_pool2d(h, {1, 1}).flatten(1));
  }
  nn::QConv2d c1{nullptr}, c2{nullptr};
  nn::QLinear fc{nullptr};
};
TORCH_MODULE(TinyNet);

data::Dataset synthetic() {
  torch::manual_seed(123);
  data::Dataset d;
  d.name = "synthetic";
  d.images = torch::randint(0, 256, {96, 1, 8, 8}, torch::kInt64).to(torch::kUInt8).contiguous();
  d.labels = torch::randint(0, 10, {96}, torch::kInt64).contiguous();
  d.num_classes = 10;
  d.mean = {0.5f};
  d.std = {0.25f};
  return d;
}

void save_params(TinyNet& net, const std::string& path) {
  std::vector<torch::Tensor> ts;
  for (const auto& p : net->parameters()) ts.push_back(p.detach().clone());
  torch::save(ts, path);
}

int run(int argc, char** argv) {
  BS_CHECK(argc >= 3, "usage: dist_worker OUT STEPS [--timeout S] [--bucket-bytes N] [--die-at STEP] [--stall-at STEP]");
  const std::string out = argv[1];
  const int steps = std::stoi(argv[2]);
  double timeout = 30;
  int64_t bucket_bytes = 256;  // small: several buckets even for this net
  int die_at = -1, stall_at = -1;
  std::vector<int> widths{8, 4};
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--timeout") timeout = std::stod(argv[i + 1]);
    else if (k == "--bucket-bytes") bucket_bytes = std::stoll(argv[i + 1]);
    else if (k == "--die-at") die_at = std::stoi(argv[i + 1]);
    else if (k == "--stall-at") stall_at = std::stoi(argv[i + 1]);
    else if (k == "--widths") widths = std::string(argv[i + 1]) == "fp" ? std::vector<int>{nn::kFloatBits} : nn::parse_bit_list(argv[i + 1], "--widths");
    else fail("dist_worker: unknown option ", k);
  }
  torch::set_num_threads(1);
  train::Distributed dist(train::dist_options_from_env(timeout, "cpu"));
  const auto dataset = synthetic();
  torch::manual_seed(7);
  TinyNet net;
  dist.broadcast_module(*net);
  save_params(net, out + ".init." + std::to_string(dist.rank()) + ".pt");

  data::LoaderOptions lo;
  lo.batch_size = 16;  // the global batch
  lo.shuffle = true;
  lo.drop_last = true;
  lo.augment = {1, true};
  lo.seed = 5;
  lo.shard_rank = dist.rank();
  lo.shard_count = dist.world_size();
  data::Loader loader(dataset, lo);

  auto params = net->parameters();
  torch::optim::SGD opt(params, torch::optim::SGDOptions(0.05));
  train::GradBucketer bucketer(dist, params, bucket_bytes);
  train::ActInitAveraging act_init(dist);
  data::Batch b;
  int step = 0;
  for (int64_t epoch = 0; step < steps; ++epoch) {
    loader.start_epoch(epoch);
    while (step < steps && loader.next(b)) {
      if (dist.rank() == 1 && step == die_at) std::raise(SIGKILL);
      if (dist.rank() == 1 && step == stall_at)
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
      for (int w : widths) {
        nn::apply_bits(*net, nn::BitConfig::uniform(w));
        for (auto& p : params) p.mutable_grad().reset();
        auto loss = torch::cross_entropy_loss(net->forward(b.images), b.labels);
        bucketer.prepare(loss);
        loss.backward();
        bucketer.finish();
        opt.step();
      }
      ++step;
    }
  }
  dist.check_replicas_equal(*net, "at the end");
  save_params(net, out + ".final." + std::to_string(dist.rank()) + ".pt");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 4 && std::string(argv[1]) == "--compare") {
      // Diagnostics: the largest difference per parameter between two saved parameter files.
      std::vector<torch::Tensor> a, b;
      torch::load(a, argv[2]);
      torch::load(b, argv[3]);
      BS_CHECK(a.size() == b.size(), "different parameter counts");
      for (size_t i = 0; i < a.size(); ++i)
        std::printf("%zu %s max|a-b| %.3g max|a| %.3g\n", i, c10::str(a[i].sizes()).c_str(),
                    (a[i] - b[i]).abs().max().item<double>(), a[i].abs().max().item<double>());
      return 0;
    }
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dist_worker: error: %s\n", e.what());
    return 1;
  }
}
