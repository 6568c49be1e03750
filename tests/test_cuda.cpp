// GPU tests (docs/cuda.md): the fused CUDA quantizer kernels (quant/cuda/) against the CPU
// kernels and the composed reference (SPEC.md Sec. 2: forward bit-exact, input gradients equal,
// scale gradients within float rounding of the sums), their automatic selection for CUDA
// tensors, and training, checkpoints, resume and integer-exact evaluation with device cuda.
// Every test is skipped where LibTorch sees no GPU; the kernel tests also where the build has no
// CUDA kernels (CMake option BITSWITCH_CUDA off).
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "bitswitch/eval/evaluate.h"
#include "bitswitch/models/model.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/quant/fake_quant.h"
#include "bitswitch/train/checkpoint.h"
#include "bitswitch/train/data_sources.h"
#include "bitswitch/train/trainer.h"
#include "bitswitch/util/error.h"
#include "test_util.h"

using namespace bitswitch;
using namespace bitswitch::quant;

namespace {

#define SKIP_WITHOUT_GPU()                                                               \
  do {                                                                                   \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "LibTorch sees no GPU";            \
  } while (0)
#define SKIP_WITHOUT_CUDA_KERNELS()                                                                     \
  do {                                                                                                  \
    SKIP_WITHOUT_GPU();                                                                                 \
    if (!quant::detail::fused_supported(torch::empty({1}, torch::kCUDA)))                                      \
      GTEST_SKIP() << "built without the fused CUDA kernels (cmake -DBITSWITCH_CUDA=ON)";               \
  } while (0)

const torch::Device kCuda(torch::kCUDA, 0);

// Bit-for-bit equality (distinguishes -0 from +0 and compares NaN payloads).
::testing::AssertionResult same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  auto x = a.detach().to(torch::kCPU).contiguous(), y = b.detach().to(torch::kCPU).contiguous();
  if (x.sizes() != y.sizes()) return ::testing::AssertionFailure() << "shapes " << x.sizes() << " vs " << y.sizes();
  auto differ = x.view(torch::kInt32).ne(y.view(torch::kInt32));
  const int64_t n = differ.sum().item<int64_t>();
  if (n == 0) return ::testing::AssertionSuccess();
  const int64_t i = differ.reshape(-1).nonzero()[0].item<int64_t>();
  return ::testing::AssertionFailure() << n << " of " << x.numel() << " elements differ, first at " << i << ": "
                                       << x.reshape(-1)[i].item<float>() << " vs " << y.reshape(-1)[i].item<float>();
}

// Per channel sum of |g * e| (e: the scale-gradient factor of SPEC Sec. 2, from the scalar
// definitions), in double: the scale of the rounding error of the scale-gradient sums.
std::vector<double> weight_abs_terms(const torch::Tensor& g, const torch::Tensor& w, const torch::Tensor& s,
                                     const WeightQuantSpec& spec) {
  auto gc = g.contiguous(), wc = w.contiguous();
  const int64_t C = w.size(0), per = w.numel() / C;
  const float qn = float(signed_qmin(spec.bits)), qp = float(signed_qmax(spec.bits));
  const float pow2neg = std::ldexp(1.0f, spec.bits - spec.high_bits);
  const float* gp = gc.data_ptr<float>();
  const float* wp = wc.data_ptr<float>();
  std::vector<double> out(C, 0.0);
  for (int64_t c = 0; c < C; ++c) {
    const float inv = 1.0f / s[c].item<float>();
    for (int64_t i = c * per; i < (c + 1) * per; ++i) {
      const float v = wp[i] * inv * pow2neg;
      const float q = float(derive_code(weight_code(wp[i], inv, spec.high_bits), spec.high_bits, spec.bits, spec.rounding));
      const float e = v < qn ? qn : (v > qp ? qp : q - v);
      out[c] += std::abs(double(gp[i]) * e);
    }
  }
  return out;
}

double act_abs_terms(const torch::Tensor& g, const torch::Tensor& x, float a, int bits) {
  auto gc = g.contiguous(), xc = x.contiguous();
  const float inv = 1.0f / a, qp = float(unsigned_qmax(bits));
  const float* gp = gc.data_ptr<float>();
  const float* xp = xc.data_ptr<float>();
  double sum = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float v = xp[i] * inv;
    const float e = v < 0 ? 0.0f : (v > qp ? qp : act_code(xp[i], inv, qp) - v);
    sum += std::abs(double(gp[i]) * e);
  }
  return sum;
}

// Weights with exact rounding ties of the first rounding and out-of-range values mixed in.
torch::Tensor test_weights(const std::vector<int64_t>& shape, const torch::Tensor& scale) {
  std::vector<int64_t> bshape(shape.size(), 1);
  bshape[0] = shape[0];
  auto s = scale.reshape(bshape);
  auto w = torch::randn(shape) * s * 40;
  auto ties = (torch::randint(-140, 140, shape).to(torch::kFloat32) + 0.5f) * s;
  return torch::where(torch::rand(shape) < 0.2, ties, w);
}

}  // namespace

// Shapes: conv and linear weights, channels of one tile and of several (kTile = 4096: per-channel
// partial sums reduced by the second kernel), in NCHW and channels-last layouts.
TEST(CudaQuant, WeightKernelsMatchTheCpu) {
  SKIP_WITHOUT_CUDA_KERNELS();
  const std::vector<std::vector<int64_t>> shapes = {{16, 3, 3, 3}, {64, 32, 3, 3}, {7, 5}, {33, 17, 1, 1},
                                                    {1, 1000},     {3, 10000},     {2, 4096}, {5, 4097}, {128, 64, 3, 3}};
  uint64_t seed = 11;
  for (const auto& shape : shapes) {
    for (bool channels_last : {false, true}) {
      if (channels_last && shape.size() != 4) continue;
      for (int h : {8, 6, 4}) {
        for (int l = 2; l <= h; ++l) {
          for (auto mode : {SecondRounding::kHalfUp, SecondRounding::kFloor}) {
            for (bool exact : {false, true}) {
              torch::manual_seed(seed++);
              const WeightQuantSpec spec{h, l, mode, exact};
              auto s = torch::rand({shape[0]}) * 0.05 + 0.01;
              auto w = test_weights(shape, s);
              auto g = torch::randn(shape);
              if (channels_last) {
                w = w.contiguous(torch::MemoryFormat::ChannelsLast);
                g = g.contiguous(torch::MemoryFormat::ChannelsLast);
              }
              const auto wd = w.to(kCuda), sd = s.to(kCuda), gd = g.to(kCuda);
              const std::string what = "shape " + std::to_string(w.numel()) + " h=" + std::to_string(h) +
                                       " l=" + std::to_string(l) + (channels_last ? " channels-last" : "");
              auto y_cpu = quant::detail::weight_forward_fused(w, s, spec);
              auto y_gpu = quant::detail::weight_forward_fused(wd, sd, spec);
              ASSERT_TRUE(y_gpu.is_cuda());
              if (channels_last) ASSERT_TRUE(y_gpu.is_contiguous(torch::MemoryFormat::ChannelsLast)) << what;
              ASSERT_TRUE(same_bits(y_gpu, y_cpu)) << what;
              // The composed reference on the GPU computes the same quantizer too.
              ASSERT_TRUE(same_bits(quant::detail::weight_forward_reference(wd, sd, spec), y_cpu)) << what;

              auto [gw_cpu, gs_cpu] = quant::detail::weight_backward_fused(g, w, s, spec);
              auto [gw_gpu, gs_gpu] = quant::detail::weight_backward_fused(gd, wd, sd, spec);
              // Equal values (the CPU's AVX-512 path writes +0 where g * 0 is -0).
              ASSERT_TRUE(torch::equal(gw_gpu.cpu(), gw_cpu)) << what;
              ASSERT_EQ(gs_gpu.sizes(), gs_cpu.sizes());
              const auto terms = weight_abs_terms(g, w, s, spec);
              const int64_t per = w.numel() / shape[0];
              const double gscale = 1.0 / std::sqrt(double(per) * signed_qmax(l)) * (exact ? std::ldexp(1.0, h - l) : 1.0);
              auto gs_g = gs_gpu.cpu();
              for (int64_t c = 0; c < shape[0]; ++c) {
                const double a = gs_g[c].item<double>(), b = gs_cpu[c].item<double>();
                // The CPU sums blocks of up to 1024 terms in float: |error| <= 1024 u sum|terms|.
                ASSERT_NEAR(a, b, 1.3e-4 * gscale * terms[c] + 1e-6 * std::abs(b)) << what << " channel " << c;
              }
            }
          }
        }
      }
    }
  }
}

TEST(CudaQuant, ActivationKernelsMatchTheCpu) {
  SKIP_WITHOUT_CUDA_KERNELS();
  const std::vector<std::vector<int64_t>> shapes = {{2, 16, 28, 28}, {3, 7, 5, 5}, {1, 1}, {128, 64, 7, 7},
                                                    {100003},        {4096},       {4097}, {8, 64, 56, 56}};
  uint64_t seed = 101;
  for (const auto& shape : shapes) {
    for (bool channels_last : {false, true}) {
      if (channels_last && shape.size() != 4) continue;
      for (bool relu : {false, true}) {
        for (int b = 2; b <= 8; ++b) {
          torch::manual_seed(seed++);
          auto a = torch::rand({1}) * 0.1 + 0.02;
          // Negative values too (the ReLU's input, or clamped at 0), exact ties of the rounding.
          auto x = torch::randn(shape) * a * (1 << b) * 0.7;
          auto ties = (torch::randint(-10, 300, shape).to(torch::kFloat32) + 0.5f) * a;
          x = torch::where(torch::rand(shape) < 0.2, ties, x);
          if (!relu) x = torch::where(torch::rand(shape) < 0.5, torch::relu(x), x);
          auto g = torch::randn(shape);
          if (channels_last) {
            x = x.contiguous(torch::MemoryFormat::ChannelsLast);
            g = g.contiguous(torch::MemoryFormat::ChannelsLast);
          }
          const auto xd = x.to(kCuda), ad = a.to(kCuda), gd = g.to(kCuda);
          const std::string what = "numel " + std::to_string(x.numel()) + " b=" + std::to_string(b) +
                                   (relu ? " relu" : "") + (channels_last ? " channels-last" : "");
          auto y_cpu = quant::detail::act_forward_fused(x, a, b);
          auto y_gpu = quant::detail::act_forward_fused(xd, ad, b);
          if (channels_last) ASSERT_TRUE(y_gpu.is_contiguous(torch::MemoryFormat::ChannelsLast)) << what;
          ASSERT_TRUE(same_bits(y_gpu, y_cpu)) << what;
          ASSERT_TRUE(same_bits(quant::detail::act_forward_reference(xd, ad, b), y_cpu)) << what;

          auto [gx_cpu, ga_cpu] = quant::detail::act_backward_fused(g, x, a, b, relu);
          auto [gx_gpu, ga_gpu] = quant::detail::act_backward_fused(gd, xd, ad, b, relu);
          ASSERT_TRUE(torch::equal(gx_gpu.cpu(), gx_cpu)) << what;  // values, as for weights
          ASSERT_EQ(ga_gpu.sizes(), ga_cpu.sizes());
          const double gscale = 1.0 / std::sqrt(double(x.numel()) * unsigned_qmax(b));
          const double ref = ga_cpu.item<double>();
          ASSERT_NEAR(ga_gpu.item<double>(), ref, 1.3e-4 * gscale * act_abs_terms(g, x, a.item<float>(), b) + 1e-6 * std::abs(ref))
              << what;
        }
      }
    }
  }
}

// kAuto picks the CUDA kernels for CUDA tensors; gradients through autograd match the CPU.
TEST(CudaQuant, AutoSelectsTheCudaKernelsThroughAutograd) {
  SKIP_WITHOUT_CUDA_KERNELS();
  torch::manual_seed(3);
  const WeightQuantSpec spec{8, 4, SecondRounding::kHalfUp, false};
  auto s = torch::rand({32}) * 0.05 + 0.01;
  auto w = test_weights({32, 16, 3, 3}, s);
  auto a = torch::full({1}, 0.05f);
  auto x = torch::randn({4, 16, 9, 9});
  auto run = [&](torch::Device dev) {
    auto wl = w.to(dev).requires_grad_(), sl = s.to(dev).requires_grad_();
    auto xl = x.to(dev).requires_grad_(), al = a.to(dev).requires_grad_();
    auto y = torch::conv2d(fake_quant_act(xl, al, 4, Impl::kAuto, /*relu=*/true), fake_quant_weight(wl, sl, spec));
    (y * y).sum().backward();
    return std::vector<torch::Tensor>{y.detach().cpu(), wl.grad().cpu(), sl.grad().cpu(), xl.grad().cpu(), al.grad().cpu()};
  };
  // Exact float convolutions on both sides: the quantized operands are equal, so are the products
  // up to summation order.
  const bool tf32 = at::globalContext().allowTF32CuDNN();
  at::globalContext().setAllowTF32CuDNN(false);
  const auto cpu = run(torch::kCPU), gpu = run(kCuda);
  at::globalContext().setAllowTF32CuDNN(tf32);
  const char* names[] = {"output", "weight grad", "weight scale grad", "input grad", "act scale grad"};
  // Sums over different orders: tolerances relative to each tensor's largest element.
  for (size_t i = 0; i < cpu.size(); ++i)
    EXPECT_TRUE(torch::allclose(gpu[i], cpu[i], 1e-3, 1e-3 * cpu[i].abs().max().item<double>()))
        << names[i] << ": max |diff| " << (gpu[i] - cpu[i]).abs().max().item<float>();
}

TEST(CudaQuant, ScaleOnAnotherDeviceIsAnError) {
  SKIP_WITHOUT_CUDA_KERNELS();
  const WeightQuantSpec spec{8, 4, SecondRounding::kHalfUp, false};
  auto w = torch::randn({4, 3}, kCuda);
  EXPECT_ERROR_CONTAINS(quant::detail::weight_forward_fused(w, torch::ones({4}), spec), "must be float32 on cuda:0");
  EXPECT_ERROR_CONTAINS(quant::detail::act_forward_fused(w, torch::ones({1}), 4), "must be float32 on cuda:0");
  EXPECT_ERROR_CONTAINS(quant::detail::weight_forward_fused(w.to(torch::kFloat64), torch::ones({4}, kCuda), spec),
                        "needs a float32 CPU tensor (or a CUDA one");
}

// A checkpoint written from CUDA tensors loads on the CPU by default (a CPU-only machine can
// evaluate or export it) and onto the GPU when asked.
TEST(CudaTraining, CheckpointFromTheGpuLoadsOnCpuAndBack) {
  SKIP_WITHOUT_GPU();
  const auto dir = bitswitch::testing::temp_dir("cuda_checkpoint");
  models::ModelSpec spec;
  spec.name = "smallcnn";
  torch::manual_seed(5);
  auto model = models::create_model(spec);
  model->to(kCuda);
  train::CheckpointData d;
  d.meta = nlohmann::json{{"spec", train::spec_to_json(spec)}, {"phase", "fp"}, {"epoch", 0}};
  d.model = model.get();
  d.extra["kd_prev"] = torch::randn({3, 10}, kCuda);
  save_checkpoint(dir + "/ck.pt", d);

  train::Checkpoint on_cpu(dir + "/ck.pt");
  EXPECT_TRUE(on_cpu.extra("kd_prev").device().is_cpu());
  auto cpu_model = models::create_model(spec);
  on_cpu.load_model(*cpu_model, /*strict=*/true);
  train::Checkpoint on_gpu(dir + "/ck.pt", kCuda);
  EXPECT_TRUE(on_gpu.extra("kd_prev").is_cuda());
  auto gpu_model = models::create_model(spec);
  gpu_model->to(kCuda);
  on_gpu.load_model(*gpu_model, /*strict=*/true);
  auto a = model->named_parameters(), b = cpu_model->named_parameters(), c = gpu_model->named_parameters();
  for (const auto& p : a) {
    EXPECT_TRUE(torch::equal(p.value().cpu(), b[p.key()])) << p.key();
    EXPECT_TRUE(torch::equal(p.value(), c[p.key()])) << p.key();
  }
}

// The joint trainer with device cuda: a stopped and resumed run ends in the same state as an
// uninterrupted one (deterministic cuDNN), and its checkpoint's integer-exact evaluation on the
// CPU (what the deployed model computes) agrees with the GPU's within two of 128 images (float
// BN and first-layer arithmetic differ between the devices, so a code can flip).
TEST(CudaTraining, TrainResumeAndEvaluateOnTheCpu) {
  SKIP_WITHOUT_GPU();
  const bool det = at::globalContext().deterministicCuDNN();
  at::globalContext().setDeterministicCuDNN(true);
  const auto dir = bitswitch::testing::temp_dir("cuda_train");
  auto full = bitswitch::testing::tiny_config(dir + "/full");
  full.device = "cuda";
  full.kd = true;
  auto r = train::run_training(full);
  ASSERT_TRUE(r.finished);
  auto part = full;
  part.out = dir + "/part";
  part.stop_after = 2;
  ASSERT_FALSE(train::run_training(part).finished);
  part.stop_after = 0;
  part.resume = true;
  auto r2 = train::run_training(part);
  at::globalContext().setDeterministicCuDNN(det);
  ASSERT_TRUE(r2.finished);
  EXPECT_EQ(r.accuracy, r2.accuracy);
  train::Checkpoint a(dir + "/full/checkpoint.pt"), b(dir + "/part/checkpoint.pt");
  auto ma = models::create_model(a.spec()), mb = models::create_model(b.spec());
  a.load_model(*ma, true);
  b.load_model(*mb, true);
  auto pb = mb->named_parameters();
  for (const auto& p : ma->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();

  // Integer-exact evaluation of the GPU-trained model on the CPU.
  auto cfg = full;
  cfg.device = "cpu";
  auto data = train::open_data(cfg, 128);
  for (const auto& [key, acc] : r.accuracy.items()) {
    if (key == "fp32") continue;
    const int w = std::stoi(key.substr(1));
    auto e = eval::evaluate(*ma, *data.test, nn::BitConfig::uniform(w));
    EXPECT_NEAR(e.accuracy, acc.get<double>(), 2 * 100.0 / 128 + 1e-9) << key;
  }
}
