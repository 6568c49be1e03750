// Language models, training side against deployment side (SPEC.md Sec. 7 and 9): the per-token
// input quantizer of training against its one scalar definition, the integer-exact evaluation of
// the LM linear layers (nn::set_integer_eval) against the decoder's scalar reference
// (deploy::lm_linear_ref) bit for bit and against the fake-quantized forward, the LM graph, the
// artifact (export, switch, validation) and the loader into the decoder's weights.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <map>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>

#include <nlohmann/json.hpp>

#include "bitswitch/deploy/artifact.h"
#include "bitswitch/deploy/export.h"
#include "bitswitch/deploy/lm_artifact.h"
#include "bitswitch/deploy/lm_kernels.h"
#include "bitswitch/deploy/runtime.h"
#include "bitswitch/format/safetensors.h"
#include "bitswitch/models/llama.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/quant/fake_quant.h"
#include "lm_test_util.h"
#include "test_util.h"

#define EXPECT_CONTAINS(haystack, needle) EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

namespace bs = bitswitch;
using json = nlohmann::json;
using bs::lmtest::tiny_llama;

// ---------------- per-token codes: training's ATen form vs the scalar definition ----------------

TEST(LmIntegerEval, PerTokenCodesEqualTheScalarDefinition) {
  std::mt19937 rng(5);
  std::vector<std::vector<float>> rows;
  const int k = 48;
  // Random rows at many magnitudes.
  for (int r = 0; r < 400; ++r) {
    std::normal_distribution<float> nd(0.0f, std::ldexp(1.0f, int(rng() % 60) - 30));
    std::vector<float> v(k);
    for (auto& x : v) x = nd(rng);
    rows.push_back(v);
  }
  // Edge rows: all zero; one non-zero; negative maximum; ties at half codes; denormals; huge;
  // values that land exactly on k + 1/2 of the scale.
  rows.push_back(std::vector<float>(k, 0.0f));
  {
    std::vector<float> v(k, 0.0f);
    v[7] = -3.5f;
    rows.push_back(v);
  }
  {
    std::vector<float> v(k);
    for (int i = 0; i < k; ++i) v[size_t(i)] = (i - k / 2) * 0.5f;  // max 12 at one end
    rows.push_back(v);
  }
  {
    std::vector<float> v(k);
    for (int i = 0; i < k; ++i) v[size_t(i)] = float(i % 2 ? 1 : -1) * (float(i) + 0.5f);
    v[0] = 127.0f;  // scale exactly 1: every x.5 is a tie
    rows.push_back(v);
  }
  {
    std::vector<float> v(k, std::numeric_limits<float>::denorm_min());
    v[1] = -std::numeric_limits<float>::denorm_min() * 3;
    rows.push_back(v);
  }
  {
    std::vector<float> v(k, 1e38f);
    v[2] = -3e38f;
    v[3] = 1.0f;
    rows.push_back(v);
  }
  torch::Tensor x = torch::empty({int64_t(rows.size()), k});
  for (size_t r = 0; r < rows.size(); ++r) std::memcpy(x[int64_t(r)].data_ptr<float>(), rows[r].data(), k * 4);
  for (int bits : {8, 6, 4}) {
    auto [q_aten, a_aten] = bs::quant::per_token_codes(x, bits);
    auto [q, a] = bs::quant::per_token_codes_scalar(x, bits);
    EXPECT_TRUE(torch::equal(q_aten.to(torch::kInt8), q)) << bits;
    EXPECT_TRUE(torch::equal(a_aten, a)) << bits;
    EXPECT_TRUE(torch::equal(q_aten, q_aten.round())) << bits;
    // And the training forward is codes times scales.
    EXPECT_TRUE(torch::equal(bs::quant::fake_quant_per_token(x, bits), q.to(torch::kFloat32) * a)) << bits;
  }
  // The decoder's quantizer is the same definition.
  std::vector<int8_t> dq(size_t(x.numel()));
  std::vector<float> da(size_t(x.size(0)));
  bs::deploy::lm_quantize_tokens(int(x.size(0)), k, x.data_ptr<float>(), dq.data(), da.data());
  auto [q8, a8] = bs::quant::per_token_codes_scalar(x, 8);
  EXPECT_EQ(std::memcmp(dq.data(), q8.data_ptr<int8_t>(), dq.size()), 0);
  EXPECT_EQ(std::memcmp(da.data(), a8.data_ptr<float>(), da.size() * 4), 0);
}

// ---------------- integer-exact QLinear == lm_linear_ref, bit for bit ----------------

TEST(LmIntegerEval, QLinearEqualsTheDecoderReferenceExactly) {
  torch::manual_seed(3);
  struct Shape {
    int64_t m, n, k, g;
  };
  for (const Shape& s : {Shape{1, 5, 64, 0}, Shape{7, 33, 128, 32}, Shape{3, 16, 192, 64}, Shape{4, 9, 96, 96}}) {
    auto q = bs::nn::QuantOptions().bits({8, 6, 4, 3, 2}).per_token_input(true).group_size(s.g);
    bs::nn::QLinear lin(bs::nn::QLinearOptions(s.k, s.n).bias(false).quant(q));
    auto x = torch::randn({s.m, s.k}) * 3;
    lin->set_bits({8, 8});
    (void)lin->forward(x);  // initialises the weight scales
    lin->eval();
    lin->set_integer_eval(true);
    for (int l : {8, 6, 4, 3, 2}) {
      lin->set_bits({l, l});
      auto y = lin->forward(x.view({1, s.m, s.k})).view({s.m, s.n}).contiguous();
      auto [codes, scales] = lin->integer_weight(l);
      ASSERT_EQ(scales.size(1), s.g == 0 ? 1 : s.k / s.g);
      std::vector<int8_t> xq(size_t(s.m * s.k));
      std::vector<float> xa(size_t(s.m)), ref(size_t(s.m * s.n));
      bs::deploy::lm_quantize_tokens(int(s.m), int(s.k), x.contiguous().data_ptr<float>(), xq.data(), xa.data());
      bs::deploy::lm_linear_ref(int(s.m), int(s.n), int(s.k), int(s.g), xq.data(), xa.data(),
                                codes.contiguous().data_ptr<int8_t>(), scales.contiguous().data_ptr<float>(),
                                ref.data());
      EXPECT_EQ(std::memcmp(y.data_ptr<float>(), ref.data(), ref.size() * 4), 0)
          << "m" << s.m << " n" << s.n << " k" << s.k << " g" << s.g << " w" << l;
      // The codes are Double Rounding's l-bit codes of the stored 8-bit ones.
      auto [c8, s8] = lin->integer_weight(8);
      EXPECT_TRUE(torch::equal(codes, bs::quant::derive_codes(c8, 8, l, bs::quant::SecondRounding::kHalfUp)));
      EXPECT_TRUE(torch::equal(scales, s8 * double(1 << (8 - l))));
    }
  }
}

// ---------------- the whole model: integer-exact vs fake-quantized forward ----------------

// Documented tolerance: the two forwards differ in the rounding of float sums (the fake quantizer
// multiplies dequantized values in a float GEMM; the integer evaluation sums integers exactly and
// scales once per group), about 1e-6 relative, and through that in an occasional per-token code
// of a later layer one step apart (an input within rounding error of a code boundary). Logits
// agree on average within 1e-4 of their range (max |logit|), everywhere within 1e-2.
TEST(LmIntegerEval, ModelMatchesTheFakeQuantizedForward) {
  for (const json& variant : {json{{"group_size", 0}}, json{{"group_size", 32}, {"tied", true}}}) {
    for (int edge : {bs::nn::kFloatBits, 8}) {
      auto model = tiny_llama(variant, edge, {8, 6, 4, 2}, 7);
      auto tokens = torch::randint(0, model->arch().vocab, {2, 12}, torch::kInt64);
      for (int l : {8, 6, 4, 2}) {
        bs::nn::apply_bits(*model, bs::nn::BitConfig::uniform(l));
        torch::NoGradGuard ng;
        bs::nn::set_integer_eval(*model, false);
        auto fake = model->forward(tokens);
        bs::nn::set_integer_eval(*model, true);
        auto exact = model->forward(tokens);
        const double range = fake.abs().max().item<double>();
        const auto diff = (fake - exact).abs();
        EXPECT_LE(diff.mean().item<double>(), 1e-4 * range) << variant.dump() << " edge " << edge << " w" << l;
        EXPECT_LE(diff.max().item<double>(), 1e-2 * range) << variant.dump() << " edge " << edge << " w" << l;
        bs::nn::set_integer_eval(*model, false);
      }
    }
  }
}

// ---------------- artifact: export, switch, read, errors ----------------

namespace {

using bs::deploy::Artifact;

std::string error_text(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {  // bitswitch::Error
    return e.what();
  }
  return "(no error)";
}

// The artifact's safetensors image, parsed. parse_safetensors' views point into the bytes, so the
// bytes live as long as the image (a local buffer here was a use-after-free: the tests that ran
// earlier in the same process decided what the freed bytes then held).
struct Image {
  std::vector<uint8_t> bytes;
  bs::format::SafeTensors st;
  operator const bs::format::SafeTensors&() const { return st; }
};
std::unique_ptr<Image> image_of(const Artifact& a, const std::function<void(std::vector<bs::format::TensorToWrite>&,
                                                                           std::map<std::string, std::string>&)>& edit = {}) {
  std::map<std::string, std::string> meta;
  auto tensors = bs::deploy::artifact_tensors(a, &meta);
  if (edit) edit(tensors, meta);
  auto img = std::make_unique<Image>();
  img->bytes = bs::format::serialize_safetensors(tensors, meta);
  img->st = bs::format::parse_safetensors(img->bytes.data(), img->bytes.size(), "lm.safetensors");
  return img;
}

Artifact export_tiny(const json& arch, int edge, std::vector<int> bits = {8, 6, 4, 2}, uint64_t seed = 9) {
  auto model = tiny_llama(arch, edge, bits, seed);
  const auto spec = bs::lmtest::tiny_llama_spec(arch, edge, bits);
  return bs::deploy::export_model(*model, spec, json{{"test", true}});
}

}  // namespace

TEST(LmArtifact, ExportSwitchAndReadBack) {
  for (const json& arch : {json{{"group_size", 0}}, json{{"group_size", 32}, {"tied", true}}}) {
    for (int edge : {bs::nn::kFloatBits, 8}) {
      const Artifact m = export_tiny(arch, edge);
      ASSERT_TRUE(m.is_lm());
      EXPECT_EQ(m.lm.vocab, 96);
      EXPECT_EQ(m.lm.group_size, arch["group_size"].get<int64_t>());
      EXPECT_EQ(m.norms.size(), size_t(2 * 2 + 1));
      EXPECT_EQ(m.tokenizer_kind, "byte");
      const Artifact r = bs::deploy::artifact_from_safetensors(*image_of(m));
      ASSERT_EQ(r.layers.size(), m.layers.size());
      for (size_t i = 0; i < r.layers.size(); ++i) {
        const auto &x = m.layers[i], &y = r.layers[i];
        EXPECT_EQ(x.name, y.name);
        EXPECT_EQ(x.codes, y.codes) << x.name;
        EXPECT_EQ(x.scale, y.scale) << x.name;
        EXPECT_EQ(x.weight, y.weight) << x.name;
        EXPECT_EQ(x.group, y.group) << x.name;
        EXPECT_EQ(x.per_token_input, y.per_token_input) << x.name;
        if (x.switchable) EXPECT_EQ(x.scale.size(), size_t(x.out * (x.group ? x.in / x.group : 1))) << x.name;
      }
      EXPECT_EQ(bs::format::graph_to_json(r.graph), bs::format::graph_to_json(m.graph));
      EXPECT_EQ(r.lm.to_json(), m.lm.to_json());
      const auto& emb = r.layer("model.embed_tokens");
      EXPECT_EQ(emb.kind, bs::deploy::LayerKind::kEmbedding);
      EXPECT_EQ(emb.quantized, edge == 8);
      for (int b : {6, 4, 2}) {
        const Artifact s = bs::deploy::switch_uniform(m, b, 1);
        const Artifact sr = bs::deploy::artifact_from_safetensors(*image_of(s));
        EXPECT_EQ(sr.label(), "w" + std::to_string(b));
        for (size_t i = 0; i < sr.layers.size(); ++i) {
          const auto &x = m.layers[i], &y = sr.layers[i];
          if (!x.switchable) {
            EXPECT_EQ(x.codes, y.codes);
            continue;
          }
          ASSERT_EQ(y.bits, b);
          for (size_t k = 0; k < x.codes.size(); ++k)
            ASSERT_EQ(int(y.codes[k]), bs::quant::derive_code(x.codes[k], 8, b, bs::quant::SecondRounding::kHalfUp));
          for (size_t k = 0; k < x.scale.size(); ++k) ASSERT_EQ(y.scale[k], x.scale[k] * float(1 << (8 - b)));
        }
        EXPECT_EQ(sr.norms.size(), m.norms.size());
      }
    }
  }
}

TEST(LmArtifact, BadArtifactsNameTheTensorOrNode) {
  const Artifact m = export_tiny(json{{"group_size", 32}}, bs::nn::kFloatBits);
  auto with = [&](const std::function<void(std::vector<bs::format::TensorToWrite>&, std::map<std::string, std::string>&)>& e) {
    return error_text([&] { bs::deploy::artifact_from_safetensors(*image_of(m, e)); });
  };
  auto drop = [](std::vector<bs::format::TensorToWrite>& t, const std::string& name) {
    for (size_t i = 0; i < t.size(); ++i)
      if (t[i].name == name) {
        t.erase(t.begin() + long(i));
        return;
      }
    FAIL() << name;
  };
  EXPECT_CONTAINS(with([&](auto& t, auto&) { drop(t, "model.layers.1.post_attention_layernorm.weight"); }),
                  "model.layers.1.post_attention_layernorm.weight");
  EXPECT_CONTAINS(with([&](auto& t, auto&) { drop(t, "model.layers.0.mlp.up_proj.weight_scale"); }),
                  "model.layers.0.mlp.up_proj.weight_scale");
  // A per-group scale of the wrong shape.
  EXPECT_CONTAINS(with([&](auto& t, auto&) {
                    for (auto& x : t)
                      if (x.name == "model.layers.0.self_attn.q_proj.weight_scale") x.shape = {int64_t(x.bytes.size() / 4)};
                  }),
                  "model.layers.0.self_attn.q_proj.weight_scale");
  // A group that does not divide the row.
  EXPECT_CONTAINS(with([&](auto&, auto& meta) {
                    auto layers = json::parse(meta["layers"]);
                    for (auto& l : layers)
                      if (l["name"] == "model.layers.0.mlp.down_proj") l["group"] = 48;
                    meta["layers"] = layers.dump();
                  }),
                  "layer 'model.layers.0.mlp.down_proj': bad group 48");
  // Graph attributes against the model's hyper-parameters, and against the records.
  auto edit_node = [&](const std::string& name, const std::function<void(json&)>& fn) {
    return with([&](auto&, auto& meta) {
      auto g = json::parse(meta["graph"]);
      for (auto& n : g["nodes"])
        if (n["name"] == name) fn(n);
      meta["graph"] = g.dump();
    });
  };
  EXPECT_CONTAINS(edit_node("model.layers.1.self_attn", [](json& n) { n["heads"] = 2, n["head_dim"] = 32; }),
                  "node 'model.layers.1.self_attn'");
  EXPECT_CONTAINS(edit_node("model.layers.0.input_layernorm", [](json& n) { n["eps"] = 1e-3; }),
                  "node 'model.layers.0.input_layernorm': eps");
  EXPECT_CONTAINS(edit_node("model.layers.0.mlp.gate_proj", [](json& n) { n["quant"] = "signed"; }),
                  "node 'model.layers.0.mlp.gate_proj': input quantizer 'signed' differs");
  EXPECT_CONTAINS(edit_node("model.embed_tokens", [](json& n) { n["dim"] = 32; }), "node 'model.embed_tokens'");
  EXPECT_CONTAINS(with([&](auto&, auto& meta) {
                    auto lm = json::parse(meta["lm"]);
                    lm["kv_heads"] = "two";
                    meta["lm"] = lm.dump();
                  }),
                  "metadata 'lm': field 'kv_heads' must be an integer");
  EXPECT_CONTAINS(with([&](auto&, auto& meta) { meta["tokenizer"] = json{{"kind", "words"}, {"bytes", 0}}.dump(); }),
                  "metadata 'tokenizer': kind must be byte or sentencepiece");
  // A structure the decoder does not run: the MLP's residual add reads the wrong stream.
  Artifact bad = m;
  for (auto& n : bad.graph.nodes)
    if (n.name == "model.layers.0.post_attention_layernorm") n.inputs = {bad.graph.nodes[1].name};
  EXPECT_CONTAINS(error_text([&] { bs::deploy::check_lm_graph(bad); }),
                  "node 'model.layers.0.post_attention_layernorm' normalises 'model.embed_tokens'");
  // The image runtime refuses a language model, naming the node.
  EXPECT_CONTAINS(error_text([&] { bs::deploy::check_deployable(m); }), "node 'tokens': op 'tokens' belongs to a language model");
}

// ---------------- loader: artifact -> decoder weights ----------------

TEST(LmArtifact, LoaderBuildsTheDecoderLayersOfEveryWidth) {
  for (const json& arch : {json{{"group_size", 0}}, json{{"group_size", 32}, {"tied", true}}}) {
    for (int edge : {bs::nn::kFloatBits, 8}) {
      auto model = tiny_llama(arch, edge, {8, 6, 4, 2}, 9);
      const Artifact m = bs::deploy::export_model(*model, bs::lmtest::tiny_llama_spec(arch, edge, {8, 6, 4, 2}), {});
      bs::nn::set_integer_eval(*model, true);
      for (int b : {8, 4, 2}) {
        const auto w = bs::deploy::lm_decoder_weights(bs::deploy::switch_uniform(m, b, 1));
        ASSERT_EQ(w->blocks.size(), 2u);
        EXPECT_EQ(w->shape.kv_heads, 2);
        EXPECT_EQ(w->blocks[1].down.bits(), b);
        if (arch["group_size"].get<int>() > 0) EXPECT_EQ(w->blocks[1].down.group(), 32);
        EXPECT_EQ(w->head_q.has_value(), edge == 8);
        EXPECT_EQ(w->head.empty(), arch.value("tied", false) || edge == 8);
        // Each integer layer computes what the model's integer-exact evaluation computes.
        bs::nn::apply_bits(*model, bs::nn::BitConfig::uniform(b));
        auto x = torch::randn({3, 64});
        auto& blk = *model->model->layers[1]->as<bs::models::LlamaBlock>();
        auto want = blk.mlp->up_proj->forward(x).contiguous();
        std::vector<int8_t> q(3 * 64);
        std::vector<float> a(3), y(3 * 128);
        bs::deploy::lm_quantize_tokens(3, 64, x.data_ptr<float>(), q.data(), a.data());
        w->blocks[1].up.forward(3, q.data(), a.data(), y.data());
        EXPECT_EQ(std::memcmp(y.data(), want.data_ptr<float>(), y.size() * 4), 0) << arch.dump() << " " << edge << " " << b;
        // The embedding: FP, or 8-bit codes times their row scale.
        auto emb = model->model->embed_tokens->effective_weight().contiguous();
        EXPECT_EQ(std::memcmp(w->embedding.data(), emb.data_ptr<float>(), w->embedding.size() * 4), 0);
      }
    }
  }
}
