// Quantized layers of the multi-precision network (SPEC.md Sec. 2-3; paper Sec. 3.1, 3.2):
// QConv2d / QLinear hold FP weights, one shared per-channel weight scale (for the highest
// width) and one activation scale per width; SwitchableBatchNorm2d holds one BN per width.
// The current width of a layer is set explicitly by apply_bits(model, BitConfig).
#pragma once
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bitswitch/nn/bit_config.h"
#include "bitswitch/quant/fake_quant.h"

namespace bitswitch::nn {

struct QuantOptions {
  // The widths the layer can run at, high to low; bits[0] is the stored width h.
  TORCH_ARG(std::vector<int>, bits) = {8, 6, 4, 2};
  // 0: the layer follows the BitConfig. kFloatBits: always full precision (first/last layer
  // by default). 8: always 8-bit (the "first/last layer at 8 bits" option).
  TORCH_ARG(int, fixed_bits) = 0;
  // Quantize the layer's input (unsigned, after a ReLU). Off for the first conv (image input).
  TORCH_ARG(bool, quantize_input) = true;
  // The input is signed (no ReLU before it, e.g. MobileNetV2's linear bottleneck output):
  // symmetric x_b = clamp(round(x / a), -2^(b-1), 2^(b-1) - 1) * a, still one scale per width
  // (SPEC Sec. 2 names a signed variant for MobileNetV2; this one has no zero point).
  TORCH_ARG(bool, signed_input) = false;
  // The layer applies a ReLU to its input first: relu(x), then the layer. Quantized, the ReLU is
  // fused into the activation quantizer (its clamp at 0; quant::fake_quant_act's `relu`), which
  // saves the ReLU's output and its passes over memory; the results are those of a separate
  // torch::relu. For an input that only this layer reads (ResNet's conv2 after bn1).
  TORCH_ARG(bool, input_relu) = false;
  // Inputs quantized per token (the last dimension), signed symmetric 8-bit with the dynamic
  // scale max|x_t| / 127, at every width and without a learned scale (SPEC Sec. 9, W{b}A8;
  // quant::fake_quant_per_token). For the linear layers of a language model.
  TORCH_ARG(bool, per_token_input) = false;
  // Weight scale per group of `group_size` consecutive input elements of each output row (one
  // scale per (row, group), SPEC Sec. 9) instead of per output channel; 0: per output channel.
  // The quantizer is the per-channel one applied to the weight viewed as [rows * groups, G], so
  // the rounding, the second rounding and the LSQ gradient (N = G) are those of Sec. 2. Linear only.
  TORCH_ARG(int64_t, group_size) = 0;
  TORCH_ARG(quant::SecondRounding, rounding) = quant::SecondRounding::kHalfUp;
  TORCH_ARG(bool, exact_scale_grad) = false;
  TORCH_ARG(quant::Impl, impl) = quant::Impl::kAuto;
  // Activation-scale initialisation: LSQ's 2 mean|x| / sqrt(Qp) (SPEC), or the MSE-optimal range.
  TORCH_ARG(bool, act_init_mse) = false;
};

// Shared state and logic of quantized conv/linear layers.
class QuantLayer {
 public:
  virtual ~QuantLayer() = default;
  void set_bits(LayerBits b);
  LayerBits bits() const { return bits_; }
  const QuantOptions& quant_options() const { return qopt_; }
  int high_bits() const { return qopt_.bits().front(); }
  bool follows_config() const { return qopt_.fixed_bits() == 0; }
  virtual torch::Tensor& weight_param() = 0;
  torch::Tensor& weight_scale() { return weight_scale_; }
  // The weight as its quantizer sees it: [scale rows, elements per scale] ([O * I / G, G] for
  // group-wise scales, the weight itself otherwise).
  torch::Tensor scale_view(const torch::Tensor& w) const;
  torch::Tensor act_scale(int bits) const;  // undefined tensor if `bits` is not in the list
  bool weight_scale_initialized() const;
  int64_t macs_per_sample() const { return macs_; }  // from the last forward, for BitOPs
  // Integer-exact evaluation (see set_integer_eval below).
  void set_integer_eval(bool on) { integer_eval_ = on; }
  bool integer_eval() const { return integer_eval_; }
  // The weight as integers at width `bits` of the bit list (initialising the scale lazily):
  // int8 codes [rows, K] (K = elements per output row; quant::weight_codes at h bits, then
  // quant::derive_codes) and the effective scales s * 2^(h - bits) as float [rows, K / G]
  // ([rows, 1] per output channel). Export and the integer-exact evaluation both read this.
  std::pair<torch::Tensor, torch::Tensor> integer_weight(int bits);

 protected:
  // `out_channels`: the number of weight scales (rows * groups with group-wise scales).
  void register_quant_state(torch::nn::Module& self, int64_t out_channels, QuantOptions opt);
  // Scale initialisation on the first quantized use (weight scale; activation scale of the
  // current width), shared by the fake-quant and the integer-exact paths.
  void ensure_weight_scale(const torch::Tensor& w);
  void ensure_act_scale(const torch::Tensor& x);
  // Fake-quantized weight and input at the current width (initialising scales lazily).
  torch::Tensor quant_weight(torch::Tensor& w);
  torch::Tensor quant_input(const torch::Tensor& x);
  // relu(x) when the options ask for an input ReLU, else x (the paths that do not fuse it).
  torch::Tensor input_activation(const torch::Tensor& x) const;

  // Operands of the integer-exact evaluation: x and w in double (integer codes when quantized),
  // and the per-channel scale of the output (undefined when the products are already real values).
  struct IntegerOperands {
    torch::Tensor x, w, out_scale;
    double bound = 0;        // integer codes: the largest possible sum of |products| of one output
    double split_bound = 0;  // the same for x split into 4-bit parts
  };
  IntegerOperands integer_operands(const torch::Tensor& x, torch::Tensor& w);
  // op(x, w) (a conv or linear) computed exactly: in float when no partial sum of integer codes
  // can exceed 2^24, else over 4-bit halves of x or in double. Real-valued operands: in double.
  static torch::Tensor integer_product(const IntegerOperands& ops,
                                       const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& op);
  // out (double) -> float, times out_scale, plus bias: the deploy runtime's arithmetic.
  static torch::Tensor integer_output(const torch::Tensor& out, const IntegerOperands& ops, const torch::Tensor& bias);

  QuantOptions qopt_;
  LayerBits bits_;
  bool integer_eval_ = false;
  torch::Tensor weight_scale_;       // [C_out], for width h
  torch::Tensor weight_scale_init_;  // buffer, 1 once initialised
  std::map<int, torch::Tensor> act_scale_;       // width -> [1]
  std::map<int, torch::Tensor> act_scale_init_;  // width -> buffer
  int64_t macs_ = 0;
};

struct QConv2dOptions {
  QConv2dOptions(int64_t in, int64_t out, int64_t kernel) : in_channels_(in), out_channels_(out), kernel_size_(kernel) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size);
  TORCH_ARG(int64_t, stride) = 1;
  TORCH_ARG(int64_t, padding) = 0;
  // Grouped convolution (groups == in_channels == out_channels: depthwise). The weight is
  // [out, in / groups, k, k]; its scale stays per output channel.
  TORCH_ARG(int64_t, groups) = 1;
  TORCH_ARG(bool, bias) = false;
  TORCH_ARG(QuantOptions, quant) = {};
};

class QConv2dImpl : public torch::nn::Module, public QuantLayer {
 public:
  explicit QConv2dImpl(QConv2dOptions options);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor& weight_param() override { return weight; }
  const QConv2dOptions& options() const { return opt_; }

  torch::Tensor weight, bias;

 private:
  QConv2dOptions opt_;
};
TORCH_MODULE(QConv2d);

struct QLinearOptions {
  QLinearOptions(int64_t in, int64_t out) : in_features_(in), out_features_(out) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(QuantOptions, quant) = {};
};

class QLinearImpl : public torch::nn::Module, public QuantLayer {
 public:
  explicit QLinearImpl(QLinearOptions options);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor& weight_param() override { return weight; }
  const QLinearOptions& options() const { return opt_; }

  torch::Tensor weight, bias;

 private:
  QLinearOptions opt_;
};
TORCH_MODULE(QLinear);

// One BatchNorm2d per width ("fp", "8", "6", ...), selected by the width of the layer it
// follows (`source`). SPEC Sec. 3. With an input source (the quantized layer whose output
// feeds `source`), it also holds transitional BNs "bn_<p>_<b>" for every ordered pair of
// distinct widths, and selects by nn::bn_key(input source's width, source's width): uniform
// configs keep using bn_<b>; mixed configs use the BN of the (previous, this) width pair.
class SwitchableBatchNorm2dImpl : public torch::nn::Module {
 public:
  SwitchableBatchNorm2dImpl(int64_t channels, std::vector<int> bits, std::shared_ptr<QuantLayer> source);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::BatchNorm2d& bn_for(int bits);  // the uniform BN of `bits` ("fp" for kFloatBits)
  torch::nn::BatchNorm2d& bn_for_key(const std::string& key);
  // Sets the layer feeding `source`; registers the transitional BNs when it follows the
  // config. Call from the model constructor (so state dicts are stable), at most once.
  void set_input_source(std::shared_ptr<QuantLayer> input);
  // The key of the BN the next forward uses: nn::bn_key(prev width, source width), where the
  // previous width is the input source's weight width (0 without a config-following source).
  std::string active_key() const;
  // Every BN by key ("fp", "8", ..., "8_4", ...), as the exporter stores them.
  const std::map<std::string, torch::nn::BatchNorm2d>& bns() const { return bns_; }
  // Copies the FP BN's parameters and running statistics into every other BN.
  void init_widths_from_fp();
  // Copies bn_<b> into every transitional bn_<p>_<b> (when HASB training starts).
  void init_transitional_from_uniform();
  // What init_transitional_from_uniform would store, without changing this module: tensor name
  // ("<prefix>bn_8_4.running_mean") -> a copy of the uniform BN's tensor.
  std::map<std::string, torch::Tensor> transitional_mirror(const std::string& prefix) const;
  const std::vector<int>& widths() const { return bits_; }
  std::shared_ptr<QuantLayer> source() const { return source_; }
  void set_integer_eval(bool on) { integer_eval_ = on; }
  std::shared_ptr<QuantLayer> input_source() const { return input_; }

 private:
  bool integer_eval_ = false;
  std::vector<int> bits_;
  int64_t channels_ = 0;
  std::map<std::string, torch::nn::BatchNorm2d> bns_;  // by bn_key
  std::shared_ptr<QuantLayer> source_, input_;
};
TORCH_MODULE(SwitchableBatchNorm2d);

// ---- whole-model helpers ----

// Quantized layers that follow the BitConfig, by full module name, in registration order.
std::vector<std::pair<std::string, std::shared_ptr<QuantLayer>>> quant_layers(torch::nn::Module& model);
// Sets every quantized layer's width from `config`. Layers with fixed widths keep theirs.
void apply_bits(torch::nn::Module& model, const BitConfig& config);
// Every switchable BN takes its FP statistics for all widths (starting from an FP32 model).
void init_widths_from_fp(torch::nn::Module& model);
// Every transitional BN takes the statistics of its uniform BN bn_<b> (starting HASB).
void init_transitional_from_uniform(torch::nn::Module& model);
// The state of every transitional BN as init_transitional_from_uniform would set it, by full
// tensor name, leaving the model unchanged (a checkpoint writer stores it in place of the model's).
std::map<std::string, torch::Tensor> transitional_mirror_state(const torch::nn::Module& model);
// True for the name of a tensor of a transitional BN ("....bn_8_4.running_mean").
bool is_transitional_bn_tensor(const std::string& name);

// The language model's W{l}A8 linear layer computed exactly as the integer decoder defines it
// (deploy/lm_kernels.h): x [..., K] float; its tokens quantized to 8 bits by the scalar
// per-token definition (quant::per_token_codes_scalar); codes int8 [N, K]; scales float
// [N, K / G] (G = group, 0: K). acc_g = sum over group g of q * c, exact (in double, every
// partial sum is an integer below 2^31); y = a * (sum over g in increasing order, in float, of
// float(acc_g) * s_g). Returns [..., N] float on x's device.
torch::Tensor lm_integer_linear(const torch::Tensor& x, const torch::Tensor& codes, const torch::Tensor& scales,
                                int64_t group);

// Integer-exact evaluation, on or off for every quantized layer and switchable BN of `model`.
// In eval mode it computes what the deployed integer runtime computes (deploy/runtime.h), so the
// accuracy a checkpoint reports at a width is the accuracy of its deployed integer model:
// convolutions of the integer codes in double precision (exact), the output scaled by
// fl(a * s_c * 2^d) in float, and BN as x * alpha + beta with alpha = gamma / sqrt(var + eps),
// beta = beta_bn - mean * alpha (two float roundings; the runtime uses no fused multiply-add).
// Full-precision layers are computed in double and rounded to float once. Layers with per-token
// inputs (the language model's, QuantOptions::per_token_input) compute lm_integer_linear, with
// per-channel or group-wise scales. Training-mode forwards are unaffected.
void set_integer_eval(torch::nn::Module& model, bool on);

// A process-wide transform applied to a freshly computed activation-scale init before it is
// stored; data-parallel training installs one that averages the init over the ranks
// (train/distributed.h, ActInitAveraging). Empty (the default): the init is used as computed.
using ActInitReducer = std::function<torch::Tensor(const torch::Tensor&)>;
void set_act_init_reducer(ActInitReducer reducer);

// Parameter groups of SPEC Sec. 4: conv/linear weights (with weight decay) and the rest
// (weight/activation scales, BN, biases: no weight decay, learning rate scaled by ALRS).
struct ParamGroups {
  std::vector<torch::Tensor> weights;
  std::vector<torch::Tensor> others;
};
ParamGroups split_params(torch::nn::Module& model);

}  // namespace bitswitch::nn
