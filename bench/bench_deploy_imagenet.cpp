// ImageNet-scale deployment benchmark (issue 11): ResNet-18, ResNet-50 and MobileNetV2 on
// 3x224x224 images, 1000 classes, exported from the registry's models (scales and BN statistics
// from training-mode forwards of random images; speed does not depend on the values), run by the
// integer runtime at 8, 4 and 2 bits and by LibTorch FP32 (eval mode, full precision), batch 1
// (latency) and batch 16 (throughput), 1 and 2 threads, interleaved in one run. Reports
// milliseconds per batch, images/s, GMAC/s (multiply-accumulates of the convs and linears per
// image, from the layers' own counts) and the runtime's resident weight bytes per width.
// Also at 8 bits the all-integer variant: the same network with first_last_bits 8 and
// quantize_image, whose first conv (its input the quantized image) and classifier run as integer
// GEMMs, as torch.ao's quantized models do ("bitswitch_int_all8").
// Prints one JSON object. Usage: bench_deploy_imagenet [--quick] [--models resnet18,resnet50,...]
// With --profile: the runtime's per-step times of one model, width, thread count and batch
// (RuntimeOptions::profile), as a text table, e.g.
//   bench_deploy_imagenet --profile --models resnet50 --bits 8 --threads 1 --batch 16 --reps 5
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
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

// The per-step profile of `rt` over `reps` calls of `batch` images (after one warm-up call).
void print_profile(deploy::Runtime& rt, int batch, int reps, int size = 224) {
  std::vector<float> x(size_t(batch) * size_t(rt.in_channels()) * size * size),
      logits(size_t(batch) * size_t(rt.num_classes()));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float((i * 2654435761u) % 1000) / 500.0f - 1.0f;
  rt.forward(x.data(), batch, size, size, logits.data());
  rt.reset_profile();
  const double t0 = now_ms();
  for (int r = 0; r < reps; ++r) rt.forward(x.data(), batch, size, size, logits.data());
  const double wall = (now_ms() - t0) / reps;
  double total = 0;
  const auto prof = rt.profile();
  for (const auto& p : prof) total += p.thread_ms;
  std::printf("%-8s %-6s %-8s %s\n", "ms/img", "%", "GMAC/s", "step");
  for (const auto& p : prof) {
    if (p.images == 0) continue;
    const double ms = p.thread_ms / double(p.images);
    std::printf("%8.3f %5.1f%% ", ms, 100.0 * p.thread_ms / total);
    if (p.macs > 0) std::printf("%8.1f ", double(p.macs) / ms / 1e6);
    else std::printf("%8s ", "");
    std::printf("%s\n", p.step.c_str());
  }
  std::printf("wall %.2f ms per call of %d images (%.3f ms/img); steps summed over threads %.3f ms/img\n", wall,
              batch, wall / batch, total / reps / batch);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, profile = false, all8_only = false;
  int pbits = 8, pthreads = 1, pbatch = 16, preps = 5, psize = 0;
  std::string partifact;
  std::vector<int> ptiles;
  std::vector<std::string> names = {"resnet18", "resnet50", "mobilenetv2"};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto num = [&](int& v) {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      v = std::stoi(argv[++i]);
    };
    if (a == "--quick") quick = true;
    else if (a == "--profile") profile = true;
    else if (a == "--all8") all8_only = true;
    else if (a == "--artifact" && i + 1 < argc) partifact = argv[++i];
    else if (a == "--size") num(psize);
    else if (a == "--bits") num(pbits);
    else if (a == "--threads") num(pthreads);
    else if (a == "--batch") num(pbatch);
    else if (a == "--reps") num(preps);
    else if (a == "--tile" && i + 1 < argc) {
      std::stringstream ss(argv[++i]);
      for (std::string t; std::getline(ss, t, ',');) ptiles.push_back(std::stoi(t));
    }
    else if (a == "--models" && i + 1 < argc) {
      names.clear();
      std::stringstream ss(argv[++i]);
      for (std::string n; std::getline(ss, n, ',');) names.push_back(n);
    } else {
      std::cerr << "usage: bench_deploy_imagenet [--quick] [--models resnet18,resnet50,mobilenetv2]\n"
                   "  Prints one JSON object of timings (stderr: one line per row).\n"
                   "       bench_deploy_imagenet --profile [--models M] [--bits 8] [--threads 1] [--batch 16]\n"
                   "                             [--reps 5] [--tile T[,T2,...]] [--all8]\n"
                   "  Prints the runtime's per-step times of the first model (ms per image, share,\n"
                   "  GMAC/s of conv/linear steps); with several tiles (images per working tile),\n"
                   "  instead the median and best ms per call of each and their per-step times side\n"
                   "  by side, their calls alternating. --all8: the all-integer network (first_last_bits 8,\n"
                   "  quantize_image).\n"
                   "       bench_deploy_imagenet --profile --artifact M.safetensors --size S [--bits 8] [--threads 1]\n"
                   "                             [--batch 16] [--reps 5]\n"
                   "  The same profile of any artifact (a master artifact at --bits) on S x S images.\n";
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  if (profile && !partifact.empty()) {
    if (psize <= 0) {
      std::cerr << "bench_deploy_imagenet: --artifact needs --size (the image side)\n";
      return 2;
    }
    const auto a = deploy::read_artifact(partifact);
    deploy::RuntimeOptions ro;
    ro.threads = pthreads;
    ro.profile = true;
    if (!ptiles.empty()) ro.tile = ptiles.front();
    deploy::Runtime rt(a.master ? deploy::switch_uniform(a, pbits) : a, ro);
    std::printf("%s, %d thread(s), batch %d, %d calls, %dx%d images, GEMM path %s\n", partifact.c_str(), pthreads,
                pbatch, preps, psize, psize, deploy::qgemm_isa_name(rt.isa()));
    print_profile(rt, pbatch, preps, psize);
    return 0;
  }
  torch::manual_seed(0);
  json out = {{"image", {3, 224, 224}}, {"models", json::array()}};
  for (const auto& name : names) {
    models::ModelSpec spec;
    spec.name = name;
    spec.in_channels = 3;
    spec.num_classes = 1000;
    spec.bits = {8, 6, 4, 2};
    if (all8_only) spec.first_last_bits = 8, spec.quantize_image = true;
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
    if (profile && ptiles.size() > 1) {
      const auto art = deploy::switch_uniform(master, pbits);
      std::vector<std::unique_ptr<deploy::Runtime>> rts;
      for (int t : ptiles) {
        deploy::RuntimeOptions ro;
        ro.threads = pthreads;
        ro.tile = t;
        ro.profile = true;
        rts.push_back(std::make_unique<deploy::Runtime>(art, ro));
      }
      std::vector<float> x(size_t(pbatch) * 3 * 224 * 224), logits(size_t(pbatch) * 1000);
      for (size_t i = 0; i < x.size(); ++i) x[i] = float((i * 2654435761u) % 1000) / 500.0f - 1.0f;
      std::vector<std::vector<double>> ms(rts.size());
      for (int r = 0; r <= preps; ++r)
        for (size_t k = 0; k < rts.size(); ++k) {
          const double t0 = now_ms();
          rts[k]->forward(x.data(), pbatch, 224, 224, logits.data());
          if (r > 0) ms[k].push_back(now_ms() - t0);  // call 0 warms up
          if (r == 0) rts[k]->reset_profile();
        }
      std::printf("%s w%d, %d thread(s), batch %d, %d alternating calls per tile\n", name.c_str(), pbits, pthreads,
                  pbatch, preps);
      for (size_t k = 0; k < rts.size(); ++k) {
        std::sort(ms[k].begin(), ms[k].end());
        std::printf("tile %d: median %.2f ms, best %.2f ms per call\n", ptiles[k], ms[k][ms[k].size() / 2],
                    ms[k].front());
      }
      // Per step: ms per image of each tile, side by side.
      std::vector<std::vector<deploy::StepProfile>> profs;
      for (const auto& rt : rts) profs.push_back(rt->profile());
      for (int t : ptiles) std::printf("tile %-4d ", t);
      std::printf("step (ms per image)\n");
      for (size_t i = 0; i < profs[0].size(); ++i) {
        if (profs[0][i].images == 0) continue;
        for (const auto& p : profs) std::printf("%9.3f ", p[i].thread_ms / double(std::max<int64_t>(1, p[i].images)));
        std::printf("%s\n", profs[0][i].step.c_str());
      }
      return 0;
    }
    if (profile) {
      deploy::RuntimeOptions ro;
      ro.threads = pthreads;
      ro.profile = true;
      if (!ptiles.empty()) ro.tile = ptiles.front();
      deploy::Runtime rt(deploy::switch_uniform(master, pbits), ro);
      std::printf("%s w%d, %d thread(s), batch %d, %d calls, GEMM path %s\n", name.c_str(), pbits, pthreads, pbatch,
                  preps, deploy::qgemm_isa_name(rt.isa()));
      print_profile(rt, pbatch, preps);
      return 0;
    }
    // FP32 reference model and the per-image MACs from the layers' own counts.
    nn::apply_bits(*model, nn::BitConfig::uniform(nn::kFloatBits));
    model->forward(torch::randn({1, 3, 224, 224}));
    int64_t macs = 0;
    for (const auto& m : model->modules(false))
      if (auto q = std::dynamic_pointer_cast<nn::QuantLayer>(m)) macs += q->macs_per_sample();
    json jm = {{"model", name}, {"macs_per_image", macs}, {"runs", json::array()}, {"weight_bytes", json::object()}};
    std::vector<std::pair<int, deploy::Artifact>> switched;
    for (int b : {8, 4, 2}) switched.emplace_back(b, deploy::switch_uniform(master, b));
    // The all-integer network at 8 bits (its own export: other first/last layers).
    deploy::Artifact all8;
    {
      models::ModelSpec spec8 = spec;
      spec8.first_last_bits = 8;
      spec8.quantize_image = true;
      auto model8 = models::create_model(spec8);
      model8->train();
      for (int w : spec8.bits) {
        nn::apply_bits(*model8, nn::BitConfig::uniform(w));
        model8->forward(calib);
      }
      model8->eval();
      all8 = deploy::switch_uniform(deploy::export_model(*model8, spec8), 8);
    }
    for (int threads : {1, 2}) {
      at::set_num_threads(threads);
      std::vector<std::unique_ptr<deploy::Runtime>> rts;
      deploy::RuntimeOptions ro;
      ro.threads = threads;
      for (const auto& [b, s] : switched) {
        rts.push_back(std::make_unique<deploy::Runtime>(s, ro));
        jm["weight_bytes"][std::to_string(b)] = rts.back()->weight_bytes();
      }
      const deploy::Runtime rt_all8(all8, ro);
      jm["weight_bytes_all8"] = rt_all8.weight_bytes();
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
        record("bitswitch_int_all8", 8,
               median_ms([&] { rt_all8.forward(x.data_ptr<float>(), batch, 224, 224, logits.data()); }, reps));
      }
      jm["isa"] = deploy::qgemm_isa_name(rts.front()->isa());
    }
    out["models"].push_back(jm);
  }
  std::cout << out.dump(2) << std::endl;
  return 0;
}
