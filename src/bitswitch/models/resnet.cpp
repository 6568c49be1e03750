// CIFAR-style ResNet-20 (He et al. 2016, Sec. 4.2; the network of the paper's CIFAR-10 tables)
// with 1x1 projection shortcuts, and a small fast CNN; both multi-precision (SPEC.md Sec. 2-3).
#include <torch/torch.h>

#include "bitswitch/models/graph_nodes.h"
#include "bitswitch/models/registry_impl.h"
#include "bitswitch/nn/layers.h"

namespace bitswitch::models {
namespace {

using nn::QConv2d;
using nn::QConv2dOptions;
using nn::QLinear;
using nn::QLinearOptions;
using nn::QuantOptions;
using nn::SwitchableBatchNorm2d;

class BasicBlockImpl : public torch::nn::Module {
 public:
  // `input`: the quantized layer whose output feeds this block (for transitional BN).
  BasicBlockImpl(int64_t in, int64_t out, int64_t stride, const ModelSpec& spec, std::shared_ptr<nn::QuantLayer> input) {
    auto q = quant_options(spec);
    conv1 = register_module("conv1", QConv2d(QConv2dOptions(in, out, 3).stride(stride).padding(1).quant(q)));
    bn1 = register_module("bn1", SwitchableBatchNorm2d(out, spec.bits, conv1.ptr()));
    // conv2 reads only relu(bn1(...)): the ReLU is fused into its activation quantizer.
    auto q2 = q;
    q2.input_relu(true);
    conv2 = register_module("conv2", QConv2d(QConv2dOptions(out, out, 3).padding(1).quant(q2)));
    bn2 = register_module("bn2", SwitchableBatchNorm2d(out, spec.bits, conv2.ptr()));
    if (stride != 1 || in != out) {
      down_conv = register_module("down_conv", QConv2d(QConv2dOptions(in, out, 1).stride(stride).quant(q)));
      down_bn = register_module("down_bn", SwitchableBatchNorm2d(out, spec.bits, down_conv.ptr()));
      down_bn->set_input_source(input);
    }
    bn1->set_input_source(input);
    bn2->set_input_source(conv1.ptr());
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = bn2(conv2(bn1(conv1(x))));  // conv2 applies the ReLU (QuantOptions::input_relu)
    auto shortcut = down_conv ? down_bn(down_conv(x)) : x;
    return torch::relu(y + shortcut);
  }
  // The same computation as graph nodes; `p` is the block's module path with a trailing dot.
  std::string graph(format::GraphBuilder& g, const std::string& p, const std::string& x) const {
    auto y = conv_bn_nodes(g, p + "conv1", *conv1, p + "bn1", x);
    y = conv_bn_nodes(g, p + "conv2", *conv2, p + "bn2", y);
    const auto shortcut = down_conv ? conv_bn_nodes(g, p + "down_conv", *down_conv, p + "down_bn", x) : x;
    return g.relu(g.add(y, shortcut));
  }

  QConv2d conv1{nullptr}, conv2{nullptr}, down_conv{nullptr};
  SwitchableBatchNorm2d bn1{nullptr}, bn2{nullptr}, down_bn{nullptr};
};
TORCH_MODULE(BasicBlock);

class ResNetCifarImpl : public ModelImpl {
 public:
  ResNetCifarImpl(const ModelSpec& spec, int blocks_per_stage) {
    stem = register_module("stem", QConv2d(QConv2dOptions(spec.in_channels, 16, 3).padding(1).quant(stem_options(spec))));
    stem_bn = register_module("stem_bn", SwitchableBatchNorm2d(16, spec.bits, stem.ptr()));
    int64_t in = 16;
    std::shared_ptr<nn::QuantLayer> input = stem.ptr();  // what feeds the next block
    const int64_t widths[3] = {16, 32, 64};
    for (int s = 0; s < 3; ++s) {
      for (int b = 0; b < blocks_per_stage; ++b) {
        const int64_t stride = (s > 0 && b == 0) ? 2 : 1;
        auto block = BasicBlock(in, widths[s], stride, spec, input);
        blocks->push_back(block);
        input = block->conv2.ptr();
        in = widths[s];
      }
    }
    register_module("blocks", blocks);
    fc = register_module("fc", QLinear(QLinearOptions(in, spec.num_classes).quant(edge_options(spec, true))));
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    auto y = torch::relu(stem_bn(stem(x)));
    for (auto& m : *blocks) y = m->as<BasicBlock>()->forward(y);
    y = torch::adaptive_avg_pool2d(y, {1, 1}).flatten(1);
    return fc(y);
  }
  format::Graph graph() const override {
    format::GraphBuilder g;
    auto y = g.relu(conv_bn_nodes(g, "stem", *stem, "stem_bn", g.input(stem->options().in_channels())));
    for (size_t i = 0; i < blocks->size(); ++i)
      y = blocks.ptr()->ptr(i)->as<BasicBlock>()->graph(g, "blocks." + std::to_string(i) + ".", y);
    y = g.flatten(g.global_avgpool(y));
    return g.finish(linear_node(g, "fc", *fc, y));
  }

  QConv2d stem{nullptr};
  SwitchableBatchNorm2d stem_bn{nullptr};
  torch::nn::ModuleList blocks;
  QLinear fc{nullptr};
};

// Three 3x3 convs with pooling: a model for quick experiments and tests.
class SmallCnnImpl : public ModelImpl {
 public:
  explicit SmallCnnImpl(const ModelSpec& spec) {
    auto q = quant_options(spec);
    conv1 = register_module("conv1", QConv2d(QConv2dOptions(spec.in_channels, 32, 3).padding(1).quant(stem_options(spec))));
    bn1 = register_module("bn1", SwitchableBatchNorm2d(32, spec.bits, conv1.ptr()));
    conv2 = register_module("conv2", QConv2d(QConv2dOptions(32, 64, 3).padding(1).quant(q)));
    bn2 = register_module("bn2", SwitchableBatchNorm2d(64, spec.bits, conv2.ptr()));
    conv3 = register_module("conv3", QConv2d(QConv2dOptions(64, 128, 3).padding(1).quant(q)));
    bn3 = register_module("bn3", SwitchableBatchNorm2d(128, spec.bits, conv3.ptr()));
    fc = register_module("fc", QLinear(QLinearOptions(128, spec.num_classes).quant(edge_options(spec, true))));
    bn2->set_input_source(conv1.ptr());
    bn3->set_input_source(conv2.ptr());
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    auto y = torch::max_pool2d(torch::relu(bn1(conv1(x))), 2);
    y = torch::max_pool2d(torch::relu(bn2(conv2(y))), 2);
    y = torch::relu(bn3(conv3(y)));
    y = torch::adaptive_avg_pool2d(y, {1, 1}).flatten(1);
    return fc(y);
  }
  format::Graph graph() const override {
    format::GraphBuilder g;
    auto y = g.relu(conv_bn_nodes(g, "conv1", *conv1, "bn1", g.input(conv1->options().in_channels())));
    y = g.maxpool(y, 2, 2, 0);
    y = g.maxpool(g.relu(conv_bn_nodes(g, "conv2", *conv2, "bn2", y)), 2, 2, 0);
    y = g.relu(conv_bn_nodes(g, "conv3", *conv3, "bn3", y));
    y = g.flatten(g.global_avgpool(y));
    return g.finish(linear_node(g, "fc", *fc, y));
  }

  QConv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  SwitchableBatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  QLinear fc{nullptr};
};

}  // namespace

QuantOptions quant_options(const ModelSpec& spec) {
  return QuantOptions().bits(spec.bits).rounding(spec.rounding).exact_scale_grad(spec.exact_scale_grad).impl(spec.impl).act_init_mse(spec.act_init_mse);
}

QuantOptions edge_options(const ModelSpec& spec, bool quantize_input) {
  return quant_options(spec).fixed_bits(spec.first_last_bits).quantize_input(quantize_input);
}

QuantOptions stem_options(const ModelSpec& spec) {
  return edge_options(spec, spec.quantize_image).signed_input(spec.quantize_image);
}

Model make_resnet20(const ModelSpec& spec) { return std::make_shared<ResNetCifarImpl>(spec, 3); }
Model make_small_cnn(const ModelSpec& spec) { return std::make_shared<SmallCnnImpl>(spec); }

}  // namespace bitswitch::models
