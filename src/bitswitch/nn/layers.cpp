// Quantized conv/linear layers and switchable BatchNorm (SPEC.md Sec. 2-3; paper Sec. 3.1-3.2).
#include "bitswitch/nn/layers.h"

#include <torch/nn/functional/conv.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/init.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>

#include "bitswitch/util/error.h"

namespace bitswitch::nn {

// ---------------- QuantLayer ----------------

namespace {
ActInitReducer& act_init_reducer() {
  static ActInitReducer reducer;
  return reducer;
}
}  // namespace

void set_act_init_reducer(ActInitReducer reducer) { act_init_reducer() = std::move(reducer); }

void QuantLayer::register_quant_state(torch::nn::Module& self, int64_t out_channels, QuantOptions opt) {
  BS_CHECK(!(opt.input_relu() && opt.signed_input()), "a layer with an input ReLU has an unsigned input");
  BS_CHECK(!(opt.per_token_input() && (opt.input_relu() || opt.signed_input())),
           "per-token input quantization excludes `input_relu` and `signed_input`");
  BS_CHECK(opt.group_size() >= 0, "`group_size` must be >= 0, got ", opt.group_size());
  if (opt.fixed_bits() != 0 && opt.fixed_bits() != kFloatBits) opt.bits({opt.fixed_bits()});
  opt.bits(check_bit_list(opt.bits(), "layer bits"));
  qopt_ = opt;
  if (opt.fixed_bits() == kFloatBits) return;  // a full-precision layer holds no quantizer state
  weight_scale_ = self.register_parameter("weight_scale", torch::ones({out_channels}));
  weight_scale_init_ = self.register_buffer("weight_scale_init", torch::zeros({1}));
  if (opt.quantize_input() && !opt.per_token_input()) {
    for (int b : opt.bits()) {
      act_scale_[b] = self.register_parameter("act_scale_" + std::to_string(b), torch::ones({1}));
      act_scale_init_[b] = self.register_buffer("act_scale_init_" + std::to_string(b), torch::zeros({1}));
    }
  }
}

void QuantLayer::set_bits(LayerBits b) {
  if (qopt_.fixed_bits() == kFloatBits) {
    bits_ = {kFloatBits, kFloatBits};
    return;
  }
  if (qopt_.fixed_bits() != 0) {
    // A fixed-width layer is quantized whenever the network is.
    const int w = b.weight == kFloatBits ? kFloatBits : qopt_.fixed_bits();
    bits_ = {w, w};
    return;
  }
  auto allowed = [&](int v) {
    if (v == kFloatBits) return true;
    for (int x : qopt_.bits()) if (x == v) return true;
    return false;
  };
  BS_CHECK(allowed(b.weight), "weight width ", b.weight, " is not in this model's bit list ",
           format_bit_list(qopt_.bits()));
  BS_CHECK(allowed(b.act), "activation width ", b.act, " is not in this model's bit list ",
           format_bit_list(qopt_.bits()));
  BS_CHECK((b.weight == kFloatBits) == (b.act == kFloatBits),
           "weights and activations must be both quantized or both full precision");
  bits_ = b;
}

torch::Tensor QuantLayer::act_scale(int bits) const {
  auto it = act_scale_.find(bits);
  return it == act_scale_.end() ? torch::Tensor() : it->second;
}

bool QuantLayer::weight_scale_initialized() const {
  return weight_scale_init_.defined() && weight_scale_init_.item<float>() > 0;
}

torch::Tensor QuantLayer::scale_view(const torch::Tensor& w) const {
  const int64_t g = qopt_.group_size();
  if (g == 0) return w;
  BS_CHECK(w.dim() == 2 && w.size(1) % g == 0, "group-wise weight scales need a 2-D weight whose row length is a multiple of `group_size` ",
           g, ", got ", w.sizes());
  return w.reshape({-1, g});
}

void QuantLayer::ensure_weight_scale(const torch::Tensor& w) {
  if (weight_scale_initialized()) return;
  torch::NoGradGuard ng;
  weight_scale_.copy_(quant::init_weight_scale(scale_view(w), high_bits()));
  weight_scale_init_.fill_(1);
}

void QuantLayer::ensure_act_scale(const torch::Tensor& x_in) {
  auto& init = act_scale_init_.at(bits_.act);
  if (init.item<float>() != 0) return;
  torch::NoGradGuard ng;
  // With an input ReLU the scale is initialised from the ReLU's output, as without the fusion
  // (ReLU is idempotent, so an input that already went through it is fine too).
  const auto x = input_activation(x_in.detach());
  auto& scale = act_scale_.at(bits_.act);
  if (qopt_.signed_input()) {
    scale.copy_(quant::lsq_init_scale(x, quant::signed_qmax(bits_.act)));
  } else {
    auto s = qopt_.act_init_mse() ? quant::init_act_scale_mse(x, bits_.act) : quant::init_act_scale(x, bits_.act);
    if (act_init_reducer()) s = act_init_reducer()(s);
    scale.copy_(s);
  }
  init.fill_(1);
}

torch::Tensor QuantLayer::quant_weight(torch::Tensor& w) {
  if (bits_.weight == kFloatBits) return w;
  ensure_weight_scale(w);
  quant::WeightQuantSpec spec{high_bits(), bits_.weight, qopt_.rounding(), qopt_.exact_scale_grad()};
  if (qopt_.group_size() > 0) return quant::fake_quant_weight(scale_view(w), weight_scale_, spec, qopt_.impl()).view(w.sizes());
  return quant::fake_quant_weight(w, weight_scale_, spec, qopt_.impl());
}

torch::Tensor QuantLayer::input_activation(const torch::Tensor& x) const {
  return qopt_.input_relu() ? torch::relu(x) : x;
}

torch::Tensor QuantLayer::quant_input(const torch::Tensor& x) {
  if (bits_.act == kFloatBits || !qopt_.quantize_input()) return input_activation(x);
  if (qopt_.per_token_input()) return quant::fake_quant_per_token(x, 8);
  ensure_act_scale(x);
  auto& scale = act_scale_.at(bits_.act);
  if (qopt_.input_relu()) return quant::fake_quant_act(x, scale, bits_.act, qopt_.impl(), /*relu=*/true);
  if (qopt_.signed_input()) {
    // Signed, symmetric, per tensor: the weight quantizer with one "channel" and no second
    // rounding (h = l) is exactly that, LSQ gradients included (g = 1 / sqrt(numel * Qp)).
    quant::WeightQuantSpec spec{bits_.act, bits_.act, qopt_.rounding(), false};
    return quant::fake_quant_weight(x.reshape({1, -1}), scale, spec, qopt_.impl()).view(x.sizes());
  }
  return quant::fake_quant_act(x, scale, bits_.act, qopt_.impl());
}

std::pair<torch::Tensor, torch::Tensor> QuantLayer::integer_weight(int bits) {
  BS_CHECK(qopt_.fixed_bits() != kFloatBits, "integer_weight: a full-precision layer has no integer codes");
  BS_CHECK(std::find(qopt_.bits().begin(), qopt_.bits().end(), bits) != qopt_.bits().end(), "integer_weight: width ",
           bits, " is not in the layer's bit list ", format_bit_list(qopt_.bits()));
  torch::NoGradGuard ng;
  auto& w = weight_param();
  ensure_weight_scale(w);
  const int h = high_bits();
  const int64_t rows = w.size(0);
  auto codes = quant::derive_codes(quant::weight_codes(scale_view(w), weight_scale_, h), h, bits, qopt_.rounding());
  auto scales = weight_scale_.detach().to(torch::kCPU, torch::kFloat32) * std::ldexp(1.0f, h - bits);
  return {codes.reshape({rows, -1}), scales.reshape({rows, -1}).contiguous()};
}

torch::Tensor lm_integer_linear(const torch::Tensor& x, const torch::Tensor& codes, const torch::Tensor& scales,
                                int64_t group) {
  BS_CHECK(codes.dim() == 2 && codes.scalar_type() == torch::kInt8, "lm_integer_linear: codes must be int8 [N, K]");
  const int64_t n = codes.size(0), k = codes.size(1), g = group == 0 ? k : group;
  BS_CHECK(g > 0 && k % g == 0, "lm_integer_linear: group ", group, " must divide K = ", k);
  const int64_t groups = k / g;
  BS_CHECK(scales.numel() == n * groups, "lm_integer_linear: ", scales.numel(), " scales for ", n, " rows of ", groups,
           " groups");
  BS_CHECK(x.size(-1) == k, "lm_integer_linear: input has ", x.size(-1), " features, the layer takes ", k);
  torch::NoGradGuard ng;
  auto [q, a] = quant::per_token_codes_scalar(x.reshape({-1, k}), 8);  // [M, K] int8, [M, 1] float
  const int64_t m = q.size(0);
  // acc[g][m][n]: products of integers below 2^15 summed below 2^31, exact in double.
  auto qd = q.to(torch::kFloat64).view({m, groups, g}).permute({1, 0, 2});
  auto cd = codes.to(torch::kCPU, torch::kFloat64).view({n, groups, g}).permute({1, 2, 0});
  auto acc = torch::bmm(qd, cd).to(torch::kFloat32);  // float(acc), rounded to nearest
  auto s = scales.to(torch::kCPU, torch::kFloat32).reshape({n, groups}).t().contiguous();
  auto sum = acc[0] * s[0];
  for (int64_t j = 1; j < groups; ++j) sum = sum + acc[j] * s[j];  // in increasing order of g
  auto y = a * sum;
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  return y.view(shape).to(x.device());
}

QuantLayer::IntegerOperands QuantLayer::integer_operands(const torch::Tensor& x, torch::Tensor& w) {
  IntegerOperands ops;
  if (bits_.weight == kFloatBits) {
    ops.x = x.to(torch::kFloat64);
    ops.w = w.detach().to(torch::kFloat64);
    return ops;
  }
  BS_CHECK(qopt_.group_size() == 0 && !qopt_.per_token_input(),
           "integer_operands: layers with group-wise weight scales or per-token inputs evaluate through lm_integer_linear");
  ensure_weight_scale(w);
  const int h = high_bits(), l = bits_.weight;
  auto codes = quant::derive_codes(quant::weight_codes(w, weight_scale_, h), h, l, qopt_.rounding()).to(w.device());
  const auto seff = weight_scale_.detach().to(torch::kFloat32) * std::ldexp(1.0f, h - l);
  std::vector<int64_t> per_channel(size_t(w.dim()), 1);
  per_channel[0] = -1;
  if (bits_.act == kFloatBits || !qopt_.quantize_input()) {
    // Float input (an 8-bit first layer): the dequantized weight, as in training.
    ops.x = x.to(torch::kFloat64);
    ops.w = (codes.to(torch::kFloat32) * seff.view(per_channel)).to(torch::kFloat64);
    return ops;
  }
  ensure_act_scale(x);
  const float a = act_scale_.at(bits_.act).item<float>();
  const float inv = 1.0f / a;  // as the activation quantizers compute it
  double x_max;
  if (qopt_.signed_input()) {
    x_max = -double(quant::signed_qmin(bits_.act));
    ops.x = (x * inv).clamp(double(quant::signed_qmin(bits_.act)), double(quant::signed_qmax(bits_.act))).round();
  } else {
    x_max = quant::unsigned_qmax(bits_.act);
    ops.x = (x * inv).clamp(0.0, x_max).round();
  }
  ops.w = codes.to(torch::kFloat32);
  ops.out_scale = seff * a;
  const double k = double(ops.w[0].numel()), w_max = double(1 << (l - 1));
  ops.bound = k * x_max * w_max;
  ops.split_bound = k * 15 * w_max;
  return ops;
}

torch::Tensor QuantLayer::integer_product(const IntegerOperands& ops,
                                          const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& op) {
  if (!ops.out_scale.defined()) return op(ops.x, ops.w);  // real values, in double
  // On a GPU, float convolutions may run algorithms that are not exact on integers (Winograd,
  // FFT, TF32 inputs). In double, any of them stays far within 0.5 of the exact integer sums
  // (|sum| <= bound), so rounding recovers those sums exactly.
  if (ops.x.is_cuda()) return op(ops.x.to(torch::kFloat64), ops.w.to(torch::kFloat64)).round();
  // Integer codes: every partial sum of a float GEMM/convolution is exact while the sum of
  // |products| stays within 2^24, whatever the summation order or use of FMA.
  constexpr double kExact = double(1 << 24);
  if (ops.bound <= kExact) return op(ops.x, ops.w);
  // Otherwise split the input codes, x = 16 xh + xl with xl in [0, 15], and add in double.
  if (ops.split_bound <= kExact) {
    auto xh = (ops.x / 16).floor();
    auto xl = ops.x - xh * 16;
    return op(xh, ops.w).to(torch::kFloat64) * 16 + op(xl, ops.w).to(torch::kFloat64);
  }
  return op(ops.x.to(torch::kFloat64), ops.w.to(torch::kFloat64));
}

torch::Tensor QuantLayer::integer_output(const torch::Tensor& out, const IntegerOperands& ops, const torch::Tensor& bias) {
  auto y = out.to(torch::kFloat32);
  if (ops.out_scale.defined()) {
    std::vector<int64_t> shape(size_t(y.dim()), 1);
    shape[1] = -1;
    y = y * ops.out_scale.view(shape);
    if (bias.defined()) y = y + bias.view(shape);
  }
  return y;
}

// ---------------- QConv2d ----------------

QConv2dImpl::QConv2dImpl(QConv2dOptions options) : opt_(std::move(options)) {
  const int64_t k = opt_.kernel_size();
  const int64_t g = opt_.groups();
  BS_CHECK(g >= 1 && opt_.in_channels() % g == 0 && opt_.out_channels() % g == 0, "QConv2d: `groups` ", g,
           " must divide in_channels ", opt_.in_channels(), " and out_channels ", opt_.out_channels());
  weight = register_parameter("weight", torch::empty({opt_.out_channels(), opt_.in_channels() / g, k, k}));
  torch::nn::init::kaiming_normal_(weight, 0.0, torch::kFanOut, torch::kReLU);
  if (opt_.bias()) bias = register_parameter("bias", torch::zeros({opt_.out_channels()}));
  BS_CHECK(opt_.quant().group_size() == 0, "QConv2d: group-wise weight scales are for linear layers");
  register_quant_state(*this, opt_.out_channels(), opt_.quant());
}

torch::Tensor QConv2dImpl::forward(const torch::Tensor& x) {
  if (integer_eval_ && !is_training()) {
    torch::NoGradGuard ng;
    auto ops = integer_operands(input_activation(x), weight);
    // Without an output scale the products are real values: the bias joins the double sum.
    auto b = (bias.defined() && !ops.out_scale.defined()) ? bias.to(torch::kFloat64) : torch::Tensor();
    auto out = integer_product(ops, [&](const torch::Tensor& xi, const torch::Tensor& wi) {
      return torch::conv2d(xi, wi, b.defined() ? b.to(xi.scalar_type()) : b, opt_.stride(), opt_.padding(),
                           /*dilation=*/1, opt_.groups());
    });
    auto y = integer_output(out, ops, ops.out_scale.defined() ? bias : torch::Tensor());
    macs_ = y.size(1) * y.size(2) * y.size(3) * (opt_.in_channels() / opt_.groups()) * opt_.kernel_size() *
            opt_.kernel_size();
    return y;
  }
  auto y = torch::conv2d(quant_input(x), quant_weight(weight), bias, opt_.stride(), opt_.padding(), /*dilation=*/1,
                         opt_.groups());
  macs_ = y.size(1) * y.size(2) * y.size(3) * (opt_.in_channels() / opt_.groups()) * opt_.kernel_size() *
          opt_.kernel_size();
  return y;
}

// ---------------- QLinear ----------------

QLinearImpl::QLinearImpl(QLinearOptions options) : opt_(std::move(options)) {
  weight = register_parameter("weight", torch::empty({opt_.out_features(), opt_.in_features()}));
  const double bound = 1.0 / std::sqrt(double(opt_.in_features()));
  torch::nn::init::uniform_(weight, -bound, bound);
  if (opt_.bias()) {
    bias = register_parameter("bias", torch::empty({opt_.out_features()}));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
  const int64_t g = opt_.quant().group_size();
  BS_CHECK(g == 0 || opt_.in_features() % g == 0, "QLinear: `group_size` ", g, " must divide in_features ",
           opt_.in_features());
  register_quant_state(*this, g == 0 ? opt_.out_features() : opt_.out_features() * (opt_.in_features() / g),
                       opt_.quant());
}

torch::Tensor QLinearImpl::forward(const torch::Tensor& x) {
  macs_ = opt_.in_features() * opt_.out_features();
  if (integer_eval_ && !is_training()) {
    torch::NoGradGuard ng;
    if (qopt_.per_token_input() && bits_.weight != kFloatBits) {
      // W{l}A8 with per-token inputs: the integer decoder's layer (deploy/lm_kernels.h).
      auto [codes, scales] = integer_weight(bits_.weight);
      auto y = lm_integer_linear(x, codes, scales, qopt_.group_size());
      return bias.defined() ? y + bias : y;
    }
    auto ops = integer_operands(input_activation(x), weight);
    auto b = (bias.defined() && !ops.out_scale.defined()) ? bias.to(torch::kFloat64) : torch::Tensor();
    auto out = integer_product(ops, [&](const torch::Tensor& xi, const torch::Tensor& wi) {
      return torch::linear(xi, wi, b.defined() ? b.to(xi.scalar_type()) : b);
    });
    return integer_output(out, ops, ops.out_scale.defined() ? bias : torch::Tensor());
  }
  return torch::linear(quant_input(x), quant_weight(weight), bias);
}

// ---------------- SwitchableBatchNorm2d ----------------

SwitchableBatchNorm2dImpl::SwitchableBatchNorm2dImpl(int64_t channels, std::vector<int> bits,
                                                     std::shared_ptr<QuantLayer> source)
    : channels_(channels), source_(std::move(source)) {
  BS_CHECK(source_ != nullptr, "SwitchableBatchNorm2d needs the layer it follows");
  // A BN behind a fixed-width layer only ever sees that layer's width.
  const auto& q = source_->quant_options();
  if (q.fixed_bits() == kFloatBits) bits = {};
  else if (q.fixed_bits() != 0) bits = {q.fixed_bits()};
  bits_ = bits;
  bns_.emplace("fp", register_module("bn_fp", torch::nn::BatchNorm2d(channels)));
  for (int b : bits_) {
    const auto key = bn_key(0, b);
    bns_.emplace(key, register_module("bn_" + key, torch::nn::BatchNorm2d(channels)));
  }
}

void SwitchableBatchNorm2dImpl::set_input_source(std::shared_ptr<QuantLayer> input) {
  BS_CHECK(input_ == nullptr, "SwitchableBatchNorm2d: the input source is already set");
  input_ = std::move(input);
  if (!input_ || !input_->follows_config() || !source_->follows_config()) return;
  for (int p : input_->quant_options().bits())
    for (int b : bits_) {
      if (p == b) continue;
      const auto key = bn_key(p, b);
      bns_.emplace(key, register_module("bn_" + key, torch::nn::BatchNorm2d(channels_)));
    }
}

std::string SwitchableBatchNorm2dImpl::active_key() const {
  const int prev = input_ && input_->follows_config() ? input_->bits().weight : 0;
  return bn_key(prev, source_->bits().weight);
}

torch::nn::BatchNorm2d& SwitchableBatchNorm2dImpl::bn_for_key(const std::string& key) {
  auto it = bns_.find(key);
  BS_CHECK(it != bns_.end(), "no BatchNorm with key '", key, "'");
  return it->second;
}

torch::nn::BatchNorm2d& SwitchableBatchNorm2dImpl::bn_for(int bits) { return bn_for_key(bn_key(0, bits)); }

torch::Tensor SwitchableBatchNorm2dImpl::forward(const torch::Tensor& x) {
  auto& bn = bn_for_key(active_key());
  if (integer_eval_ && !is_training()) {
    // Folded BN in float, as the deploy runtime computes it (see set_integer_eval).
    torch::NoGradGuard ng;
    const float eps = float(bn->options.eps());
    auto alpha = bn->weight / (bn->running_var + eps).sqrt();
    auto beta = bn->bias - bn->running_mean * alpha;
    return x * alpha.view({1, -1, 1, 1}) + beta.view({1, -1, 1, 1});
  }
  return bn->forward(x);
}

namespace {
// Every tensor of a BN's state, by its name in the module (the set copy_bn copies).
std::vector<std::pair<const char*, torch::Tensor>> bn_state(const torch::nn::BatchNorm2d& bn) {
  return {{"weight", bn->weight},
          {"bias", bn->bias},
          {"running_mean", bn->running_mean},
          {"running_var", bn->running_var},
          {"num_batches_tracked", bn->num_batches_tracked}};
}

void copy_bn(torch::nn::BatchNorm2d& to, const torch::nn::BatchNorm2d& from) {
  torch::NoGradGuard ng;
  auto dst = bn_state(to);
  const auto src = bn_state(from);
  for (size_t i = 0; i < dst.size(); ++i) dst[i].second.copy_(src[i].second);
}
}  // namespace

void SwitchableBatchNorm2dImpl::init_widths_from_fp() {
  const auto& fp = bns_.at("fp");
  for (auto& [key, bn] : bns_)
    if (key != "fp") copy_bn(bn, fp);
}

void SwitchableBatchNorm2dImpl::init_transitional_from_uniform() {
  for (auto& [key, bn] : bns_) {
    const auto sep = key.find('_');
    if (sep != std::string::npos) copy_bn(bn, bns_.at(key.substr(sep + 1)));
  }
}

std::map<std::string, torch::Tensor> SwitchableBatchNorm2dImpl::transitional_mirror(const std::string& prefix) const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [key, bn] : bns_) {
    const auto sep = key.find('_');
    if (sep == std::string::npos) continue;
    for (const auto& [name, t] : bn_state(bns_.at(key.substr(sep + 1))))
      out.emplace(prefix + "bn_" + key + "." + name, t.detach().clone());
  }
  return out;
}

// ---------------- model helpers ----------------

std::vector<std::pair<std::string, std::shared_ptr<QuantLayer>>> quant_layers(torch::nn::Module& model) {
  std::vector<std::pair<std::string, std::shared_ptr<QuantLayer>>> out;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    if (auto q = std::dynamic_pointer_cast<QuantLayer>(item.value()); q && q->follows_config())
      out.emplace_back(item.key(), q);
  }
  return out;
}

void apply_bits(torch::nn::Module& model, const BitConfig& config) {
  std::map<std::string, bool> used;
  for (const auto& [name, _] : config.overrides()) used[name] = false;
  for (const auto& item : model.named_modules("", false)) {
    auto q = std::dynamic_pointer_cast<QuantLayer>(item.value());
    if (!q) continue;
    if (!q->follows_config()) {
      q->set_bits({config.default_bits(), config.default_bits()});
      continue;
    }
    if (used.count(item.key())) used[item.key()] = true;
    try {
      q->set_bits(config.for_layer(item.key()));
    } catch (const Error& e) {
      fail("layer '", item.key(), "': ", e.what());
    }
  }
  for (const auto& [name, u] : used) BS_CHECK(u, "bit config names unknown layer '", name, "'");
}

void set_integer_eval(torch::nn::Module& model, bool on) {
  for (const auto& m : model.modules(true)) {
    if (auto q = std::dynamic_pointer_cast<QuantLayer>(m)) q->set_integer_eval(on);
    if (auto bn = std::dynamic_pointer_cast<SwitchableBatchNorm2dImpl>(m)) bn->set_integer_eval(on);
  }
}

void init_widths_from_fp(torch::nn::Module& model) {
  for (const auto& m : model.modules(false))
    if (auto bn = std::dynamic_pointer_cast<SwitchableBatchNorm2dImpl>(m)) bn->init_widths_from_fp();
}

void init_transitional_from_uniform(torch::nn::Module& model) {
  for (const auto& m : model.modules(false))
    if (auto bn = std::dynamic_pointer_cast<SwitchableBatchNorm2dImpl>(m)) bn->init_transitional_from_uniform();
}

std::map<std::string, torch::Tensor> transitional_mirror_state(const torch::nn::Module& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : model.named_modules("", /*include_self=*/false))
    if (auto bn = std::dynamic_pointer_cast<SwitchableBatchNorm2dImpl>(item.value()))
      out.merge(bn->transitional_mirror(item.key() + "."));
  return out;
}

bool is_transitional_bn_tensor(const std::string& name) {
  // A module path component "bn_<digits>_<digits>".
  size_t pos = 0;
  while ((pos = name.find("bn_", pos)) != std::string::npos) {
    if (pos == 0 || name[pos - 1] == '.') {
      size_t i = pos + 3, digits1 = 0, digits2 = 0;
      while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i, ++digits1;
      if (digits1 && i < name.size() && name[i] == '_') {
        ++i;
        while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i, ++digits2;
        if (digits2 && (i == name.size() || name[i] == '.')) return true;
      }
    }
    pos += 3;
  }
  return false;
}

ParamGroups split_params(torch::nn::Module& model) {
  ParamGroups g;
  std::set<const void*> seen;
  for (const auto& m : model.modules(true)) {
    auto q = std::dynamic_pointer_cast<QuantLayer>(m);
    for (const auto& p : m->named_parameters(/*recurse=*/false)) {
      if (!seen.insert(p.value().unsafeGetTensorImpl()).second) continue;
      if (q && p.key() == "weight") g.weights.push_back(p.value());
      else g.others.push_back(p.value());
    }
  }
  return g;
}

}  // namespace bitswitch::nn
