// Train-deploy equivalence (SPEC.md Sec. 7): every model of the registry, exported (its own op
// graph) and switched with integer operations, run by the integer runtime, reproduces the
// integer-exact evaluation of the LibTorch model (nn::set_integer_eval) at every width of its
// list and for a per-layer configuration: the same top-1 on every image, logits within 1e-5 of
// max(1, max |logit|) (the only differences are float summation orders of pooling and of the
// double-precision FP layers). The integer-exact evaluation the trainer reports is the same
// network as the fake-quant forward. ImageNet networks run on reduced inputs (3 x 32 x 32).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "bitswitch/data/datasets.h"
#include "bitswitch/data/loader.h"
#include "bitswitch/deploy/export.h"
#include "bitswitch/deploy/runtime.h"
#include "bitswitch/models/graph_nodes.h"
#include "bitswitch/models/model.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/util/error.h"
#include "test_util.h"

using namespace bitswitch;

namespace {

const data::DatasetPair& fmnist() {
  static const data::DatasetPair d = data::load_fashion_mnist();
  return d;
}

// A few joint-training steps (every width, highest first) on real images, so scales and BN
// statistics are those of a trained model.
models::Model trained(const std::string& arch, const std::vector<int>& bits) {
  torch::manual_seed(3);
  models::ModelSpec spec;
  spec.name = arch;
  spec.bits = bits;
  auto model = models::create_model(spec);
  data::LoaderOptions lo;
  lo.batch_size = 64;
  lo.shuffle = true;
  lo.limit = 384;
  data::Loader loader(fmnist().train, lo);
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(2e-3));
  model->train();
  loader.start_epoch(0);
  data::Batch b;
  while (loader.next(b)) {
    for (int w : bits) {
      nn::apply_bits(*model, nn::BitConfig::uniform(w));
      opt.zero_grad();
      torch::nn::functional::cross_entropy(model->forward(b.images), b.labels).backward();
      opt.step();
    }
  }
  model->eval();
  return model;
}

torch::Tensor test_images(int64_t n) {
  data::LoaderOptions lo;
  lo.batch_size = n;
  lo.limit = n;
  data::Loader loader(fmnist().test, lo);
  loader.start_epoch(0);
  data::Batch b;
  EXPECT_TRUE(loader.next(b));
  return b.images.contiguous();
}

void expect_equivalent(models::ModelImpl& model, const deploy::Artifact& master, const std::map<std::string, int>& widths,
                       const torch::Tensor& x, const std::string& what) {
  torch::NoGradGuard ng;
  nn::set_integer_eval(model, true);
  nn::apply_bits(model, nn::layer_bits_config(widths, master.bits.front()));
  const auto ref = model.forward(x).contiguous();
  nn::set_integer_eval(model, false);
  deploy::RuntimeOptions ro;
  ro.threads = 1;
  const deploy::Runtime rt(deploy::switch_widths(master, widths), ro);
  const int n = int(x.size(0));
  auto got_v = rt.forward(x.data_ptr<float>(), n, int(x.size(2)), int(x.size(3)));
  const auto got = torch::from_blob(got_v.data(), ref.sizes(), torch::kFloat32);
  // Everything up to the last activation quantizer is computed identically; the float sums after
  // it (pooling, the FP classifier) differ only in summation order.
  const double scale = std::max(1.0, ref.abs().max().item<double>());
  EXPECT_LE((ref - got).abs().max().item<double>(), 1e-5 * scale) << what;
  EXPECT_EQ(ref.argmax(1).ne(got.argmax(1)).sum().item<int64_t>(), 0) << what;
}

void expect_every_width(models::ModelImpl& model, const models::ModelSpec& spec, const torch::Tensor& x) {
  const auto master = deploy::export_model(model, spec);
  // The artifact's graph is the model's own, and survives the file format.
  std::map<std::string, std::string> meta;
  (void)deploy::artifact_tensors(master, &meta);
  EXPECT_EQ(nlohmann::json::parse(meta.at("graph")), format::graph_to_json(model.graph()));
  std::map<std::string, int> uniform;
  for (const auto& [name, _] : nn::quant_layers(model)) uniform[name] = 0;
  for (int w : spec.bits) {
    for (auto& [_, b] : uniform) b = w;
    expect_equivalent(model, master, uniform, x, spec.name + " w" + std::to_string(w));
  }
  std::map<std::string, int> mixed = uniform;
  int i = 0;
  for (auto& [_, b] : mixed) b = spec.bits[size_t(i++) % spec.bits.size()];
  expect_equivalent(model, master, mixed, x, spec.name + " mixed");
}

}  // namespace

TEST(DeployEquivalence, RuntimeReproducesTheModelAtEveryWidthAndPerLayer) {
  torch::set_num_threads(1);
  const auto x = test_images(256);
  for (const std::string arch : {"resnet20", "smallcnn"}) {
    const std::vector<int> bits = {8, 6, 4, 2};
    auto model = trained(arch, bits);
    models::ModelSpec spec;
    spec.name = arch;
    spec.bits = bits;
    expect_every_width(*model, spec, x);
  }
}

namespace {
// Fashion-MNIST images as 3 x 32 x 32 inputs (bilinear upsampling, the gray value in every
// channel): real image structure for the ImageNet networks at a reduced resolution.
torch::Tensor rgb32(const torch::Tensor& gray) {
  namespace F = torch::nn::functional;
  auto y = F::interpolate(gray, F::InterpolateFuncOptions().size(std::vector<int64_t>{32, 32}).mode(torch::kBilinear).align_corners(false));
  return y.repeat({1, 3, 1, 1}).contiguous();
}

// Scales and BN statistics from real activations: training-mode forwards at every width
// (without them the BNs would be the identity and the activation scales 1).
models::Model calibrated(const models::ModelSpec& spec, const torch::Tensor& x) {
  torch::manual_seed(5);
  auto model = models::create_model(spec);
  torch::NoGradGuard ng;
  model->train();
  for (int pass = 0; pass < 3; ++pass)
    for (int w : spec.bits) {
      nn::apply_bits(*model, nn::BitConfig::uniform(w));
      model->forward(x);
    }
  model->eval();
  return model;
}
}  // namespace

TEST(DeployEquivalence, ImageNetNetworksOnReducedInputs) {
  torch::set_num_threads(2);
  const auto calib = rgb32(test_images(32));
  const auto x = rgb32(test_images(12));
  for (const std::string arch : {"resnet18", "resnet50", "mobilenetv2"}) {
    models::ModelSpec spec;
    spec.name = arch;
    spec.in_channels = 3;
    spec.num_classes = 10;
    spec.bits = {8, 6, 4, 2};
    auto model = calibrated(spec, calib);
    expect_every_width(*model, spec, x);
  }
}

// The all-integer networks: first conv and classifier at 8 bits and the image quantized
// (first_last_bits 8, quantize_image): the first conv runs as an integer GEMM on the signed codes
// of the image (on AVX-512 VNNI with its 3 or 1 input channels padded to 4), equal to the model's
// integer-exact evaluation like every other layer.
TEST(DeployEquivalence, AllIntegerNetworksWithAQuantizedImage) {
  torch::set_num_threads(2);
  // Channels that differ (rgb32 repeats the gray value), so a channel mix-up in the padded input
  // shows.
  const auto tint = torch::tensor({1.0f, 0.6f, -0.5f}).view({1, 3, 1, 1});
  const auto gray = test_images(32), calib = rgb32(gray) * tint, x = rgb32(test_images(12)) * tint;
  for (const std::string arch : {"resnet20", "resnet18", "mobilenetv2"}) {
    models::ModelSpec spec;
    spec.name = arch;
    spec.in_channels = arch == "resnet20" ? 1 : 3;
    spec.num_classes = 10;
    spec.bits = {8, 4, 2};
    spec.first_last_bits = 8;
    spec.quantize_image = true;
    auto model = calibrated(spec, arch == "resnet20" ? gray : calib);
    const auto master = deploy::export_model(*model, spec);
    const deploy::Runtime rt(deploy::switch_uniform(master, 8));
    const auto plan = rt.plan();
    const auto first = std::find_if(plan.begin(), plan.end(), [](const std::string& l) { return l.rfind("layer", 0) == 0; });
    ASSERT_NE(first, plan.end());
    EXPECT_NE(first->find("int gemm w8 in:s8"), std::string::npos) << arch << ": " << *first;
    expect_every_width(*model, spec, arch == "resnet20" ? test_images(12) : x);
  }
  models::ModelSpec bad;
  bad.name = "resnet20";
  bad.quantize_image = true;
  EXPECT_ERROR_CONTAINS(models::create_model(bad), "`quantize_image` needs `first_last_bits: 8`");
}

namespace {
// A model with a grouped (not depthwise) convolution: the runtime cannot run it, so export refuses.
class GroupedImpl : public models::ModelImpl {
 public:
  explicit GroupedImpl(const models::ModelSpec& spec) {
    conv = register_module("conv", nn::QConv2d(nn::QConv2dOptions(4, 8, 3).padding(1).groups(2).quant(nn::QuantOptions().bits(spec.bits))));
    bn = register_module("bn", nn::SwitchableBatchNorm2d(8, spec.bits, conv.ptr()));
    fc = register_module("fc", nn::QLinear(nn::QLinearOptions(8, 10).quant(nn::QuantOptions().fixed_bits(nn::kFloatBits))));
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    return fc(torch::adaptive_avg_pool2d(torch::relu(bn(conv(x))), {1, 1}).flatten(1));
  }
  format::Graph graph() const override {
    format::GraphBuilder g;
    auto y = g.relu(models::conv_bn_nodes(g, "conv", *conv, "bn", g.input(4)));
    return g.finish(models::linear_node(g, "fc", *fc, g.flatten(g.global_avgpool(y))));
  }
  nn::QConv2d conv{nullptr};
  nn::SwitchableBatchNorm2d bn{nullptr};
  nn::QLinear fc{nullptr};
};
}  // namespace

TEST(DeployEquivalence, ExportRefusesWhatCannotBeDeployedNamingTheLayer) {
  torch::NoGradGuard ng;
  models::ModelSpec spec;
  spec.name = "grouped";
  spec.in_channels = 4;
  spec.bits = {8, 4};
  GroupedImpl m(spec);
  m.train();
  nn::apply_bits(m, nn::BitConfig::uniform(8));
  m.forward(torch::rand({2, 4, 6, 6}));
  nn::apply_bits(m, nn::BitConfig::uniform(4));
  m.forward(torch::rand({2, 4, 6, 6}));
  m.eval();
  EXPECT_ERROR_CONTAINS(deploy::export_model(m, spec),
                        "export: model 'grouped' cannot be deployed: layer 'conv': a grouped convolution with 2 groups");
}

TEST(DeployEquivalence, ExportStoresTheTrainingCodesAndScales) {
  torch::set_num_threads(1);
  auto model = trained("smallcnn", {8, 4});
  models::ModelSpec spec;
  spec.name = "smallcnn";
  spec.bits = {8, 4};
  const auto a = deploy::export_model(*model, spec);
  for (const auto& [name, q] : nn::quant_layers(*model)) {
    const auto& l = a.layer(name);
    const auto codes = quant::weight_codes(q->weight_param(), q->weight_scale(), 8).contiguous();
    ASSERT_EQ(l.codes.size(), size_t(codes.numel()));
    EXPECT_TRUE(std::equal(l.codes.begin(), l.codes.end(), codes.data_ptr<int8_t>())) << name;
    // The trained fake-quant weight at 4 bits is exactly code_4 * s * 2^4.
    const auto s4 = deploy::switch_uniform(a, 4);
    const auto& l4 = s4.layer(name);
    auto w4 = quant::fake_quant_weight(q->weight_param().detach(), q->weight_scale().detach(),
                                       quant::WeightQuantSpec{8, 4, quant::SecondRounding::kHalfUp, false})
                  .contiguous()
                  .view({l4.out, -1});
    for (int64_t c = 0; c < l4.out; ++c)
      for (int64_t k = 0; k < w4.size(1); ++k)
        ASSERT_EQ(w4[c][k].item<float>(), float(l4.codes[size_t(c * w4.size(1) + k)]) * l4.scale[size_t(c)]) << name;
    EXPECT_EQ(l.act_scale.at(4), q->act_scale(4).item<float>());
  }
  models::ModelSpec fp_spec = spec;
  auto fresh = models::create_model(fp_spec);
  EXPECT_ERROR_CONTAINS(deploy::export_model(*fresh, fp_spec), "has never run quantized");
}

TEST(DeployEquivalence, IntegerEvalIsTheFakeQuantNetwork) {
  torch::set_num_threads(1);
  auto model = trained("resnet20", {8, 4});
  torch::NoGradGuard ng;
  const auto x = test_images(128);
  for (int w : {8, 4}) {
    nn::apply_bits(*model, nn::BitConfig::uniform(w));
    const auto fake = model->forward(x);
    nn::set_integer_eval(*model, true);
    const auto exact = model->forward(x);
    nn::set_integer_eval(*model, false);
    // Same network, different float rounding: close logits, (nearly) the same decisions.
    EXPECT_LE((fake - exact).abs().max().item<double>(), 0.05 * std::max(1.0, fake.abs().max().item<double>()));
    EXPECT_LE(fake.argmax(1).ne(exact.argmax(1)).sum().item<int64_t>(), 2);
  }
}

TEST(DeployEquivalence, IntegerConvolutionIsExactBeyondFloatRange) {
  // K = 128 * 9 codes at 8 bits: sums can exceed 2^24, so the layer splits its input codes.
  torch::set_num_threads(1);
  torch::NoGradGuard ng;
  torch::manual_seed(4);
  nn::QConv2d conv(nn::QConv2dOptions(128, 8, 3).padding(1).quant(nn::QuantOptions().bits({8})));
  conv->train();
  conv->set_bits({8, 8});
  auto x = torch::rand({2, 128, 6, 6}) * 4;
  conv->forward(x);  // initialises the scales
  conv->eval();
  conv->set_integer_eval(true);
  const auto got = conv->forward(x);
  const float a = conv->act_scale(8).item<float>();
  const auto xc = (x * (1.0f / a)).clamp(0, 255).round().to(torch::kFloat64);
  const auto wc = quant::weight_codes(conv->weight, conv->weight_scale(), 8).to(torch::kFloat64);
  const auto acc = torch::conv2d(xc, wc, {}, 1, 1);
  const auto want = acc.to(torch::kFloat32) * (conv->weight_scale() * a).view({1, -1, 1, 1});
  EXPECT_TRUE(torch::equal(got, want));
  EXPECT_GT(acc.abs().max().item<double>(), 0);
}
