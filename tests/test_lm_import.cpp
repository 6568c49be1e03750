// Hugging Face Llama import against an independent forward: the fixture
// (scripts/hf_llama_fixture.sh, run by the ctest fixture `hf_llama_fixture`) holds tiny random
// Llama checkpoints written by transformers' save_pretrained (model.safetensors, config.json),
// input tokens and transformers' LlamaForCausalLM logits (or, without PyPI, those of a forward
// written from the formulas in python3-torch; the file's metadata names the reference).
#include <torch/torch.h>

#include <cstring>
#include <filesystem>

#include "bitswitch/format/safetensors.h"
#include "bitswitch/models/llama.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/util/error.h"
#include "test_util.h"

namespace bs = bitswitch;
namespace fs = std::filesystem;

namespace {

fs::path fixture(const std::string& name) {
  const auto p = fs::path(BITSWITCH_HF_LLAMA_FIXTURE) / name;
  if (!fs::exists(p))
    throw std::runtime_error("missing " + p.string() + ": run scripts/hf_llama_fixture.sh " + BITSWITCH_HF_LLAMA_FIXTURE +
                             " (ctest runs it as hf_llama_fixture)");
  return p;
}

torch::Tensor read(const bs::format::SafeTensors& f, const std::string& name, const std::string& dtype,
                   torch::ScalarType type) {
  const auto& v = f.get(name, dtype);
  auto t = torch::empty(v.shape, type);
  std::memcpy(t.data_ptr(), v.data, v.nbytes);
  return t;
}

std::shared_ptr<bs::models::LlamaImpl> import(const fs::path& dir, int first_last_bits = bs::nn::kFloatBits) {
  auto [arch, vocab] = bs::models::read_hf_llama_config((dir / "config.json").string());
  bs::models::ModelSpec s;
  s.name = "llama";
  s.num_classes = vocab;
  s.arch = arch;
  s.first_last_bits = first_last_bits;
  auto m = std::dynamic_pointer_cast<bs::models::LlamaImpl>(bs::models::create_model(s));
  bs::models::load_hf_llama(*m, (dir / "model.safetensors").string());
  m->eval();
  return m;
}

}  // namespace

class HfLlamaImport : public ::testing::TestWithParam<std::string> {};

TEST_P(HfLlamaImport, LogitsEqualTheReference) {
  const auto dir = fixture(GetParam());
  auto m = import(dir);
  const auto ref = bs::format::read_safetensors((dir / "reference.safetensors").string());
  auto tokens = read(ref, "tokens", "I64", torch::kInt64);
  auto expected = read(ref, "logits", "F32", torch::kFloat32);
  torch::NoGradGuard ng;
  bs::nn::apply_bits(*m, bs::nn::BitConfig::fp32());
  auto logits = m->forward(tokens);
  ASSERT_EQ(logits.sizes(), expected.sizes());
  const double err = (logits - expected).abs().max().item<double>();
  const double scale = expected.abs().max().item<double>();
  RecordProperty("reference", ref.metadata("reference"));
  std::cout << GetParam() << ": reference " << ref.metadata("reference") << ", max |diff| " << err << " (max |logit| "
            << scale << ")\n";
  EXPECT_LT(err, 1e-4 * std::max(1.0, scale));
  EXPECT_GT(scale, 1.0);  // non-trivial logits
  // Quantized widths run on the imported weights: 8 bits is closer to the FP logits than 2 bits.
  bs::nn::apply_bits(*m, bs::nn::BitConfig::uniform(8));
  const double e8 = (m->forward(tokens) - expected).abs().mean().item<double>();
  bs::nn::apply_bits(*m, bs::nn::BitConfig::uniform(2));
  const double e2 = (m->forward(tokens) - expected).abs().mean().item<double>();
  EXPECT_GT(e8, 0);
  EXPECT_LT(e8, e2);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfLlamaImport, ::testing::Values("untied", "tied"));

TEST(HfLlamaImportErrors, NameTheFileAndTensor) {
  const auto dir = fixture("untied");
  auto [arch, vocab] = bs::models::read_hf_llama_config((dir / "config.json").string());
  auto wrong = arch;
  wrong["layers"] = 3;
  bs::models::ModelSpec s;
  s.name = "llama";
  s.num_classes = vocab;
  s.arch = wrong;
  auto m = std::dynamic_pointer_cast<bs::models::LlamaImpl>(bs::models::create_model(s));
  EXPECT_ERROR_CONTAINS(bs::models::load_hf_llama(*m, (dir / "model.safetensors").string()),
                        "tensor 'model.layers.2.input_layernorm.weight' is missing");
  wrong = arch;
  wrong["layers"] = 1;
  s.arch = wrong;
  m = std::dynamic_pointer_cast<bs::models::LlamaImpl>(bs::models::create_model(s));
  EXPECT_ERROR_CONTAINS(bs::models::load_hf_llama(*m, (dir / "model.safetensors").string()),
                        "tensor 'model.layers.1.input_layernorm.weight' has no counterpart");
  wrong = arch;
  wrong["mlp"] = 64;
  s.arch = wrong;
  m = std::dynamic_pointer_cast<bs::models::LlamaImpl>(bs::models::create_model(s));
  EXPECT_ERROR_CONTAINS(bs::models::load_hf_llama(*m, (dir / "model.safetensors").string()), "has shape [96, 64]");
}
