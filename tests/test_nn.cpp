// Tests of bit lists, bit configurations, quantized layers, switchable BN, models, ALRS.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "bitswitch/models/model.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/train/alrs.h"
#include "bitswitch/util/error.h"
#include "test_util.h"

using namespace bitswitch;

TEST(BitList, ParsesSortsAndRejects) {
  EXPECT_EQ(nn::parse_bit_list("8,6,4,2"), (std::vector<int>{8, 6, 4, 2}));
  EXPECT_EQ(nn::parse_bit_list("2,4,3"), (std::vector<int>{4, 3, 2}));
  EXPECT_ERROR_CONTAINS(nn::parse_bit_list("8,9"), "bit-width 9 is outside [2, 8]");
  EXPECT_ERROR_CONTAINS(nn::parse_bit_list("1,8"), "bit-width 1 is outside [2, 8]");
  EXPECT_ERROR_CONTAINS(nn::parse_bit_list("8,4,8"), "bit-width 8 appears more than once");
  EXPECT_ERROR_CONTAINS(nn::parse_bit_list("8,x"), "'x' in '8,x' is not an integer");
  EXPECT_ERROR_CONTAINS(nn::parse_bit_list("8,,4"), "is not an integer");
  EXPECT_ERROR_CONTAINS(nn::check_bit_list({}), "empty");
}

TEST(BitConfig, BnKeyNamesTransitionalBns) {
  EXPECT_EQ(nn::bn_key(0, nn::kFloatBits), "fp");
  EXPECT_EQ(nn::bn_key(4, 4), "4");
  EXPECT_EQ(nn::bn_key(0, 4), "4");
  EXPECT_EQ(nn::bn_key(nn::kFloatBits, 2), "2");
  EXPECT_EQ(nn::bn_key(8, 4), "8_4");
}

TEST(BitConfig, LayerBitsFileRoundTripAndErrors) {
  const std::map<std::string, int> m{{"blocks.0.conv1", 4}, {"fc", 8}};
  EXPECT_EQ(nn::parse_layer_bits(nn::layer_bits_to_json(m), "x"), m);
  auto cfg = nn::layer_bits_config(m, nn::kFloatBits);
  EXPECT_EQ(cfg.for_layer("blocks.0.conv1"), (nn::LayerBits{4, 4}));
  EXPECT_EQ(cfg.for_layer("other").weight, nn::kFloatBits);
  auto msg = [](const std::string& text, std::vector<int> allowed = {}) {
    try {
      nn::parse_layer_bits(text, "lb.json", allowed);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg("{").find("lb.json: not valid JSON"), std::string::npos);
  EXPECT_NE(msg("[4]").find("expected a JSON object"), std::string::npos);
  EXPECT_NE(msg(R"({"a": "4"})").find("layer 'a': width \"4\" is not an integer"), std::string::npos);
  EXPECT_NE(msg(R"({"a": 9})").find("layer 'a': width 9 is outside [2, 8]"), std::string::npos);
  EXPECT_NE(msg(R"({"a": 3})", {8, 4}).find("width 3 is not in the bit list 8,4"), std::string::npos);
}

TEST(Alrs, EtaMatchesSpecTable) {
  EXPECT_DOUBLE_EQ(train::alrs_eta(8, 8), 1.0);
  EXPECT_NEAR(train::alrs_eta(8, 6), 0.1, 1e-15);
  EXPECT_NEAR(train::alrs_eta(8, 4), 0.01, 1e-15);
  EXPECT_NEAR(train::alrs_eta(8, 2), 0.001, 1e-15);
  EXPECT_NEAR(train::alrs_eta(4, 3), 0.5, 1e-15);
  EXPECT_NEAR(train::alrs_eta(4, 2), 0.1, 1e-15);
  EXPECT_NEAR(train::alrs_eta(8, 5), 0.05, 1e-15);
}

TEST(Schedule, CosineAndWarmup) {
  EXPECT_DOUBLE_EQ(train::cosine_lr(1.0, 0, 100, 0), 1.0);
  EXPECT_NEAR(train::cosine_lr(1.0, 50, 100, 0), 0.5, 1e-12);
  EXPECT_NEAR(train::cosine_lr(1.0, 100, 100, 0), 0.0, 1e-12);
  EXPECT_NEAR(train::cosine_lr(1.0, 4, 100, 10), 0.5, 1e-12);
}

namespace {
models::Model small(std::vector<int> bits = {8, 6, 4, 2}, int first_last = 32, std::string name = "smallcnn") {
  models::ModelSpec spec;
  spec.name = name;
  spec.bits = bits;
  spec.first_last_bits = first_last;
  torch::manual_seed(0);
  return models::create_model(spec);
}
}  // namespace

TEST(Models, RegistryAndShapes) {
  EXPECT_ERROR_CONTAINS(small({8}, 32, "resnet21"), "unknown model 'resnet21' (known: llama, mobilenetv2, resnet18, resnet20, resnet50, smallcnn)");
  models::ModelSpec spec;
  spec.in_channels = 3;
  spec.num_classes = 100;
  auto m = models::create_model(spec);
  EXPECT_EQ(m->forward(torch::randn({2, 3, 32, 32})).sizes(), (std::vector<int64_t>{2, 100}));
  // ResNet-20 with 1x1 projection shortcuts: 0.27M conv/linear/BN parameters.
  int64_t fp_params = 0;
  for (const auto& p : m->named_parameters()) {
    const auto& k = p.key();
    if (k.find("scale") == std::string::npos && k.find("bn_") == std::string::npos) fp_params += p.value().numel();
  }
  // stem 3*16*9, stage convs 13824 + 50688 + 202752, projections 512 + 2048, fc 64*100 + 100.
  EXPECT_EQ(fp_params, 432 + 13824 + 50688 + 202752 + 512 + 2048 + 6500);
  EXPECT_EQ(nn::quant_layers(*m).size(), 20u);  // 18 block convs + 2 projections; stem and fc stay FP
}

TEST(Layers, ApplyBitsSetsEveryFollowingLayer) {
  auto m = small();
  nn::apply_bits(*m, nn::BitConfig::uniform(4));
  for (auto& [name, q] : nn::quant_layers(*m)) EXPECT_EQ(q->bits().weight, 4) << name;
  auto conv1 = std::dynamic_pointer_cast<nn::QuantLayer>(m->named_modules()["conv1"]);
  EXPECT_EQ(conv1->bits().weight, nn::kFloatBits);  // first layer stays FP
  nn::apply_bits(*m, nn::BitConfig::per_layer({{"conv3", {2, 2}}}, 8));
  EXPECT_EQ(std::dynamic_pointer_cast<nn::QuantLayer>(m->named_modules()["conv3"])->bits().weight, 2);
  EXPECT_EQ(std::dynamic_pointer_cast<nn::QuantLayer>(m->named_modules()["conv2"])->bits().weight, 8);
  EXPECT_ERROR_CONTAINS(nn::apply_bits(*m, nn::BitConfig::per_layer({{"conv9", {2, 2}}}, 8)), "unknown layer 'conv9'");
  EXPECT_ERROR_CONTAINS(nn::apply_bits(*m, nn::BitConfig::uniform(3)), "width 3 is not in this model's bit list 8,6,4,2");
  EXPECT_ERROR_CONTAINS(nn::BitConfig::uniform(9), "width 9 is outside");
}

TEST(Layers, FirstLastAtEightBitsWhenQuantized) {
  auto m = small({4, 3, 2}, 8);
  auto conv1 = std::dynamic_pointer_cast<nn::QuantLayer>(m->named_modules()["conv1"]);
  auto fc = std::dynamic_pointer_cast<nn::QuantLayer>(m->named_modules()["fc"]);
  nn::apply_bits(*m, nn::BitConfig::uniform(2));
  EXPECT_EQ(conv1->bits().weight, 8);
  EXPECT_EQ(fc->bits().act, 8);
  nn::apply_bits(*m, nn::BitConfig::fp32());
  EXPECT_EQ(conv1->bits().weight, nn::kFloatBits);
  m->forward(torch::randn({2, 1, 28, 28}));
}

TEST(Layers, QuantizedForwardUsesWeightCodes) {
  auto m = small();
  nn::apply_bits(*m, nn::BitConfig::uniform(4));
  m->eval();
  m->forward(torch::rand({2, 1, 28, 28}));
  auto conv2 = m->named_modules()["conv2"]->as<nn::QConv2dImpl>();
  ASSERT_TRUE(conv2->weight_scale_initialized());
  auto wq = quant::fake_quant_weight(conv2->weight, conv2->weight_scale(), {8, 4});
  auto codes = wq / (conv2->weight_scale() * 16).view({-1, 1, 1, 1});
  EXPECT_LT((codes - codes.round()).abs().max().item<float>(), 1e-4);
  EXPECT_LE(codes.round().max().item<float>(), 7);
  EXPECT_GE(codes.round().min().item<float>(), -8);
}

// A conv with an input ReLU (fused into its activation quantizer when quantized) computes what a
// plain conv computes on relu(x): outputs, scale initialisation and gradients, at every width,
// in training and in integer-exact evaluation.
TEST(Layers, InputReluEqualsReluThenLayer) {
  for (int bits : {nn::kFloatBits, 8, 4, 2}) {
    torch::manual_seed(3);
    auto opts = nn::QConv2dOptions(8, 16, 3).padding(1);
    nn::QConv2d plain(opts);
    opts.quant().input_relu(true);
    nn::QConv2d fused(opts);
    {
      torch::NoGradGuard ng;
      fused->weight.copy_(plain->weight);
    }
    for (auto* c : {&plain, &fused}) (*c)->set_bits({bits, bits});
    auto x = torch::randn({4, 8, 10, 10});
    x = torch::where(torch::rand(x.sizes()) < 0.1, torch::zeros_like(x), x);
    auto g = torch::randn({4, 16, 10, 10});
    auto xp = x.clone().requires_grad_(), xf = x.clone().requires_grad_();
    auto yp = plain(torch::relu(xp));
    auto yf = fused(xf);
    ASSERT_TRUE(torch::equal(yp, yf)) << "bits " << bits;
    (yp * g).sum().backward();
    (yf * g).sum().backward();
    EXPECT_TRUE(torch::equal(xp.grad(), xf.grad())) << "bits " << bits;
    EXPECT_TRUE(torch::equal(plain->weight.grad(), fused->weight.grad())) << "bits " << bits;
    if (bits != nn::kFloatBits) {
      EXPECT_TRUE(torch::equal(plain->act_scale(bits), fused->act_scale(bits)));
      EXPECT_TRUE(torch::allclose(plain->act_scale(bits).grad(), fused->act_scale(bits).grad(), 1e-5, 1e-7));
      EXPECT_TRUE(torch::allclose(plain->weight_scale().grad(), fused->weight_scale().grad(), 1e-5, 1e-7));
    }
    plain->eval(), fused->eval();
    plain->set_integer_eval(true), fused->set_integer_eval(true);
    torch::NoGradGuard ng;
    EXPECT_TRUE(torch::equal(plain(torch::relu(x)), fused(x))) << "integer-exact eval, bits " << bits;
  }
}

TEST(SwitchableBN, OnlyTheActiveWidthLearnsStatistics) {
  auto m = small();
  nn::init_widths_from_fp(*m);
  auto bn2 = m->named_modules()["bn2"]->as<nn::SwitchableBatchNorm2dImpl>();
  auto before8 = bn2->bn_for(8)->running_mean.clone();
  auto before4 = bn2->bn_for(4)->running_mean.clone();
  nn::apply_bits(*m, nn::BitConfig::uniform(4));
  m->train();
  m->forward(torch::rand({4, 1, 28, 28}));
  EXPECT_TRUE(torch::equal(bn2->bn_for(8)->running_mean, before8));
  EXPECT_FALSE(torch::equal(bn2->bn_for(4)->running_mean, before4));
}

TEST(SwitchableBN, WidthsStartFromFp) {
  auto m = small();
  auto bn3 = m->named_modules()["bn3"]->as<nn::SwitchableBatchNorm2dImpl>();
  {
    torch::NoGradGuard ng;
    bn3->bn_for(nn::kFloatBits)->weight.uniform_();
    bn3->bn_for(nn::kFloatBits)->running_var.uniform_();
  }
  nn::init_widths_from_fp(*m);
  for (int b : {8, 6, 4, 2}) {
    EXPECT_TRUE(torch::equal(bn3->bn_for(b)->weight, bn3->bn_for(nn::kFloatBits)->weight));
    EXPECT_TRUE(torch::equal(bn3->bn_for(b)->running_var, bn3->bn_for(nn::kFloatBits)->running_var));
  }
}

TEST(Layers, ParamGroupsSplitWeightsFromTheRest) {
  auto m = small();
  auto g = nn::split_params(*m);
  EXPECT_EQ(g.weights.size(), 4u);  // conv1..3 + fc weights
  EXPECT_EQ(g.weights.size() + g.others.size(), m->parameters().size());
  for (const auto& w : g.weights) EXPECT_GE(w.dim(), 2);
}

TEST(Layers, PerWidthActivationScalesAreSeparate) {
  auto m = small();
  auto conv2 = m->named_modules()["conv2"]->as<nn::QConv2dImpl>();
  auto x = torch::rand({2, 1, 28, 28});
  nn::apply_bits(*m, nn::BitConfig::uniform(8));
  m->forward(x);
  nn::apply_bits(*m, nn::BitConfig::uniform(2));
  m->forward(x);
  EXPECT_NE(conv2->act_scale(8).item<float>(), conv2->act_scale(2).item<float>());
  EXPECT_EQ(conv2->act_scale(6).item<float>(), 1.0f);  // untouched until width 6 runs
}
