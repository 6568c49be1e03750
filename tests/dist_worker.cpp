// One rank of a small data-parallel training job, for the multi-process tests
// (test_distributed.cpp). Rank and peers come from RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (none
// set: one process). It trains a BatchNorm-free quantized network (so that a rank's local batch
// gives exactly its share of the global-batch gradient) for STEPS steps of per-width joint
// training (a step per width, highest first, SGD without momentum) on a synthetic dataset
// through the sharded loader, and saves its parameters before and after:
//   OUT.init.<rank>.pt and OUT.final.<rank>.pt
// Usage: dist_worker OUT STEPS [--widths 8,4|fp] [--timeout S] [--bucket-bytes N] [--die-at STEP]
//                    [--stall-at STEP] [--image-folder DIR]
//   --die-at: rank 1 kills itself (SIGKILL) at that step; --stall-at: rank 1 sleeps forever there.
//   --image-folder: train on the JPEGs of DIR/train (16x16 RandomResizedCrop + flip, sharded
//     ImageFolderLoader) instead of the synthetic data, and evaluate DIR/val sharded and reduced
//     (eval::evaluate) before and after training into OUT.eval.<rank>.json.
//        dist_worker --trainer DATA_DIR OUT: the real trainer (train::run_training) on the image
//     folder DATA_DIR, smallcnn, FP32 epoch + one joint epoch at 8,4 bits, run directory OUT.
#include <torch/torch.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "bitswitch/data/image_folder.h"
#include "bitswitch/data/loader.h"
#include "bitswitch/eval/evaluate.h"
#include "bitswitch/models/model.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/train/distributed.h"
#include "bitswitch/train/trainer.h"
#include "bitswitch/util/error.h"

using namespace bitswitch;

namespace {

struct TinyNetImpl : models::ModelImpl {
  explicit TinyNetImpl(int64_t in_channels = 1) {
    const std::vector<int> bits{8, 4};
    c1 = register_module("c1", nn::QConv2d(nn::QConv2dOptions(in_channels, 4, 3).padding(1).bias(true).quant(
                                   nn::QuantOptions().bits(bits).fixed_bits(nn::kFloatBits).quantize_input(false))));
    c2 = register_module("c2", nn::QConv2d(nn::QConv2dOptions(4, 8, 3).padding(1).bias(true).quant(
                                   nn::QuantOptions().bits(bits))));
    fc = register_module("fc", nn::QLinear(nn::QLinearOptions(8, 10).quant(nn::QuantOptions().bits(bits))));
  }
  torch::Tensor forward(const torch::Tensor& x) override {
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

nlohmann::json eval_json(const eval::EvalResult& r) {
  return {{"accuracy", r.accuracy}, {"loss", r.loss}, {"count", r.count}};
}

// The trainer itself on an image folder, with its own run directory `out`.
int run_trainer(const std::string& data_dir, const std::string& out) {
  train::TrainConfig c;
  c.model = "smallcnn";
  c.dataset = "imagefolder";
  c.data_dir = data_dir;
  c.image_size = 16;
  c.workers = 1;
  c.batch = 8;
  c.bits = {8, 4};
  c.fp_epochs = 1;
  c.epochs = 1;
  c.threads = 1;
  c.log_interval = 1000;
  c.dist_timeout = 60;
  c.out = out;
  const auto r = train::run_training(c);
  return r.finished ? 0 : 1;
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
  std::string image_folder;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--timeout") timeout = std::stod(argv[i + 1]);
    else if (k == "--bucket-bytes") bucket_bytes = std::stoll(argv[i + 1]);
    else if (k == "--die-at") die_at = std::stoi(argv[i + 1]);
    else if (k == "--stall-at") stall_at = std::stoi(argv[i + 1]);
    else if (k == "--image-folder") image_folder = argv[i + 1];
    else if (k == "--widths") widths = std::string(argv[i + 1]) == "fp" ? std::vector<int>{nn::kFloatBits} : nn::parse_bit_list(argv[i + 1], "--widths");
    else fail("dist_worker: unknown option ", k);
  }
  torch::set_num_threads(1);
  train::Distributed dist(train::dist_options_from_env(timeout, "cpu"));
  const auto dataset = synthetic();
  torch::manual_seed(7);
  TinyNet net(image_folder.empty() ? 1 : 3);
  dist.broadcast_module(*net);
  save_params(net, out + ".init." + std::to_string(dist.rank()) + ".pt");

  std::unique_ptr<data::BatchSource> loader_owned, val;
  if (image_folder.empty()) {
    data::LoaderOptions lo;
    lo.batch_size = 16;  // the global batch
    lo.shuffle = true;
    lo.drop_last = true;
    lo.augment = {1, true};
    lo.seed = 5;
    lo.shard_rank = dist.rank();
    lo.shard_count = dist.world_size();
    loader_owned = std::make_unique<data::Loader>(dataset, lo);
  } else {
    data::ImageFolderOptions io;
    io.batch_size = 8;  // the global batch
    io.train = true;
    io.crop = 16;
    io.resize = 18;
    io.threads = 1;
    io.prefetch = 2;
    io.seed = 5;
    io.shard_rank = dist.rank();
    io.shard_count = dist.world_size();
    loader_owned = std::make_unique<data::ImageFolderLoader>(data::scan_image_folder(image_folder + "/train"), io);
    io.train = false;
    io.batch_size = 4;  // the validation split's last batch is partial
    val = std::make_unique<data::ImageFolderLoader>(data::scan_image_folder(image_folder + "/val"), io);
  }
  data::BatchSource& loader = *loader_owned;
  eval::SumReduce reduce;
  if (dist.active()) reduce = [&dist](torch::Tensor& t) { dist.all_reduce_sum(t, "evaluation"); };
  nlohmann::json evals;
  if (val) evals["init_fp32"] = eval_json(eval::evaluate(*net, *val, nn::BitConfig::fp32(), reduce));

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
  if (val) {
    evals["final_fp32"] = eval_json(eval::evaluate(*net, *val, nn::BitConfig::fp32(), reduce));
    evals["final_w4"] = eval_json(eval::evaluate(*net, *val, nn::BitConfig::uniform(4), reduce));
    std::ofstream(out + ".eval." + std::to_string(dist.rank()) + ".json") << evals.dump() << "\n";
  }
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
    if (argc == 4 && std::string(argv[1]) == "--trainer") return run_trainer(argv[2], argv[3]);
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dist_worker: error: %s\n", e.what());
    return 1;
  }
}
