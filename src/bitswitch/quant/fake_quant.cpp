// Double Rounding fake-quantizers as LibTorch autograd functions, and the composed-ATen
// reference (SPEC.md Sec. 2; paper Sec. 3.1, LSQ gradients of Esser et al. 2020).
// The reference is written from the formulas with plain tensor ops; the fused kernels in
// kernels.cpp must reproduce its forward bit for bit.
#include "bitswitch/quant/fake_quant.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <cmath>

#include "bitswitch/util/error.h"

namespace bitswitch::quant {

void check_bits(int bits, const char* what) {
  BS_CHECK(bits >= kMinBits && bits <= kMaxBits, "`", what, "` must be in [", kMinBits, ", ",
           kMaxBits, "], got ", bits);
}

namespace {

void check_weight_spec(const WeightQuantSpec& spec) {
  check_bits(spec.high_bits, "high_bits");
  check_bits(spec.bits, "bits");
  BS_CHECK(spec.bits <= spec.high_bits, "`bits` (", spec.bits, ") must not exceed `high_bits` (",
           spec.high_bits, ")");
}

// Broadcast a per-channel [C] tensor against w [C, ...].
torch::Tensor per_channel(const torch::Tensor& s, const torch::Tensor& w) {
  std::vector<int64_t> shape(w.dim(), 1);
  shape[0] = w.size(0);
  return s.reshape(shape);
}

// Reference: h-bit codes, then the second rounding in float (exact: powers of two).
torch::Tensor reference_low_codes(const torch::Tensor& vh, const WeightQuantSpec& spec) {
  const int d = spec.high_bits - spec.bits;
  auto qh = torch::round(torch::clamp(vh, signed_qmin(spec.high_bits), signed_qmax(spec.high_bits)));
  if (d == 0) return qh;
  const double half = second_round_offset(d, spec.rounding);  // 2^(d-1) or 0, exact in float
  auto q = torch::floor((qh + half) * std::ldexp(1.0, -d));
  return torch::clamp(q, signed_qmin(spec.bits), signed_qmax(spec.bits));
}

}  // namespace

namespace detail {

torch::Tensor weight_forward_reference(const torch::Tensor& w, const torch::Tensor& scale,
                                       const WeightQuantSpec& spec) {
  const int d = spec.high_bits - spec.bits;
  auto s = per_channel(scale, w);
  auto vh = w * torch::reciprocal(s);
  return reference_low_codes(vh, spec) * (s * std::ldexp(1.0, d));
}

std::pair<torch::Tensor, torch::Tensor> weight_backward_reference(const torch::Tensor& grad,
                                                                  const torch::Tensor& w,
                                                                  const torch::Tensor& scale,
                                                                  const WeightQuantSpec& spec) {
  const int d = spec.high_bits - spec.bits;
  const double qn = signed_qmin(spec.bits), qp = signed_qmax(spec.bits);
  auto s = per_channel(scale, w);
  auto vh = w * torch::reciprocal(s);
  auto v = vh * std::ldexp(1.0, -d);
  auto q = reference_low_codes(vh, spec);
  auto below = v < qn, above = v > qp;
  auto inside = torch::logical_not(torch::logical_or(below, above));
  auto e = torch::where(inside, q - v, torch::where(below, torch::full_like(v, qn), torch::full_like(v, qp)));
  const int64_t per = w.numel() / std::max<int64_t>(w.size(0), 1);
  const double gscale = weight_grad_scale(per, spec);
  auto gs = (grad * e).reshape({w.size(0), -1}).sum(1) * gscale;
  return {grad * inside, gs.view(scale.sizes())};
}

torch::Tensor act_forward_reference(const torch::Tensor& x, const torch::Tensor& scale, int bits) {
  auto v = x * torch::reciprocal(scale);
  return torch::round(torch::clamp(v, 0, unsigned_qmax(bits))) * scale;
}

std::pair<torch::Tensor, torch::Tensor> act_backward_reference(const torch::Tensor& grad,
                                                               const torch::Tensor& x,
                                                               const torch::Tensor& scale, int bits) {
  const double qp = unsigned_qmax(bits);
  auto v = x * torch::reciprocal(scale);
  auto below = v < 0, above = v > qp;
  auto inside = torch::logical_not(torch::logical_or(below, above));
  auto q = torch::round(torch::clamp(v, 0, qp));
  auto e = torch::where(inside, q - v, torch::where(below, torch::zeros_like(v), torch::full_like(v, qp)));
  const double gscale = lsq_grad_scale(x.numel(), unsigned_qmax(bits));
  auto gs = ((grad * e).sum() * gscale).reshape(scale.sizes());
  return {grad * inside, gs};
}

}  // namespace detail

namespace {

bool use_fused(Impl impl, const torch::Tensor& t) {
  if (impl == Impl::kFused) return true;
  if (impl == Impl::kReference) return false;
  return detail::fused_supported(t);
}

// Double backward (Hessian-vector products, mixed/hessian.h): when the backward pass itself is
// recorded (create_graph), the straight-through input gradient grad * mask is rebuilt with
// autograd ops so that it is differentiable in `grad`; the scale gradients stay constants.
torch::Tensor weight_inside_mask(const torch::Tensor& w, const torch::Tensor& scale, const WeightQuantSpec& spec) {
  auto v = w.detach() * torch::reciprocal(per_channel(scale.detach(), w)) * std::ldexp(1.0, spec.bits - spec.high_bits);
  return torch::logical_and(v >= signed_qmin(spec.bits), v <= signed_qmax(spec.bits)).to(w.scalar_type());
}

torch::Tensor act_inside_mask(const torch::Tensor& x, const torch::Tensor& scale, int bits, bool relu) {
  auto v = x.detach() * torch::reciprocal(scale.detach());
  return torch::logical_and(relu ? v > 0 : v >= 0, v <= unsigned_qmax(bits)).to(x.scalar_type());
}

torch::Tensor differentiable_ste(const torch::Tensor& grad, const torch::Tensor& mask) {
  torch::AutoGradMode enable(true);
  return grad * mask;
}

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

struct WeightFakeQuantFn : public torch::autograd::Function<WeightFakeQuantFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& w,
                               const torch::Tensor& scale, int64_t high_bits, int64_t bits,
                               int64_t rounding, bool exact, bool fused) {
    WeightQuantSpec spec{int(high_bits), int(bits), SecondRounding(rounding), exact};
    ctx->save_for_backward({w, scale});
    ctx->saved_data["high"] = high_bits;
    ctx->saved_data["bits"] = bits;
    ctx->saved_data["rounding"] = rounding;
    ctx->saved_data["exact"] = exact;
    ctx->saved_data["fused"] = fused;
    torch::NoGradGuard no_grad;
    return fused ? detail::weight_forward_fused(w, scale, spec)
                 : detail::weight_forward_reference(w, scale, spec);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    WeightQuantSpec spec{int(ctx->saved_data["high"].toInt()), int(ctx->saved_data["bits"].toInt()),
                         SecondRounding(ctx->saved_data["rounding"].toInt()),
                         ctx->saved_data["exact"].toBool()};
    const bool create_graph = torch::GradMode::is_enabled();
    torch::NoGradGuard no_grad;
    auto r = ctx->saved_data["fused"].toBool()
                 ? detail::weight_backward_fused(grads[0], saved[0], saved[1], spec)
                 : detail::weight_backward_reference(grads[0], saved[0], saved[1], spec);
    if (create_graph) r.first = differentiable_ste(grads[0], weight_inside_mask(saved[0], saved[1], spec));
    return {r.first, r.second, {}, {}, {}, {}, {}};
  }
};

struct ActFakeQuantFn : public torch::autograd::Function<ActFakeQuantFn> {
  // `relu` (fused kernels only): the input is that of a ReLU fused into the quantizer.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& scale, int64_t bits, bool fused, bool relu) {
    ctx->save_for_backward({x, scale});
    ctx->saved_data["bits"] = bits;
    ctx->saved_data["fused"] = fused;
    ctx->saved_data["relu"] = relu;
    torch::NoGradGuard no_grad;
    return fused ? detail::act_forward_fused(x, scale, int(bits))
                 : detail::act_forward_reference(x, scale, int(bits));
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const int bits = int(ctx->saved_data["bits"].toInt());
    const bool relu = ctx->saved_data["relu"].toBool();
    const bool create_graph = torch::GradMode::is_enabled();
    torch::NoGradGuard no_grad;
    auto r = ctx->saved_data["fused"].toBool()
                 ? detail::act_backward_fused(grads[0], saved[0], saved[1], bits, relu)
                 : detail::act_backward_reference(grads[0], saved[0], saved[1], bits);
    if (create_graph) r.first = differentiable_ste(grads[0], act_inside_mask(saved[0], saved[1], bits, relu));
    return {r.first, r.second, {}, {}, {}};
  }
};

}  // namespace

torch::Tensor fake_quant_weight(const torch::Tensor& w, const torch::Tensor& scale,
                                const WeightQuantSpec& spec, Impl impl) {
  check_weight_spec(spec);
  BS_CHECK(w.dim() >= 1 && scale.dim() == 1 && scale.size(0) == w.size(0),
           "weight scale must have shape [", w.dim() ? w.size(0) : 0, "], got ", scale.sizes());
  return WeightFakeQuantFn::apply(w, scale, spec.high_bits, spec.bits, int64_t(spec.rounding),
                                  spec.exact_scale_grad, use_fused(impl, w));
}

torch::Tensor fake_quant_act(const torch::Tensor& x, const torch::Tensor& scale, int bits, Impl impl, bool relu) {
  check_bits(bits, "bits");
  BS_CHECK(scale.numel() == 1, "activation scale must have one element, got ", scale.sizes());
  const bool fused = use_fused(impl, x);
  // The reference composes the ReLU (its own autograd node) with the plain quantizer.
  if (relu && !fused) return ActFakeQuantFn::apply(torch::relu(x), scale, bits, false, false);
  return ActFakeQuantFn::apply(x, scale, bits, fused, relu);
}

std::pair<torch::Tensor, torch::Tensor> per_token_codes(const torch::Tensor& x, int bits) {
  check_bits(bits, "bits");
  torch::NoGradGuard no_grad;
  const double qp = signed_qmax(bits);
  // An all-zero token gets the smallest normal scale (its codes are 0 whatever the scale).
  auto a = std::get<0>(x.detach().abs().max(-1, /*keepdim=*/true)).clamp_min(1e-30) / qp;
  auto q = torch::round(torch::clamp(x.detach() * torch::reciprocal(a), -qp, qp));
  return {q, a};
}

std::pair<torch::Tensor, torch::Tensor> per_token_codes_scalar(const torch::Tensor& x, int bits) {
  check_bits(bits, "bits");
  BS_CHECK(x.dim() >= 1 && x.size(-1) > 0, "per_token_codes_scalar: x needs a non-empty last dimension, got ", x.sizes());
  auto xc = x.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t k = xc.size(-1), m = xc.numel() / k;
  auto q = torch::empty(xc.sizes(), torch::kInt8);
  std::vector<int64_t> scale_shape(xc.sizes().begin(), xc.sizes().end());
  scale_shape.back() = 1;
  auto a = torch::empty(scale_shape, torch::kFloat32);
  const float* xp = xc.data_ptr<float>();
  int8_t* qp = q.data_ptr<int8_t>();
  float* ap = a.data_ptr<float>();
  for (int64_t r = 0; r < m; ++r) {
    const float* row = xp + r * k;
    float mx = 0.0f;
    for (int64_t i = 0; i < k; ++i) mx = std::max(mx, std::fabs(row[i]));
    const float s = per_token_scale(mx, bits), inv = 1.0f / s;
    for (int64_t i = 0; i < k; ++i) qp[r * k + i] = int8_t(per_token_code(row[i], inv, bits));
    ap[r] = s;
  }
  return {q, a};
}

namespace {
struct PerTokenFakeQuantFn : public torch::autograd::Function<PerTokenFakeQuantFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t bits) {
    auto [q, a] = per_token_codes(x, int(bits));
    return q * a;
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) { return {grads[0], {}}; }
};
}  // namespace

torch::Tensor fake_quant_per_token(const torch::Tensor& x, int bits) {
  check_bits(bits, "bits");
  return PerTokenFakeQuantFn::apply(x, int64_t(bits));
}

torch::Tensor weight_codes(const torch::Tensor& w, const torch::Tensor& scale, int high_bits) {
  check_bits(high_bits, "high_bits");
  torch::NoGradGuard no_grad;
  auto wc = w.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  auto sc = scale.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  auto out = torch::empty(wc.sizes(), torch::kInt8);
  const int64_t channels = wc.size(0), per = wc.numel() / std::max<int64_t>(channels, 1);
  const float* wp = wc.data_ptr<float>();
  const float* sp = sc.data_ptr<float>();
  int8_t* op = out.data_ptr<int8_t>();
  for (int64_t c = 0; c < channels; ++c) {
    const float inv = 1.0f / sp[c];
    for (int64_t i = 0; i < per; ++i) op[c * per + i] = int8_t(weight_code(wp[c * per + i], inv, high_bits));
  }
  return out;
}

torch::Tensor derive_codes(const torch::Tensor& codes, int high_bits, int low_bits,
                           SecondRounding rounding) {
  check_bits(high_bits, "high_bits");
  check_bits(low_bits, "low_bits");
  BS_CHECK(low_bits <= high_bits, "`low_bits` (", low_bits, ") must not exceed `high_bits` (", high_bits, ")");
  BS_CHECK(codes.scalar_type() == torch::kInt8, "codes must be int8, got ", codes.scalar_type());
  auto c = codes.contiguous();
  auto out = torch::empty_like(c);
  const int8_t* ip = c.data_ptr<int8_t>();
  int8_t* op = out.data_ptr<int8_t>();
  for (int64_t i = 0, n = c.numel(); i < n; ++i)
    op[i] = int8_t(derive_code(ip[i], high_bits, low_bits, rounding));
  return out;
}

torch::Tensor init_weight_scale(const torch::Tensor& w, int high_bits) {
  torch::NoGradGuard no_grad;
  auto flat = w.detach().reshape({w.size(0), -1});
  auto mu = flat.mean(1);
  auto sigma = flat.numel() / w.size(0) > 1 ? flat.std(1) : torch::zeros_like(mu);
  auto s = torch::max((mu - 3 * sigma).abs(), (mu + 3 * sigma).abs()) / std::ldexp(1.0, high_bits - 1);
  return s.clamp_min(1e-8);
}

double weight_grad_scale(int64_t per_channel, const WeightQuantSpec& spec) {
  return lsq_grad_scale(per_channel, signed_qmax(spec.bits), spec.exact_scale_grad ? spec.high_bits - spec.bits : 0);
}

torch::Tensor lsq_init_scale(const torch::Tensor& x, int32_t qmax) {
  torch::NoGradGuard no_grad;
  auto s = 2.0 * x.detach().abs().mean() / std::sqrt(double(qmax));
  return s.clamp_min(1e-8).reshape({1});
}

torch::Tensor init_act_scale(const torch::Tensor& x, int bits) { return lsq_init_scale(x, unsigned_qmax(bits)); }

torch::Tensor init_act_scale_mse(const torch::Tensor& x, int bits) {
  torch::NoGradGuard no_grad;
  auto flat = x.detach().reshape({-1}).to(torch::kFloat32);
  if (flat.numel() > 65536) flat = flat.index({torch::linspace(0, flat.numel() - 1, 65536).to(torch::kLong)});
  const double qp = unsigned_qmax(bits);
  const double hi = flat.max().item<double>();
  if (!(hi > 0)) return init_act_scale(x, bits);
  double best = hi / qp, best_err = INFINITY;
  for (int k = 1; k <= 100; ++k) {
    const double a = hi * k / 100.0 / qp;
    const double err = (torch::round(torch::clamp(flat / a, 0, qp)) * a - flat).pow(2).mean().item<double>();
    if (err < best_err) best_err = err, best = a;
  }
  return torch::full({1}, static_cast<float>(best), x.options().dtype(torch::kFloat32));
}

}  // namespace bitswitch::quant
