// Tensor glue of the fused CUDA quantizer kernels (fused_cuda.h): checks, output allocation on
// the input's device, and launches on LibTorch's current CUDA stream (SPEC.md Sec. 2).
#include "bitswitch/quant/cuda/fused_cuda.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "bitswitch/quant/cuda/kernels.h"
#include "bitswitch/util/error.h"

namespace bitswitch::quant::cuda {
namespace {

void check_tensors(const torch::Tensor& x, const torch::Tensor& scale, const char* what) {
  BS_CHECK(x.is_cuda() && x.scalar_type() == torch::kFloat32, "CUDA quantizer kernel: `", what,
           "` must be a float32 CUDA tensor, got ", x.scalar_type(), " on ", x.device());
  BS_CHECK(scale.device() == x.device() && scale.scalar_type() == torch::kFloat32, "CUDA quantizer kernel: the scale of `",
           what, "` must be float32 on ", x.device(), " like `", what, "`, got ", scale.scalar_type(), " on ",
           scale.device());
}

void check_launch(cudaError_t e, const char* kernel) {
  BS_CHECK(e == cudaSuccess, "CUDA quantizer kernel ", kernel, " failed: ", cudaGetErrorString(e));
}

cudaStream_t stream_of(const torch::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

WeightArgs weight_args(const WeightQuantSpec& spec) {
  return {spec.high_bits, spec.bits, static_cast<int>(spec.rounding)};
}

}  // namespace

torch::Tensor act_forward(const torch::Tensor& x, const torch::Tensor& scale, int bits) {
  check_tensors(x, scale, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = torch::empty_like(x);
  const auto s = scale.contiguous();
  check_launch(cuda::act_forward(x.data_ptr<float>(), y.data_ptr<float>(), x.numel(), s.data_ptr<float>(), bits,
                                 stream_of(x)),
               "act_forward");
  return y;
}

std::pair<torch::Tensor, torch::Tensor> act_backward(const torch::Tensor& grad, const torch::Tensor& x,
                                                     const torch::Tensor& scale, int bits, bool relu, double gscale) {
  check_tensors(x, scale, "x");
  check_tensors(grad, scale, "grad");
  const c10::cuda::CUDAGuard guard(x.device());
  auto gx = torch::empty_like(x);
  auto gs = torch::empty_like(scale);
  const auto s = scale.contiguous();
  const int64_t tiles = tiles_per_channel(x.numel());  // partial sums only with several tiles
  auto partial = torch::empty({tiles > 1 ? tiles : 0}, x.options().dtype(torch::kFloat64));
  check_launch(cuda::act_backward(grad.data_ptr<float>(), x.data_ptr<float>(), gx.data_ptr<float>(),
                                  gs.data_ptr<float>(), partial.data_ptr<double>(), x.numel(), s.data_ptr<float>(),
                                  bits, relu, gscale, stream_of(x)),
               "act_backward");
  return {gx, gs};
}

torch::Tensor weight_forward(const torch::Tensor& w, const torch::Tensor& scale, const WeightQuantSpec& spec) {
  check_tensors(w, scale, "w");
  const c10::cuda::CUDAGuard guard(w.device());
  auto y = torch::empty_like(w);
  const int64_t channels = w.size(0), per = channels ? w.numel() / channels : 0;
  check_launch(cuda::weight_forward(w.data_ptr<float>(), y.data_ptr<float>(), channels, per, scale.data_ptr<float>(),
                                    weight_args(spec), stream_of(w)),
               "weight_forward");
  return y;
}

std::pair<torch::Tensor, torch::Tensor> weight_backward(const torch::Tensor& grad, const torch::Tensor& w,
                                                        const torch::Tensor& scale, const WeightQuantSpec& spec,
                                                        double gscale) {
  check_tensors(w, scale, "w");
  check_tensors(grad, scale, "grad");
  const c10::cuda::CUDAGuard guard(w.device());
  auto gw = torch::empty_like(w);
  const int64_t channels = w.size(0), per = channels ? w.numel() / channels : 0;
  auto gs = torch::empty({channels}, scale.options());
  const int64_t tiles = tiles_per_channel(per);
  auto partial = torch::empty({tiles > 1 ? channels * tiles : 0}, w.options().dtype(torch::kFloat64));
  check_launch(cuda::weight_backward(grad.data_ptr<float>(), w.data_ptr<float>(), gw.data_ptr<float>(),
                                     gs.data_ptr<float>(), partial.data_ptr<double>(), channels, per,
                                     scale.data_ptr<float>(), weight_args(spec), gscale, stream_of(w)),
               "weight_backward");
  return {gw, gs};
}

}  // namespace bitswitch::quant::cuda
