// The integer LM decoder against the trained model (SPEC.md Sec. 9; issue "language-model
// decoding"): logits of the decoder (deploy/lm_decoder.h) run from an exported and switched
// artifact against the checkpoint's integer-exact evaluation (nn::set_integer_eval) at every
// width and a per-layer config, per channel and group-wise; perplexity against the trainer's
// evaluate_lm; greedy generation against train::lm_generate; the KV cache against a full prefill;
// sampling determinism.
//
// Tolerance of the logits: the integer layers are bit-exact on both sides (test_lm_deploy.cpp);
// RMSNorm, rotary embedding, softmax attention and SiLU run in float32 in a different order of
// operations, and a changed float can move a per-token code by one step. Logits agree within
// kLogitTol of their range (max |logit|).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <random>

#include <nlohmann/json.hpp>

#include "bitswitch/data/text.h"
#include "bitswitch/deploy/artifact.h"
#include "bitswitch/deploy/export.h"
#include "bitswitch/deploy/lm_artifact.h"
#include "bitswitch/deploy/lm_decoder.h"
#include "bitswitch/deploy/lm_eval.h"
#include "bitswitch/train/lm_trainer.h"
#include "lm_test_util.h"

namespace bs = bitswitch;
using json = nlohmann::json;

namespace {

constexpr double kLogitTol = 2e-3;
const std::vector<int> kBits = {8, 6, 4, 2};

struct Fixture {
  std::shared_ptr<bs::models::LlamaImpl> model;
  bs::deploy::Artifact master;
};

Fixture make(const json& arch, int edge, uint64_t seed = 21) {
  Fixture f;
  f.model = bs::lmtest::tiny_llama(arch, edge, kBits, seed, 0.08, 256);
  f.master = bs::deploy::export_model(*f.model, bs::lmtest::tiny_llama_spec(arch, edge, kBits, 256), {});
  bs::nn::set_integer_eval(*f.model, true);
  return f;
}

std::vector<int32_t> random_tokens(int64_t n, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % 256);
  return t;
}

torch::Tensor as_tensor(const std::vector<int32_t>& ids) {
  return torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kInt64).unsqueeze(0);
}

// Decoder logits of every position of `ids` (one prefill) vs the integer-exact model's.
double max_logit_error(bs::models::LlamaImpl& model, const bs::deploy::Artifact& switched,
                       const std::vector<int32_t>& ids, double* range = nullptr) {
  // The default width quantizes the fixed-width (8-bit) embedding and head too.
  bs::nn::apply_bits(model, bs::nn::layer_bits_config(switched.layer_bits(), kBits.front()));
  torch::NoGradGuard ng;
  auto want = model.forward(as_tensor(ids)).squeeze(0).contiguous();
  bs::deploy::LmDecoderOptions o;
  o.threads = 1;
  bs::deploy::LmDecoder dec(bs::deploy::lm_decoder_weights(switched), o);
  std::vector<float> got(ids.size() * 256);
  dec.forward(ids.data(), int(ids.size()), got.data(), /*all_logits=*/true);
  auto g = torch::from_blob(got.data(), {int64_t(ids.size()), 256}, torch::kFloat32);
  if (range) *range = want.abs().max().item<double>();
  return (g - want).abs().max().item<double>();
}

}  // namespace

TEST(LmDecoder, LogitsMatchTheIntegerExactModelAtEveryWidth) {
  const auto ids = random_tokens(40, 3);
  double worst = 0;  // largest err / range seen, printed for docs/lm.md
  for (const json& arch : {json{{"group_size", 0}}, json{{"group_size", 32}, {"tied", true}}}) {
    for (int edge : {bs::nn::kFloatBits, 8}) {
      auto f = make(arch, edge);
      for (int b : kBits) {
        double range = 0;
        const double err = max_logit_error(*f.model, bs::deploy::switch_uniform(f.master, b, 1), ids, &range);
        EXPECT_LE(err, kLogitTol * range) << arch.dump() << " edge " << edge << " w" << b << " range " << range;
        worst = std::max(worst, err / range);
      }
      // A per-layer config: widths cycling through the bit list.
      std::map<std::string, int> per_layer;
      int i = 0;
      for (const auto& l : f.master.layers)
        if (l.switchable) per_layer[l.name] = kBits[size_t(i++ % 4)];
      double range = 0;
      const double err = max_logit_error(*f.model, bs::deploy::switch_widths(f.master, per_layer, 1), ids, &range);
      EXPECT_LE(err, kLogitTol * range) << arch.dump() << " edge " << edge << " mixed";
      worst = std::max(worst, err / range);
    }
  }
  std::cout << "largest |decoder - integer-exact model| / max |logit|: " << worst << std::endl;
}

TEST(LmDecoder, PerplexityEqualsTheTrainersToThreeDigits) {
  auto f = make(json{{"group_size", 32}}, bs::nn::kFloatBits);
  auto tok = bs::data::byte_tokenizer();
  const auto ids = random_tokens(96 * 3 + 1, 8);
  bs::data::TokenWindows windows(as_tensor(ids).squeeze(0), 96);
  std::vector<int64_t> bytes(256, 1);
  for (int b : kBits) {
    const auto r = bs::train::evaluate_lm(*f.model, windows, *tok, bs::nn::BitConfig::uniform(b));
    bs::deploy::LmDecoderOptions o;
    o.threads = 2;
    bs::deploy::LmDecoder dec(bs::deploy::lm_decoder_weights(bs::deploy::switch_uniform(f.master, b, 1)), o);
    const auto s = bs::deploy::lm_score(dec, ids, bytes);
    EXPECT_EQ(s.tokens, r.tokens);
    EXPECT_LT(std::abs(s.perplexity / r.perplexity - 1), 5e-4) << "w" << b << ": " << s.perplexity << " vs "
                                                               << r.perplexity;
    EXPECT_NEAR(s.bits_per_byte, r.bits_per_byte, 1e-3 * r.bits_per_byte);
    std::cout << "w" << b << " perplexity: decoder " << s.perplexity << ", evaluate_lm " << r.perplexity << std::endl;
  }
}

TEST(LmDecoder, GreedyGenerationEqualsTheLibTorchModelFor64Tokens) {
  for (const json& arch : {json{{"group_size", 0}, {"tied", true}}, json{{"group_size", 32}}}) {
    auto f = make(arch, 8, 31);
    auto tok = bs::data::byte_tokenizer();
    const std::string prompt = "The quick brown fox";
    for (int b : {8, 4, 2}) {
      const auto want = bs::train::lm_generate(*f.model, *tok, prompt, bs::nn::BitConfig::uniform(b), 64, 0.0, 0, 1);
      bs::deploy::LmDecoder dec(bs::deploy::lm_decoder_weights(bs::deploy::switch_uniform(f.master, b, 1)));
      bs::deploy::Sampler greedy(bs::deploy::SamplerOptions{});
      const auto ids = tok->encode(prompt);
      std::vector<float> logits(256);
      dec.forward(ids.data(), int(ids.size()), logits.data());
      std::vector<int32_t> out;
      for (int i = 0; i < 64; ++i) {
        out.push_back(greedy.sample(logits.data(), 256));
        dec.forward(&out.back(), 1, logits.data());
      }
      EXPECT_EQ(tok->decode(out), want) << arch.dump() << " w" << b;
    }
  }
}

TEST(LmDecoder, KvCacheTokenByTokenEqualsAFullPrefill) {
  auto f = make(json{{"group_size", 32}, {"kv_heads", 1}}, bs::nn::kFloatBits);
  const auto ids = random_tokens(50, 4);
  for (auto cache : {bs::deploy::KvCache::kFloat32, bs::deploy::KvCache::kFloat16}) {
    bs::deploy::LmDecoderOptions o;
    o.threads = 2;
    o.kv_cache = cache;
    bs::deploy::LmDecoder dec(bs::deploy::lm_decoder_weights(bs::deploy::switch_uniform(f.master, 4, 1)), o);
    std::vector<float> full(ids.size() * 256), step(256);
    dec.forward(ids.data(), int(ids.size()), full.data(), true);
    EXPECT_EQ(dec.position(), int64_t(ids.size()));
    dec.reset();
    double err = 0, range = 0;
    // A prefill of 7 tokens, then one at a time.
    std::vector<float> first(7 * 256);
    dec.forward(ids.data(), 7, first.data(), true);
    for (size_t k = 0; k < first.size(); ++k) err = std::max(err, double(std::abs(first[k] - full[k])));
    for (size_t t = 7; t < ids.size(); ++t) {
      dec.forward(&ids[t], 1, step.data());
      for (size_t v = 0; v < 256; ++v) {
        err = std::max(err, double(std::abs(step[v] - full[t * 256 + v])));
        range = std::max(range, double(std::abs(full[t * 256 + v])));
      }
    }
    EXPECT_LE(err, (cache == bs::deploy::KvCache::kFloat32 ? 1e-4 : kLogitTol) * range) << int(cache);
  }
}

TEST(LmDecoder, SamplingIsDeterministicForASeed) {
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0, 3);
  std::vector<float> logits(256);
  for (auto& x : logits) x = nd(rng);
  auto draw = [&](bs::deploy::SamplerOptions o, int n) {
    bs::deploy::Sampler s(o);
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) out.push_back(s.sample(logits.data(), 256));
    return out;
  };
  bs::deploy::SamplerOptions o;
  o.temperature = 1.0, o.top_k = 20, o.top_p = 0.9, o.seed = 7;
  EXPECT_EQ(draw(o, 200), draw(o, 200));
  auto o2 = o;
  o2.seed = 8;
  EXPECT_NE(draw(o, 200), draw(o2, 200));
  // Greedy: the arg max, whatever the seed.
  const int32_t argmax = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  bs::deploy::SamplerOptions g;
  g.seed = 99;
  for (int32_t t : draw(g, 5)) EXPECT_EQ(t, argmax);
  // top_k = 1 is greedy too; top_k restricts to the k largest.
  o.top_k = 1;
  for (int32_t t : draw(o, 20)) EXPECT_EQ(t, argmax);
  o.top_k = 5, o.top_p = 1.0;
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  for (int32_t t : draw(o, 200)) EXPECT_GE(logits[size_t(t)], sorted[4]);
}
