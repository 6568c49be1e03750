// ImageNet networks of the paper's tables (Sec. 4.1): ResNet-18 / ResNet-50 (He et al. 2016,
// ImageNet stem; stride on the 3x3 conv of a bottleneck, "v1.5", as torchvision) and
// MobileNetV2 (Sandler et al. 2018), each multi-precision (SPEC.md Sec. 2-3).
//
// The module tree mirrors torchvision's so that a parameter name maps to torchvision's by one
// rule (models/pretrained.h): a QConv2d/QLinear holds `weight`/`bias` under the same name, and a
// SwitchableBatchNorm2d holds torchvision's BN tensors in its `bn_fp` child.
//
// MobileNetV2's linear bottleneck: a block's output has no ReLU, so the next block's expansion
// conv and the last 1x1 conv (features.18) see signed inputs. Those layers quantize their input
// with the signed symmetric quantizer (QuantOptions::signed_input); every other quantized layer
// follows a ReLU/ReLU6 and uses the unsigned one (SPEC Sec. 2).
#include <torch/torch.h>

#include "bitswitch/models/graph_nodes.h"
#include "bitswitch/models/registry_impl.h"
#include "bitswitch/nn/layers.h"

namespace bitswitch::models {
namespace {

enum class Act { kNone, kRelu, kRelu6 };

// conv -> BN [-> activation], children "0" and "1" like torchvision's Conv2dNormActivation
// and a ResNet's `downsample` Sequential.
class ConvBnImpl : public torch::nn::Module {
 public:
  ConvBnImpl(nn::QConv2dOptions conv_options, const std::vector<int>& bits, Act act) : act_(act) {
    const int64_t out = conv_options.out_channels();
    conv = register_module("0", nn::QConv2d(std::move(conv_options)));
    bn = register_module("1", nn::SwitchableBatchNorm2d(out, bits, conv.ptr()));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = bn(conv(x));
    if (act_ == Act::kRelu) return torch::relu(y);
    if (act_ == Act::kRelu6) return torch::clamp(y, 0, 6);
    return y;
  }
  // `p`: this module's path with a trailing dot.
  std::string graph(format::GraphBuilder& g, const std::string& p, const std::string& x) const {
    auto y = conv_bn_nodes(g, p + "0", *conv, p + "1", x);
    if (act_ == Act::kRelu) return g.relu(y);
    if (act_ == Act::kRelu6) return g.relu6(y);
    return y;
  }
  nn::QConv2d conv{nullptr};
  nn::SwitchableBatchNorm2d bn{nullptr};

 private:
  Act act_;
};
TORCH_MODULE(ConvBn);

nn::QConv2dOptions conv_opt(int64_t in, int64_t out, int64_t k, int64_t stride, nn::QuantOptions q) {
  return nn::QConv2dOptions(in, out, k).stride(stride).padding(k / 2).quant(std::move(q));
}

// ---------------- ResNet ----------------

class ResBlockImpl : public torch::nn::Module {
 public:
  // `bottleneck`: 1x1 -> 3x3 (stride) -> 1x1 with expansion 4; otherwise two 3x3 convs.
  ResBlockImpl(int64_t in, int64_t planes, int64_t stride, bool bottleneck, const ModelSpec& spec) {
    auto q = quant_options(spec);
    // Inside a block every ReLU output feeds one conv only: the ReLU is fused into that conv's
    // activation quantizer (QuantOptions::input_relu).
    auto qr = q;
    qr.input_relu(true);
    const int64_t out = bottleneck ? planes * 4 : planes;
    if (bottleneck) {
      conv1 = register_module("conv1", nn::QConv2d(conv_opt(in, planes, 1, 1, q)));
      bn1 = register_module("bn1", nn::SwitchableBatchNorm2d(planes, spec.bits, conv1.ptr()));
      conv2 = register_module("conv2", nn::QConv2d(conv_opt(planes, planes, 3, stride, qr)));
      bn2 = register_module("bn2", nn::SwitchableBatchNorm2d(planes, spec.bits, conv2.ptr()));
      conv3 = register_module("conv3", nn::QConv2d(conv_opt(planes, out, 1, 1, qr)));
      bn3 = register_module("bn3", nn::SwitchableBatchNorm2d(out, spec.bits, conv3.ptr()));
    } else {
      conv1 = register_module("conv1", nn::QConv2d(conv_opt(in, planes, 3, stride, q)));
      bn1 = register_module("bn1", nn::SwitchableBatchNorm2d(planes, spec.bits, conv1.ptr()));
      conv2 = register_module("conv2", nn::QConv2d(conv_opt(planes, planes, 3, 1, qr)));
      bn2 = register_module("bn2", nn::SwitchableBatchNorm2d(planes, spec.bits, conv2.ptr()));
    }
    if (stride != 1 || in != out)
      downsample = register_module("downsample", ConvBn(conv_opt(in, out, 1, stride, q), spec.bits, Act::kNone));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = bn2(conv2(bn1(conv1(x))));  // conv2 (and conv3) apply the ReLU of their input
    if (conv3) y = bn3(conv3(y));
    return torch::relu(y + (downsample ? downsample(x) : x));
  }
  std::string graph(format::GraphBuilder& g, const std::string& p, const std::string& x) const {
    auto y = conv_bn_nodes(g, p + "conv1", *conv1, p + "bn1", x);
    y = conv_bn_nodes(g, p + "conv2", *conv2, p + "bn2", y);
    if (conv3) y = conv_bn_nodes(g, p + "conv3", *conv3, p + "bn3", y);
    const auto shortcut = downsample ? downsample->graph(g, p + "downsample.", x) : x;
    return g.relu(g.add(y, shortcut));
  }

  nn::QConv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  nn::SwitchableBatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  ConvBn downsample{nullptr};
};
TORCH_MODULE(ResBlock);

class ResNetImpl : public ModelImpl {
 public:
  ResNetImpl(const ModelSpec& spec, const std::array<int, 4>& blocks, bool bottleneck) {
    conv1 = register_module("conv1", nn::QConv2d(nn::QConv2dOptions(spec.in_channels, 64, 7).stride(2).padding(3).quant(stem_options(spec))));
    bn1 = register_module("bn1", nn::SwitchableBatchNorm2d(64, spec.bits, conv1.ptr()));
    int64_t in = 64;
    for (int s = 0; s < 4; ++s) {
      const int64_t planes = int64_t(64) << s;
      torch::nn::ModuleList layer;
      for (int b = 0; b < blocks[s]; ++b) {
        layer->push_back(ResBlock(in, planes, (s > 0 && b == 0) ? 2 : 1, bottleneck, spec));
        in = bottleneck ? planes * 4 : planes;
      }
      layers_[s] = register_module("layer" + std::to_string(s + 1), layer);
    }
    fc = register_module("fc", nn::QLinear(nn::QLinearOptions(in, spec.num_classes).quant(edge_options(spec, true))));
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    auto y = torch::relu(bn1(conv1(x)));
    y = torch::max_pool2d(y, 3, 2, 1);
    for (auto& layer : layers_)
      for (auto& m : *layer) y = m->as<ResBlock>()->forward(y);
    y = torch::adaptive_avg_pool2d(y, {1, 1}).flatten(1);
    return fc(y);
  }
  format::Graph graph() const override {
    format::GraphBuilder g;
    auto y = g.relu(conv_bn_nodes(g, "conv1", *conv1, "bn1", g.input(conv1->options().in_channels())));
    y = g.maxpool(y, 3, 2, 1);
    for (size_t s = 0; s < layers_.size(); ++s)
      for (size_t b = 0; b < layers_[s]->size(); ++b)
        y = layers_[s].ptr()->ptr(b)->as<ResBlock>()->graph(
            g, "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".", y);
    y = g.flatten(g.global_avgpool(y));
    return g.finish(linear_node(g, "fc", *fc, y));
  }

  nn::QConv2d conv1{nullptr};
  nn::SwitchableBatchNorm2d bn1{nullptr};
  std::array<torch::nn::ModuleList, 4> layers_;
  nn::QLinear fc{nullptr};
};

// ---------------- MobileNetV2 ----------------

class InvertedResidualImpl : public torch::nn::Module {
 public:
  // `signed_in`: the block's input is a linear bottleneck output (signed).
  InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t expand, bool signed_in, const ModelSpec& spec)
      : residual_(stride == 1 && in == out) {
    auto q = quant_options(spec);
    const int64_t hidden = in * expand;
    auto conv = register_module("conv", std::make_shared<torch::nn::Module>());
    int idx = 0;
    auto next = [&] { return std::to_string(idx++); };
    if (expand != 1) {
      auto qe = q;
      qe.signed_input(signed_in);
      expand_ = conv->register_module(next(), ConvBn(conv_opt(in, hidden, 1, 1, qe), spec.bits, Act::kRelu6));
    }
    // The depthwise conv sees its input at most once (ReLU6 or the stem): unsigned.
    dw_ = conv->register_module(next(), ConvBn(conv_opt(hidden, hidden, 3, stride, q).groups(hidden), spec.bits, Act::kRelu6));
    project_ = conv->register_module(next(), nn::QConv2d(conv_opt(hidden, out, 1, 1, q)));
    project_bn_ = conv->register_module(next(), nn::SwitchableBatchNorm2d(out, spec.bits, project_.ptr()));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = expand_ ? expand_(x) : x;
    y = project_bn_(project_(dw_(y)));
    return residual_ ? x + y : y;
  }
  std::string graph(format::GraphBuilder& g, const std::string& p, const std::string& x) const {
    int idx = 0;
    auto next = [&] { return p + "conv." + std::to_string(idx++); };
    auto y = expand_ ? expand_->graph(g, next() + ".", x) : x;
    y = dw_->graph(g, next() + ".", y);
    const std::string proj = next(), proj_bn = next();
    y = conv_bn_nodes(g, proj, *project_, proj_bn, y);
    return residual_ ? g.add(x, y) : y;
  }

 private:
  bool residual_;
  ConvBn expand_{nullptr}, dw_{nullptr};
  nn::QConv2d project_{nullptr};
  nn::SwitchableBatchNorm2d project_bn_{nullptr};
};
TORCH_MODULE(InvertedResidual);

class MobileNetV2Impl : public ModelImpl {
 public:
  explicit MobileNetV2Impl(const ModelSpec& spec) {
    struct Stage {
      int64_t expand, channels, repeats, stride;
    };
    const Stage stages[] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                            {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    features_->push_back(ConvBn(nn::QConv2dOptions(spec.in_channels, 32, 3).stride(2).padding(1).quant(stem_options(spec)),
                                spec.bits, Act::kRelu6));
    int64_t in = 32;
    bool signed_in = false;  // the stem's output went through ReLU6
    for (const auto& st : stages) {
      for (int64_t r = 0; r < st.repeats; ++r) {
        features_->push_back(InvertedResidual(in, st.channels, r == 0 ? st.stride : 1, st.expand, signed_in, spec));
        in = st.channels;
        signed_in = true;
      }
    }
    auto q_last = quant_options(spec).signed_input(true);
    features_->push_back(ConvBn(conv_opt(in, 1280, 1, 1, q_last), spec.bits, Act::kRelu6));
    register_module("features", features_);
    auto classifier = register_module("classifier", std::make_shared<torch::nn::Module>());
    dropout_ = classifier->register_module("0", torch::nn::Dropout(0.2));
    fc_ = classifier->register_module("1", nn::QLinear(nn::QLinearOptions(1280, spec.num_classes).quant(edge_options(spec, true))));
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    auto y = x;
    for (size_t i = 0; i < features_->size(); ++i) {
      const auto m = features_[i];
      y = (i == 0 || i + 1 == features_->size()) ? m->as<ConvBn>()->forward(y) : m->as<InvertedResidual>()->forward(y);
    }
    y = torch::adaptive_avg_pool2d(y, {1, 1}).flatten(1);
    return fc_(dropout_(y));
  }
  format::Graph graph() const override {
    format::GraphBuilder g;
    auto y = g.input(features_.ptr()->ptr(0)->as<ConvBn>()->conv->options().in_channels());
    for (size_t i = 0; i < features_->size(); ++i) {
      const auto m = features_.ptr()->ptr(i);
      const std::string p = "features." + std::to_string(i) + ".";
      y = (i == 0 || i + 1 == features_->size()) ? m->as<ConvBn>()->graph(g, p, y)
                                                 : m->as<InvertedResidual>()->graph(g, p, y);
    }
    y = g.flatten(g.global_avgpool(y));  // the dropout is the identity at inference
    return g.finish(linear_node(g, "classifier.1", *fc_, y));
  }

 private:
  torch::nn::ModuleList features_;
  torch::nn::Dropout dropout_{nullptr};
  nn::QLinear fc_{nullptr};
};

}  // namespace

Model make_resnet18(const ModelSpec& spec) { return std::make_shared<ResNetImpl>(spec, std::array<int, 4>{2, 2, 2, 2}, false); }
Model make_resnet50(const ModelSpec& spec) { return std::make_shared<ResNetImpl>(spec, std::array<int, 4>{3, 4, 6, 3}, true); }
Model make_mobilenetv2(const ModelSpec& spec) { return std::make_shared<MobileNetV2Impl>(spec); }

}  // namespace bitswitch::models
