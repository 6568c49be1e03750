// Fused CPU kernels of the Double Rounding fake-quantizers (SPEC.md Sec. 2; paper Sec. 3.1).
// Forward: one pass producing the fake-quantized output. Backward: one pass over (x, grad)
// producing the input gradient and the scale-gradient sum. The inner loops are compiled for
// AVX-512, AVX2 and baseline x86-64 and picked at run time (GCC target_clones); chunked
// partial sums make the scale gradient independent of the thread count.
// The composed-ATen reference in fake_quant.cpp defines the expected results.
#include <ATen/Parallel.h>
#include <torch/types.h>

#include <cmath>
#include <vector>

#include "bitswitch/quant/fake_quant.h"
#include "bitswitch/util/error.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BS_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BS_MULTIVERSION
#endif

namespace bitswitch::quant::detail {
namespace {

constexpr int64_t kChunk = 16384;  // elements per partial sum (fixed: deterministic results)

// ---- activations: unsigned, range [0, qp] ----

BS_MULTIVERSION
void act_fwd_span(const float* __restrict x, float* __restrict y, int64_t n, float inv, float a,
                  float qp) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::min(std::max(x[i] * inv, 0.0f), qp);
    y[i] = round_half_even_small(v) * a;
  }
}

BS_MULTIVERSION
double act_bwd_span(const float* __restrict g, const float* __restrict x, float* __restrict gx,
                    int64_t n, float inv, float qp) {
  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] * inv;
    const bool below = v < 0.0f;
    const bool above = v > qp;
    const float q = round_half_even_small(std::min(std::max(v, 0.0f), qp));
    const float e = below ? 0.0f : (above ? qp : q - v);
    gx[i] = (below || above) ? 0.0f : g[i];
    acc += static_cast<double>(g[i] * e);
  }
  return acc;
}

// ---- weights: signed, per channel, double rounding h -> l ----

struct WeightParams {
  float inv;       // 1 / s
  float seff;      // s * 2^d
  float pow2neg;   // 2^-d
  float qmin_h, qmax_h;
  int32_t qmin_l, qmax_l;
  int d;
  int32_t half;    // 2^(d-1) for half-up, 0 for floor
};

BS_MULTIVERSION
void weight_fwd_span(const float* __restrict w, float* __restrict y, int64_t n,
                     const WeightParams p) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float vh = std::min(std::max(w[i] * p.inv, p.qmin_h), p.qmax_h);
    int32_t q = static_cast<int32_t>(round_half_even_small(vh));
    q = (q + p.half) >> p.d;
    q = std::min(std::max(q, p.qmin_l), p.qmax_l);
    y[i] = static_cast<float>(q) * p.seff;
  }
}

BS_MULTIVERSION
double weight_bwd_span(const float* __restrict g, const float* __restrict w,
                       float* __restrict gw, int64_t n, const WeightParams p) {
  double acc = 0.0;
  const float qn = static_cast<float>(p.qmin_l), qp = static_cast<float>(p.qmax_l);
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) {
    const float vh = w[i] * p.inv;
    const float v = vh * p.pow2neg;
    int32_t q = static_cast<int32_t>(round_half_even_small(std::min(std::max(vh, p.qmin_h), p.qmax_h)));
    q = (q + p.half) >> p.d;
    q = std::min(std::max(q, p.qmin_l), p.qmax_l);
    const bool below = v < qn;
    const bool above = v > qp;
    const float e = below ? qn : (above ? qp : static_cast<float>(q) - v);
    gw[i] = (below || above) ? 0.0f : g[i];
    acc += static_cast<double>(g[i] * e);
  }
  return acc;
}

WeightParams weight_params(float s, const WeightQuantSpec& spec) {
  WeightParams p;
  p.d = spec.high_bits - spec.bits;
  p.inv = 1.0f / s;
  p.seff = std::ldexp(s, p.d);
  p.pow2neg = std::ldexp(1.0f, -p.d);
  p.qmin_h = static_cast<float>(signed_qmin(spec.high_bits));
  p.qmax_h = static_cast<float>(signed_qmax(spec.high_bits));
  p.qmin_l = signed_qmin(spec.bits);
  p.qmax_l = signed_qmax(spec.bits);
  p.half = (p.d > 0 && spec.rounding == SecondRounding::kHalfUp) ? (1 << (p.d - 1)) : 0;
  return p;
}

void check_fused(const torch::Tensor& t, const char* what) {
  BS_CHECK(fused_supported(t), "fused quantizer kernel needs a float32 CPU tensor for `", what,
           "`, got ", t.scalar_type(), " on ", t.device());
}

}  // namespace

bool fused_supported(const torch::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && !t.is_sparse();
}

torch::Tensor act_forward_fused(const torch::Tensor& x_in, const torch::Tensor& scale, int bits) {
  check_fused(x_in, "x");
  const auto x = x_in.contiguous();
  auto y = torch::empty_like(x);
  const float a = scale.item<float>();
  const float inv = 1.0f / a, qp = static_cast<float>(unsigned_qmax(bits));
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, x.numel(), kChunk, [&](int64_t b, int64_t e) {
    act_fwd_span(xp + b, yp + b, e - b, inv, a, qp);
  });
  return y;
}

std::pair<torch::Tensor, torch::Tensor> act_backward_fused(const torch::Tensor& grad_in,
                                                           const torch::Tensor& x_in,
                                                           const torch::Tensor& scale, int bits) {
  check_fused(x_in, "x");
  check_fused(grad_in, "grad");
  const auto x = x_in.contiguous();
  const auto g = grad_in.contiguous();
  auto gx = torch::empty_like(x);
  const float a = scale.item<float>();
  const float inv = 1.0f / a, qp = static_cast<float>(unsigned_qmax(bits));
  const int64_t n = x.numel();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  const float* xp = x.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  float* gxp = gx.data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t b = c * kChunk, e = std::min(n, b + kChunk);
      partial[c] = act_bwd_span(gp + b, xp + b, gxp + b, e - b, inv, qp);
    }
  });
  double acc = 0.0;
  for (double v : partial) acc += v;
  const double gscale = 1.0 / std::sqrt(static_cast<double>(n) * qp);
  auto gs = torch::full_like(scale, static_cast<float>(acc * gscale));
  return {gx, gs};
}

torch::Tensor weight_forward_fused(const torch::Tensor& w_in, const torch::Tensor& scale_in,
                                   const WeightQuantSpec& spec) {
  check_fused(w_in, "w");
  const auto w = w_in.contiguous();
  const auto scale = scale_in.contiguous().to(torch::kFloat32);
  auto y = torch::empty_like(w);
  const int64_t channels = w.size(0);
  const int64_t per = channels ? w.numel() / channels : 0;
  const float* wp = w.data_ptr<float>();
  const float* sp = scale.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, kChunk / std::max<int64_t>(per, 1));
  at::parallel_for(0, channels, grain, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c)
      weight_fwd_span(wp + c * per, yp + c * per, per, weight_params(sp[c], spec));
  });
  return y;
}

std::pair<torch::Tensor, torch::Tensor> weight_backward_fused(const torch::Tensor& grad_in,
                                                              const torch::Tensor& w_in,
                                                              const torch::Tensor& scale_in,
                                                              const WeightQuantSpec& spec) {
  check_fused(w_in, "w");
  check_fused(grad_in, "grad");
  const auto w = w_in.contiguous();
  const auto g = grad_in.contiguous();
  const auto scale = scale_in.contiguous().to(torch::kFloat32);
  auto gw = torch::empty_like(w);
  auto gs = torch::empty({w.size(0)}, scale.options());
  const int64_t channels = w.size(0);
  const int64_t per = channels ? w.numel() / channels : 0;
  const int d = spec.high_bits - spec.bits;
  const double qp = signed_qmax(spec.bits);
  const double gscale = 1.0 / std::sqrt(static_cast<double>(per) * qp) *
                        (spec.exact_scale_grad ? std::ldexp(1.0, d) : 1.0);
  const float* wp = w.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  const float* sp = scale.data_ptr<float>();
  float* gwp = gw.data_ptr<float>();
  float* gsp = gs.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, kChunk / std::max<int64_t>(per, 1));
  at::parallel_for(0, channels, grain, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const double acc =
          weight_bwd_span(gp + c * per, wp + c * per, gwp + c * per, per, weight_params(sp[c], spec));
      gsp[c] = static_cast<float>(acc * gscale);
    }
  });
  return {gw, gs.view(scale_in.sizes())};
}

}  // namespace bitswitch::quant::detail
