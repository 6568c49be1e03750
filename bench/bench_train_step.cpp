// Joint-training step time: one iteration over {8,6,4,2} (four forward/backward/step passes,
// highest first) against four plain FP32 steps on the same batches, ResNet-20, batch 128,
// with the fused quantizer kernels and with the composed-ATen reference. Rounds alternate
// between the variants so that machine noise hits all of them alike.
// With --channels-last every variant runs in the NHWC layout (the trainer's default).
// --device cuda times on the GPU (synchronised before each clock read); --model resnet18
// --image 224 --classes 1000 runs an ImageNet-sized network on synthetic images (random pixels
// and labels: a step's time does not depend on them), e.g. the GPU check (scripts/gpu_check.sh).
// Usage: bench_train_step [--rounds N] [--steps N] [--threads N] [--channels-last]
//                         [--device cpu|cuda] [--model NAME --image PX --classes N] [--batch N]
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "bitswitch/data/datasets.h"
#include "bitswitch/data/loader.h"
#include "bitswitch/models/model.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/train/layout.h"
#include "bitswitch/train/step.h"
#include "bitswitch/util/allocator.h"

using namespace bitswitch;

namespace {
struct Variant {
  std::string name;
  models::Model model;
  std::vector<torch::Tensor> params;
  std::unique_ptr<torch::optim::Adam> opt;
  bool quantized;
  std::vector<double> ms;
};

std::string fmt_size(int image, int classes) {
  return "synthetic " + std::to_string(image) + "x" + std::to_string(image) + " RGB, " + std::to_string(classes) +
         " classes";
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  int rounds = 5, steps = 5, threads = 0, batch = 128, image = 0, classes = 1000;
  std::string device_name = "cpu", model = "resnet20";
  bool channels_last = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--channels-last")) {
      channels_last = true;
      continue;
    }
    if (i + 1 >= argc) break;
    if (!std::strcmp(argv[i], "--rounds")) rounds = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--device")) device_name = argv[++i];
    else if (!std::strcmp(argv[i], "--model")) model = argv[++i];
    else if (!std::strcmp(argv[i], "--image")) image = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--classes")) classes = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[++i]);
  }
  const bool synthetic = image > 0;  // otherwise Fashion-MNIST batches
  const torch::Device device(device_name);
  const bool cuda = device.is_cuda();
  if (cuda && !torch::cuda::is_available()) {
    std::fprintf(stderr, "bench_train_step: --device %s, but LibTorch sees no GPU\n", device_name.c_str());
    return 1;
  }
  auto sync = [&] {
    if (cuda) torch::cuda::synchronize();
  };
  const auto layout = channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
  bitswitch::tune_allocator_for_training();  // as the bitswitch CLI does
  if (threads > 0) torch::set_num_threads(threads);
  std::vector<data::Batch> batches(steps);
  if (synthetic) {
    torch::manual_seed(1);
    for (auto& b : batches) {
      b.images = torch::rand({batch, 3, image, image});
      b.labels = torch::randint(classes, {batch}, torch::kInt64);
    }
  } else {
    auto data = data::load_fashion_mnist();
    data::LoaderOptions lo;
    lo.batch_size = batch;
    lo.shuffle = true;
    lo.augment = {2, true};
    data::Loader loader(data.train, lo);
    loader.start_epoch(0);
    for (auto& b : batches) loader.next(b);
  }
  for (auto& b : batches) {
    b.images = b.images.to(device).contiguous(layout);
    b.labels = b.labels.to(device);
  }

  std::vector<Variant> variants;
  for (auto [name, impl, q] : {std::tuple{"fp32 x4", quant::Impl::kAuto, false},
                               std::tuple{"joint {8,6,4,2} fused", quant::Impl::kFused, true},
                               std::tuple{"joint {8,6,4,2} reference", quant::Impl::kReference, true}}) {
    models::ModelSpec spec;
    spec.impl = impl;
    spec.name = model;
    if (synthetic) spec.in_channels = 3, spec.num_classes = classes;
    torch::manual_seed(0);
    Variant v{name, models::create_model(spec), {}, nullptr, q, {}};
    v.model->to(device);
    if (channels_last) train::to_channels_last(*v.model);
    v.params = v.model->parameters();
    v.opt = std::make_unique<torch::optim::Adam>(v.params, torch::optim::AdamOptions(1e-4));
    variants.push_back(std::move(v));
  }
  const std::vector<int> bits = {8, 6, 4, 2};
  auto step = [&](Variant& v, const data::Batch& b) {
    for (int w : bits) {
      nn::apply_bits(*v.model, nn::BitConfig::uniform(v.quantized ? w : nn::kFloatBits));
      train::clear_grads(v.params);  // as the trainer does: only this width's parameters step
      auto loss = torch::cross_entropy_loss(v.model->forward(b.images), b.labels);
      loss.backward();
      v.opt->step();
    }
  };
  for (auto& v : variants) step(v, batches[0]);  // warm-up, scale initialisation
  sync();
  for (int r = 0; r < rounds; ++r) {
    for (auto& v : variants) {
      for (const auto& b : batches) {
        auto t0 = std::chrono::steady_clock::now();
        step(v, b);
        sync();
        v.ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
    }
  }
  const double base = median(variants[0].ms);
  const std::string data_name = synthetic ? fmt_size(image, classes) : std::string("Fashion-MNIST 28x28");
  std::printf("device %s, threads %d, batch %d, %s on %s, %s, %d rounds x %d steps\n", device.str().c_str(),
              torch::get_num_threads(), batch, model.c_str(), data_name.c_str(),
              channels_last ? "channels-last (NHWC)" : "NCHW", rounds, steps);
  std::printf("| variant | median ms per iteration (4 passes) | vs fp32 x4 |\n|---|---|---|\n");
  for (const auto& v : variants)
    std::printf("| %s | %.1f | %+.1f%% |\n", v.name.c_str(), median(v.ms), 100.0 * (median(v.ms) / base - 1.0));
  return 0;
}
