// Pretrained import against PyTorch: the fixture (scripts/export_torchvision.py --fixture, run by
// the ctest fixture `torchvision_fixture`) holds a seeded torchvision ResNet-18 with non-trivial
// BN statistics, an input and torchvision's eval-mode logits, and the state-dict names and
// shapes of resnet18, resnet50 and mobilenet_v2.
#include <torch/torch.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "bitswitch/format/safetensors.h"
#include "bitswitch/models/model.h"
#include "bitswitch/models/pretrained.h"
#include "bitswitch/nn/layers.h"
#include "test_util.h"

namespace bs = bitswitch;

namespace {

std::string fixture(const std::string& file) {
  const auto p = std::filesystem::path(BITSWITCH_TORCHVISION_FIXTURE) / file;
  if (!std::filesystem::exists(p))
    throw std::runtime_error("missing " + p.string() + ": run scripts/export_torchvision.py --fixture " +
                             BITSWITCH_TORCHVISION_FIXTURE + " (ctest runs it as torchvision_fixture)");
  return p.string();
}

torch::Tensor read_f32(const bs::format::SafeTensors& f, const std::string& name) {
  const auto& v = f.get(name, "F32");
  auto t = torch::empty(v.shape, torch::kFloat32);
  std::memcpy(t.data_ptr<float>(), v.data, v.nbytes);
  return t;
}

bs::models::Model make(const std::string& name) {
  bs::models::ModelSpec s;
  s.name = name;
  s.in_channels = 3;
  s.num_classes = 1000;
  return bs::models::create_model(s);
}

}  // namespace

TEST(Pretrained, NamesAndShapesMatchTorchvisionStateDicts) {
  std::ifstream in(fixture("names.json"));
  const auto names = nlohmann::json::parse(in);
  for (const std::string model : {"resnet18", "resnet50", "mobilenetv2"}) {
    auto m = make(model);
    std::map<std::string, std::vector<int64_t>> ours;
    for (const auto& t : bs::models::fp_tensors(*m))
      ours[t.torchvision_name] = std::vector<int64_t>(t.tensor.sizes().begin(), t.tensor.sizes().end());
    const auto theirs = names.at(model).at("state_dict").get<std::map<std::string, std::vector<int64_t>>>();
    EXPECT_EQ(ours, theirs) << model;
  }
}

TEST(Pretrained, ImportedResnet18GivesTorchvisionLogits) {
  auto m = make("resnet18");
  bs::models::load_fp_safetensors(*m, fixture("resnet18.safetensors"));
  const auto io = bs::format::read_safetensors(fixture("io.safetensors"));
  const auto x = read_f32(io, "input"), want = read_f32(io, "logits");
  m->eval();
  bs::nn::apply_bits(*m, bs::nn::BitConfig::fp32());
  torch::NoGradGuard ng;
  const auto got = m->forward(x);
  ASSERT_EQ(got.sizes(), want.sizes());
  // Same float32 ops in a possibly different order: agreement to 1e-4 of the logits' range.
  const double range = want.abs().max().item<double>();
  const double err = (got - want).abs().max().item<double>();
  EXPECT_LE(err, 1e-4 * range) << "max |diff| " << err << ", max |logit| " << range;
  RecordProperty("max_abs_diff", std::to_string(err));
  std::printf("bitswitch vs torchvision logits: max |diff| %.3g, max |logit| %.3g\n", err, range);
  EXPECT_TRUE(torch::equal(got.argmax(1), want.argmax(1)));
  // The counters came across too (the fixture sets them to non-zero values).
  for (const auto& t : bs::models::fp_tensors(*m))
    if (t.torchvision_name == "bn1.num_batches_tracked") EXPECT_GT(t.tensor.item<int64_t>(), 0);

  // Exporting it again gives torchvision's file back, tensor for tensor.
  const auto dir = bs::testing::temp_dir("pretrained_reexport");
  bs::models::save_fp_safetensors(*m, dir + "/r18.safetensors");
  const auto a = bs::format::read_safetensors(fixture("resnet18.safetensors"));
  const auto b = bs::format::read_safetensors(dir + "/r18.safetensors");
  ASSERT_EQ(a.names(), b.names());
  for (const auto& n : a.names()) {
    const auto& va = a.get(n);
    const auto& vb = b.get(n);
    EXPECT_EQ(va.dtype, vb.dtype) << n;
    EXPECT_EQ(va.shape, vb.shape) << n;
    EXPECT_TRUE(va.nbytes == vb.nbytes && std::memcmp(va.data, vb.data, va.nbytes) == 0) << n;
  }
}
