// ImageNet models (ResNet-18/50, MobileNetV2): torchvision's parameter counts and output
// shapes, the torchvision name mapping, quantized forwards, and the FP safetensors round trip.
#include <torch/torch.h>

#include <set>

#include "bitswitch/format/safetensors.h"
#include "bitswitch/models/model.h"
#include "bitswitch/models/pretrained.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/util/error.h"
#include "test_util.h"

namespace bs = bitswitch;
using bs::models::ModelSpec;

namespace {

ModelSpec imagenet_spec(const std::string& name, std::vector<int> bits = {8, 6, 4, 2}) {
  ModelSpec s;
  s.name = name;
  s.in_channels = 3;
  s.num_classes = 1000;
  s.bits = bits;
  return s;
}

// Parameters of the FP model, as torchvision counts them (no running statistics).
int64_t torchvision_param_count(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& t : bs::models::fp_tensors(m)) {
    const auto& k = t.torchvision_name;
    if (k.find("running_") == std::string::npos && k.find("num_batches_tracked") == std::string::npos)
      n += t.tensor.numel();
  }
  return n;
}

}  // namespace

TEST(ImagenetModels, ParameterCountsMatchTorchvision) {
  // torchvision 0.14 at 1000 classes: sum(p.numel() for p in model.parameters()).
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"resnet18", 11689512}, {"resnet50", 25557032}, {"mobilenetv2", 3504872}};
  for (const auto& [name, count] : expected) {
    auto m = bs::models::create_model(imagenet_spec(name));
    EXPECT_EQ(torchvision_param_count(*m), count) << name;
  }
}

TEST(ImagenetModels, OutputShapesFpAndQuantized) {
  torch::manual_seed(0);
  // One thread: torch's OpenMP threads spin badly when the 2-core test machine is busy.
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  for (const std::string name : {"resnet18", "resnet50", "mobilenetv2"}) {
    auto spec = imagenet_spec(name, {4, 3, 2});
    spec.num_classes = 7;
    auto m = bs::models::create_model(spec);
    m->eval();
    auto x = torch::randn({2, 3, 32, 32});
    torch::NoGradGuard ng;
    bs::nn::apply_bits(*m, bs::nn::BitConfig::fp32());
    auto fp = m->forward(x);
    EXPECT_EQ(fp.sizes(), (std::vector<int64_t>{2, 7})) << name;
    bs::nn::apply_bits(*m, bs::nn::BitConfig::uniform(2));
    auto q = m->forward(x);
    EXPECT_EQ(q.sizes(), (std::vector<int64_t>{2, 7})) << name;
    EXPECT_TRUE(torch::isfinite(q).all().item<bool>()) << name;
    EXPECT_FALSE(torch::equal(fp, q)) << name << ": the 2-bit forward must differ from FP";
    // Every conv except the FP stem follows the bit config; the FP classifier does not.
    for (const auto& [layer, ql] : bs::nn::quant_layers(*m)) EXPECT_EQ(ql->bits().weight, 2) << layer;
  }
  // ResNet-18: 16 block convs + 3 downsample convs (the stem and fc stay FP).
  EXPECT_EQ(bs::nn::quant_layers(*bs::models::create_model(imagenet_spec("resnet18"))).size(), 19u);
  // MobileNetV2: 17 blocks (16 with an expansion conv) x 2-3 convs + the last 1x1 conv.
  EXPECT_EQ(bs::nn::quant_layers(*bs::models::create_model(imagenet_spec("mobilenetv2"))).size(), 16u * 3 + 2 + 1);
  torch::set_num_threads(threads);
}

TEST(ImagenetModels, TorchvisionNamesFollowOneRule) {
  auto m = bs::models::create_model(imagenet_spec("resnet50"));
  std::map<std::string, std::string> names;
  for (const auto& t : bs::models::fp_tensors(*m)) names[t.torchvision_name] = t.bitswitch_name;
  EXPECT_EQ(names.at("conv1.weight"), "conv1.weight");
  EXPECT_EQ(names.at("bn1.running_var"), "bn1.bn_fp.running_var");
  EXPECT_EQ(names.at("layer1.0.downsample.0.weight"), "layer1.0.downsample.0.weight");
  EXPECT_EQ(names.at("layer4.2.bn3.num_batches_tracked"), "layer4.2.bn3.bn_fp.num_batches_tracked");
  EXPECT_EQ(names.at("fc.bias"), "fc.bias");
  EXPECT_EQ(names.size(), 320u);  // torchvision's resnet50 state dict
  // Every mapped name exists in the module tree, and the tensors are the model's own.
  auto params = m->named_parameters();
  auto buffers = m->named_buffers();
  for (const auto& t : bs::models::fp_tensors(*m)) {
    const auto* p = params.find(t.bitswitch_name);
    const auto* b = buffers.find(t.bitswitch_name);
    ASSERT_TRUE(p || b) << t.bitswitch_name;
    EXPECT_TRUE((p ? *p : *b).is_same(t.tensor)) << t.bitswitch_name;
  }
  auto mb = bs::models::create_model(imagenet_spec("mobilenetv2"));
  std::set<std::string> mnames;
  for (const auto& t : bs::models::fp_tensors(*mb)) mnames.insert(t.torchvision_name);
  for (const char* n : {"features.0.0.weight", "features.0.1.bias", "features.1.conv.0.0.weight",
                        "features.1.conv.1.weight", "features.1.conv.2.running_mean", "features.2.conv.3.weight",
                        "features.18.1.weight", "classifier.1.weight", "classifier.1.bias"})
    EXPECT_TRUE(mnames.count(n)) << n;
  EXPECT_EQ(mnames.size(), 314u);
}

TEST(ImagenetModels, MobileNetV2SignedInputsWhereNoReluPrecedes) {
  auto m = bs::models::create_model(imagenet_spec("mobilenetv2"));
  int signed_layers = 0;
  for (const auto& [name, q] : bs::nn::quant_layers(*m)) {
    const bool expect_signed = (name.rfind("features.", 0) == 0 && name.find(".conv.0.0") != std::string::npos &&
                                name != "features.1.conv.0.0") ||
                               name == "features.18.0";
    EXPECT_EQ(q->quant_options().signed_input(), expect_signed) << name;
    signed_layers += expect_signed;
  }
  EXPECT_EQ(signed_layers, 17);  // 16 expansion convs + features.18
}

TEST(Layers, SignedInputQuantizerIsSymmetric) {
  auto conv = bs::nn::QConv2d(bs::nn::QConv2dOptions(1, 1, 1).quant(bs::nn::QuantOptions().bits({4}).signed_input(true)));
  conv->set_bits({4, 4});  // apply_bits() walks the children of a model, not a lone layer
  conv->forward(torch::ones({1, 1, 1, 1}));  // initialises the scales
  {
    torch::NoGradGuard ng;
    conv->weight.fill_(1);
    conv->weight_scale().fill_(1.0 / 4);  // weight code 4 -> exactly 1
    conv->act_scale(4).fill_(0.5);
  }
  auto x = torch::tensor({-10.f, -1.26f, -0.2f, 0.3f, 1.74f, 10.f}).reshape({1, 1, 1, 6});
  auto y = conv->forward(x).flatten();
  // round(x / 0.5) clamped to [-8, 7], times 0.5.
  auto want = torch::tensor({-4.f, -1.5f, -0.f, 0.5f, 1.5f, 3.5f});
  EXPECT_TRUE(torch::allclose(y, want)) << y;
}

TEST(Layers, DepthwiseConvMatchesPerChannelConv) {
  torch::manual_seed(3);
  auto conv = bs::nn::QConv2d(bs::nn::QConv2dOptions(4, 4, 3).padding(1).groups(4));
  EXPECT_EQ(conv->weight.sizes(), (std::vector<int64_t>{4, 1, 3, 3}));
  conv->set_bits({bs::nn::kFloatBits, bs::nn::kFloatBits});
  auto x = torch::rand({1, 4, 5, 5});
  auto y = conv->forward(x);
  for (int c = 0; c < 4; ++c) {
    auto yc = torch::conv2d(x.slice(1, c, c + 1), conv->weight.slice(0, c, c + 1), {}, 1, 1);
    EXPECT_TRUE(torch::allclose(y.slice(1, c, c + 1), yc, 1e-5, 1e-6)) << c;
  }
  EXPECT_EQ(conv->macs_per_sample(), 4 * 5 * 5 * 1 * 9);
  EXPECT_ERROR_CONTAINS((void)bs::nn::QConv2d(bs::nn::QConv2dOptions(4, 6, 3).groups(4)), "`groups` 4 must divide");
}

TEST(Pretrained, FpSafetensorsRoundTripAndErrors) {
  const auto dir = bs::testing::temp_dir("fp_safetensors");
  torch::manual_seed(5);
  auto spec = imagenet_spec("resnet18");
  spec.num_classes = 10;
  auto a = bs::models::create_model(spec);
  {
    torch::NoGradGuard ng;
    for (const auto& t : bs::models::fp_tensors(*a))
      if (t.tensor.is_floating_point()) t.tensor.copy_(torch::randn(t.tensor.sizes()));
      else t.tensor.fill_(17);
  }
  const auto path = dir + "/r18.safetensors";
  bs::models::save_fp_safetensors(*a, path, {{"model", "resnet18"}});
  torch::manual_seed(6);
  auto b = bs::models::create_model(spec);
  bs::models::load_fp_safetensors(*b, path);
  auto ta = bs::models::fp_tensors(*a), tb = bs::models::fp_tensors(*b);
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t i = 0; i < ta.size(); ++i) EXPECT_TRUE(torch::equal(ta[i].tensor, tb[i].tensor)) << ta[i].bitswitch_name;

  // Wrong architecture: the file lacks the bottleneck tensors, or has tensors the model lacks.
  auto r50 = bs::models::create_model(imagenet_spec("resnet50"));
  EXPECT_ERROR_CONTAINS(bs::models::load_fp_safetensors(*r50, path), "tensor 'layer1.0.conv1.weight' has shape");
  auto r20 = bs::models::create_model([] {
    ModelSpec s;
    s.in_channels = 3;
    return s;
  }());
  EXPECT_ERROR_CONTAINS(bs::models::load_fp_safetensors(*r20, path), "missing from the file");
  // Wrong number of classes: the shape check names the tensor.
  auto r18_1000 = bs::models::create_model(imagenet_spec("resnet18"));
  EXPECT_ERROR_CONTAINS(bs::models::load_fp_safetensors(*r18_1000, path), "fc.weight");
  // A tensor the model does not have; a wrong dtype.
  const auto file = bs::format::read_safetensors(path);
  std::vector<bs::format::TensorToWrite> tensors;
  for (const auto& [name, v] : file.tensors()) tensors.push_back(bs::format::make_tensor(name, v.dtype, v.shape, v.data, v.nbytes));
  const float one = 1;
  tensors.push_back(bs::format::make_tensor("layer5.0.conv1.weight", "F32", {1}, &one, sizeof(one)));
  bs::format::write_safetensors(dir + "/extra.safetensors", tensors);
  EXPECT_ERROR_CONTAINS(bs::models::load_fp_safetensors(*b, dir + "/extra.safetensors"),
                        "tensor 'layer5.0.conv1.weight' has no counterpart");
  tensors.pop_back();
  for (auto& t : tensors)
    if (t.name == "bn1.weight") t.dtype = "I32";
  bs::format::write_safetensors(dir + "/dtype.safetensors", tensors);
  EXPECT_ERROR_CONTAINS(bs::models::load_fp_safetensors(*b, dir + "/dtype.safetensors"),
                        "tensor 'bn1.weight' has dtype I32, expected F32");
}
