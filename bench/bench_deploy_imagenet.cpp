// ImageNet-scale deployment benchmark (issue 11): ResNet-18, ResNet-50 and MobileNetV2 on
// 3x224x224 images, 1000 classes, exported from the registry's models (scales and BN statistics
// from training-mode forwards of random images; speed does not depend on the values), run by the
// integer runtime at 8, 4 and 2 bits and by LibTorch FP32 (eval mode, full precision), batch 1
// (latency) and batch 16 (throughput), 1 and 2 threads, interleaved in one run. Reports
// milliseconds per batch, images/s, GMAC/s (multiply-accumulates of the convs and linears per
// image, from the layers' own counts) and the runtime's resident weight bytes per width.
// Prints one JSON object. Usage: bench_deploy_imagenet [--quick] [--models resnet18,resnet50,...]
#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bitswitch/deploy/artifact.h"
#include "bitswitch/deploy/export.h"
#include "bitswitch/deploy/runtime.h"
#include "bitswitch/models/model.h"
#include "bitswitch/nn/layers.h"

using namespace bitswitch;
using json = nlohmann::json;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <typename F>
double median_ms(F&& fn, int reps) {
  fn();  // warm-up
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_ms();
    fn();
    t.push_back(now_ms() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::vector<std::string> names = {"resnet18", "resnet50", "mobilenetv2"};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--models" && i + 1 < argc) {
      names.clear();
      std::stringstream ss(argv[++i]);
      for (std::string n; std::getline(ss, n, ',');) names.push_back(n);
    } else {
      std::cerr << "usage: bench_deploy_imagenet [--quick] [--models resnet18,resnet50,mobilenetv2]\n"
                   "  Prints one JSON object of timings (stderr: one line per row).\n";
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  torch::manual_seed(0);
  json out = {{"image", {3, 224, 224}}, {"models", json::array()}};
  for (const auto& name : names) {
    models::ModelSpec spec;
    spec.name = name;
    spec.in_channels = 3;
    spec.num_classes = 1000;
    spec.bits = {8, 6, 4, 2};
    auto model = models::create_model(spec);
    torch::NoGradGuard ng;
    at::set_num_threads(2);
    model->train();
    const auto calib = torch::randn({2, 3, 224, 224});
    for (int w : spec.bits) {
      nn::apply_bits(*model, nn::BitConfig::uniform(w));
      model->forward(calib);
    }
    model->eval();
    const auto master = deploy::export_model(*model, spec);
    // FP32 reference model and the per-image MACs from the layers' own counts.
    nn::apply_bits(*model, nn::BitConfig::uniform(nn::kFloatBits));
    model->forward(torch::randn({1, 3, 224, 224}));
    int64_t macs = 0;
    for (const auto& m : model->modules(false))
      if (auto q = std::dynamic_pointer_cast<nn::QuantLayer>(m)) macs += q->macs_per_sample();
    json jm = {{"model", name}, {"macs_per_image", macs}, {"runs", json::array()}, {"weight_bytes", json::object()}};
    std::vector<std::pair<int, deploy::Artifact>> switched;
    for (int b : {8, 4, 2}) switched.emplace_back(b, deploy::switch_uniform(master, b));
    for (int threads : {1, 2}) {
      at::set_num_threads(threads);
      std::vector<std::unique_ptr<deploy::Runtime>> rts;
      for (const auto& [b, s] : switched) {
        deploy::RuntimeOptions ro;
        ro.threads = threads;
        rts.push_back(std::make_unique<deploy::Runtime>(s, ro));
        jm["weight_bytes"][std::to_string(b)] = rts.back()->weight_bytes();
      }
      for (int batch : {1, 16}) {
        const auto x = torch::randn({batch, 3, 224, 224});
        const int reps = batch == 1 ? (quick ? 3 : 7) : (quick ? 1 : 3);
        auto record = [&](const std::string& variant, int bits, double ms) {
          jm["runs"].push_back({{"variant", variant}, {"bits", bits}, {"threads", threads}, {"batch", batch},
                                {"ms_per_batch", ms}, {"images_per_s", 1000.0 * batch / ms},
                                {"gmac_per_s", double(macs) * batch / ms / 1e6}});
          std::cerr << name << " " << variant << " w" << bits << " t" << threads << " b" << batch << ": " << ms
                    << " ms\n";
        };
        record("libtorch_fp32", 32, median_ms([&] { model->forward(x); }, reps));
        std::vector<float> logits(size_t(batch) * 1000);
        for (size_t k = 0; k < rts.size(); ++k)
          record("bitswitch_int", switched[k].first,
                 median_ms([&] { rts[k]->forward(x.data_ptr<float>(), batch, 224, 224, logits.data()); }, reps));
      }
      jm["isa"] = deploy::qgemm_isa_name(rts.front()->isa());
    }
    out["models"].push_back(jm);
  }
  std::cout << out.dump(2) << std::endl;
  return 0;
}
