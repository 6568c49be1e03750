// Deployment benchmark (issue: one INT8 artifact, integer switching, integer runtime):
//   1. bytes on disk: FP32 checkpoint, INT8 master artifact, switched 8/6/4/3/2-bit artifacts;
//   2. switching time INT8 -> each width for the checkpoint's model and a ResNet-18-sized
//      artifact (11.7M weights in ResNet-18's conv shapes, random codes);
//   3. latency (batch 1) and throughput (batch 64) of the integer runtime at 8/4/2 bits against
//      LibTorch FP32 inference of the same network, at 1 and 2 threads, interleaved in one run.
// Prints one JSON object. Usage: bench_deploy CHECKPOINT OUT_DIR [--quick]
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "bitswitch/deploy/artifact.h"
#include "bitswitch/deploy/export.h"
#include "bitswitch/deploy/runtime.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/train/checkpoint.h"

using namespace bitswitch;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ResNet-18's conv and fc shapes (ImageNet), as a master artifact with random 8-bit codes.
deploy::Artifact resnet18_sized() {
  deploy::Artifact a;
  a.arch = "resnet18-shapes";
  a.in_channels = 3;
  a.num_classes = 1000;
  a.bits = {8, 6, 4, 3, 2};
  a.high_bits = 8;
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> code(-128, 127);
  auto add = [&](const std::string& name, int64_t in, int64_t out, int64_t k, bool linear = false) {
    deploy::LayerRecord l;
    l.name = name;
    l.kind = linear ? deploy::LayerKind::kLinear : deploy::LayerKind::kConv;
    l.in = in, l.out = out, l.kernel = k, l.padding = k / 2;
    l.quantized = l.switchable = l.quantize_input = true;
    l.bits = 8;
    l.codes.resize(size_t(in * out * k * k));
    for (auto& c : l.codes) c = int8_t(code(rng));
    l.scale.assign(size_t(out), 0.01f);
    for (int b : a.bits) l.act_scale[b] = 0.1f;
    a.layers.push_back(std::move(l));
  };
  add("conv1", 3, 64, 7);
  int64_t in = 64;
  const int64_t widths[4] = {64, 128, 256, 512};
  for (int s = 0; s < 4; ++s)
    for (int b = 0; b < 2; ++b) {
      const std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
      add(p + "conv1", in, widths[s], 3);
      add(p + "conv2", widths[s], widths[s], 3);
      if (b == 0 && s > 0) add(p + "downsample.0", in, widths[s], 1);
      in = widths[s];
    }
  add("fc", 512, 1000, 1, true);
  return a;
}

size_t weights_of(const deploy::Artifact& a) {
  size_t n = 0;
  for (const auto& l : a.layers) n += l.quantized ? l.codes.size() : l.weight.size();
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: bench_deploy CHECKPOINT OUT_DIR [--quick]\n";
    return 2;
  }
  const std::string ckpt = argv[1], out_dir = argv[2];
  const bool quick = argc > 3 && std::string(argv[3]) == "--quick";
  const int reps = quick ? 3 : 9;
  fs::create_directories(out_dir);
  json result;

  // 1. Bytes on disk.
  const auto master = deploy::export_checkpoint(ckpt);
  const std::string master_path = (fs::path(out_dir) / "master.safetensors").string();
  deploy::write_artifact(master_path, master);
  json bytes = {{"fp32_checkpoint", fs::file_size(ckpt)}, {"int8_master", fs::file_size(master_path)}};
  train::Checkpoint ck(ckpt);
  const std::string fp32_path = (fs::path(ckpt).parent_path() / "fp32.pt").string();
  if (fs::exists(fp32_path)) bytes["fp32_model_checkpoint"] = fs::file_size(fp32_path);
  for (int b : master.bits) {
    const std::string p = (fs::path(out_dir) / ("w" + std::to_string(b) + ".safetensors")).string();
    deploy::write_artifact(p, deploy::switch_uniform(master, b));
    bytes["w" + std::to_string(b)] = fs::file_size(p);
  }
  result["bytes"] = bytes;
  result["bits_list"] = master.bits;

  // 2. Switching time (median of repetitions, 1 and 2 threads).
  json sw = json::array();
  const auto big = resnet18_sized();
  for (const auto* a : {&master, &big}) {
    for (int threads : {1, 2}) {
      for (int b : a->bits) {
        if (b == a->high_bits) continue;
        std::vector<double> t;
        for (int r = 0; r < reps; ++r) {
          const double t0 = now_ms();
          auto s = deploy::switch_uniform(*a, b, threads);
          t.push_back(now_ms() - t0);
        }
        sw.push_back({{"model", a->arch}, {"weights", weights_of(*a)}, {"threads", threads}, {"width", b}, {"ms", median(t)}});
      }
    }
  }
  result["switch"] = sw;

  // 3. Latency and throughput: runtime vs LibTorch FP32, interleaved.
  const auto spec = ck.spec();
  auto model = models::create_model(spec);
  ck.load_model(*model, true);
  model->eval();
  nn::apply_bits(*model, nn::BitConfig::fp32());
  torch::manual_seed(0);
  json speed = json::array();
  for (int threads : {1, 2}) {
    torch::set_num_threads(threads);
    for (int batch : {1, 64}) {
      const auto x = torch::randn({batch, spec.in_channels, 28, 28});
      const int iters = batch == 1 ? (quick ? 50 : 300) : (quick ? 3 : 20);
      std::vector<std::pair<std::string, std::function<void()>>> variants;
      variants.emplace_back("libtorch_fp32", [&] {
        torch::NoGradGuard ng;
        model->forward(x);
      });
      std::vector<std::unique_ptr<deploy::Runtime>> rts;
      for (int b : {8, 4, 2}) {
        deploy::RuntimeOptions ro;
        ro.threads = threads;
        rts.push_back(std::make_unique<deploy::Runtime>(deploy::switch_uniform(master, b), ro));
        auto* rt = rts.back().get();
        variants.emplace_back("int" + std::to_string(b), [rt, &x, batch] {
          std::vector<float> logits(size_t(batch) * 10);
          rt->forward(x.data_ptr<float>(), batch, 28, 28, logits.data());
        });
      }
      std::map<std::string, std::vector<double>> times;
      for (auto& [name, fn] : variants) fn();  // warm-up
      for (int round = 0; round < reps; ++round)
        for (auto& [name, fn] : variants) {
          const double t0 = now_ms();
          for (int i = 0; i < iters; ++i) fn();
          times[name].push_back((now_ms() - t0) / iters);
        }
      for (auto& [name, t] : times) {
        const double ms = median(t);
        speed.push_back({{"variant", name}, {"threads", threads}, {"batch", batch}, {"ms_per_batch", ms},
                         {"images_per_s", 1000.0 * batch / ms}});
      }
    }
  }
  result["speed"] = speed;
  std::cout << result.dump(2) << std::endl;
  return 0;
}
