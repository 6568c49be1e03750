// Tests of the torch-free LM decoder (deploy/lm_decoder.h): against a naive full-sequence
// recompute written here from the formulas (lm_linear_ref for the integer layers); the KV cache
// (token-by-token decoding == one prefill, bit for bit; FP16 cache close to FP32); threads;
// errors; the sampler (seeded determinism, greedy ties, top-k and top-p restriction).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "bitswitch/deploy/lm_decoder.h"
#include "deploy_test_util.h"

using namespace bitswitch;
using namespace bitswitch::deploy;

namespace {

LmShape small_shape() {
  LmShape s;
  s.vocab = 61, s.dim = 64, s.layers = 2, s.heads = 4, s.kv_heads = 2, s.mlp = 96, s.context = 40;
  s.rope_theta = 10000.0, s.norm_eps = 1e-5;
  return s;
}

// One integer layer kept both ways: codes for the reference, LmLinear for the decoder.
struct RefLinear {
  int N = 0, K = 0, group = 0;
  std::vector<int8_t> codes;
  std::vector<float> scales;
};

RefLinear random_ref(std::mt19937& rng, int N, int K, int bits, int group) {
  RefLinear r{N, K, group, std::vector<int8_t>(size_t(N) * K), {}};
  std::uniform_int_distribution<int> c(-(1 << (bits - 1)), (1 << (bits - 1)) - 1);
  for (auto& x : r.codes) x = int8_t(c(rng));
  std::uniform_real_distribution<float> s(0.5f, 1.5f);
  r.scales.resize(size_t(N) * (K / (group == 0 ? K : group)));
  for (auto& x : r.scales) x = s(rng) / (float(1 << (bits - 1)) * std::sqrt(float(K)));
  return r;
}

struct Model {
  std::shared_ptr<LmDecoderWeights> w;
  std::vector<std::vector<RefLinear>> ref;  // [layer][q, k, v, o, gate, up, down]
  RefLinear head;                           // when the head is integer
};

Model random_model(const LmShape& s, int bits, int group, LmRandomHead head, uint32_t seed) {
  std::mt19937 rng(seed);
  Model m;
  m.w = std::make_shared<LmDecoderWeights>();
  auto& w = *m.w;
  w.shape = s;
  std::uniform_real_distribution<float> u(-1.0f, 1.0f), nw(0.8f, 1.2f);
  w.embedding.resize(size_t(s.vocab * s.dim));
  for (auto& e : w.embedding) e = u(rng);
  const int hd = int(s.head_dim());
  const int dims[7][2] = {{int(s.heads) * hd, int(s.dim)}, {int(s.kv_heads) * hd, int(s.dim)},
                          {int(s.kv_heads) * hd, int(s.dim)}, {int(s.dim), int(s.heads) * hd},
                          {int(s.mlp), int(s.dim)},          {int(s.mlp), int(s.dim)},
                          {int(s.dim), int(s.mlp)}};
  for (int64_t l = 0; l < s.layers; ++l) {
    LmBlockWeights b;
    b.attn_norm.resize(size_t(s.dim));
    b.mlp_norm.resize(size_t(s.dim));
    for (auto& x : b.attn_norm) x = nw(rng);
    for (auto& x : b.mlp_norm) x = nw(rng);
    std::vector<RefLinear> refs;
    LmLinear* layers[7] = {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down};
    for (int i = 0; i < 7; ++i) {
      refs.push_back(random_ref(rng, dims[i][0], dims[i][1], bits, group));
      const auto& r = refs.back();
      *layers[i] = LmLinear::from_codes(r.N, r.K, bits, group, r.codes.data(), r.scales.data());
    }
    m.ref.push_back(std::move(refs));
    w.blocks.push_back(std::move(b));
  }
  w.final_norm.resize(size_t(s.dim));
  for (auto& x : w.final_norm) x = nw(rng);
  if (head == LmRandomHead::kInteger8) {
    m.head = random_ref(rng, int(s.vocab), int(s.dim), 8, 0);
    w.head_q = LmLinear::from_codes(m.head.N, m.head.K, 8, 0, m.head.codes.data(), m.head.scales.data());
  } else if (head == LmRandomHead::kFloat32) {
    w.head.resize(size_t(s.vocab * s.dim));
    for (auto& e : w.head) e = u(rng) / 8.0f;
  }
  return m;
}

// The naive full-sequence forward (the formulas of lm_decoder.h / models/llama.cpp): logits of
// every position of `tokens`.
std::vector<float> reference_logits(const Model& m, const std::vector<int32_t>& tokens) {
  const auto& w = *m.w;
  const auto& s = w.shape;
  const int T = int(tokens.size()), d = int(s.dim), hd = int(s.head_dim()), H = int(s.heads), KV = int(s.kv_heads);
  auto lin = [](const RefLinear& r, const std::vector<float>& x, int T) {
    std::vector<int8_t> q(size_t(T) * r.K);
    std::vector<float> a(T), y(size_t(T) * r.N);
    lm_quantize_tokens(T, r.K, x.data(), q.data(), a.data());
    lm_linear_ref(T, r.N, r.K, r.group, q.data(), a.data(), r.codes.data(), r.scales.data(), y.data());
    return y;
  };
  auto norm = [&](const std::vector<float>& x, const std::vector<float>& g) {
    std::vector<float> y(x.size());
    for (int t = 0; t < T; ++t) {
      double ss = 0;
      for (int i = 0; i < d; ++i) ss += double(x[t * d + i] * x[t * d + i]);
      const float r = 1.0f / std::sqrt(float(ss / d) + float(s.norm_eps));
      for (int i = 0; i < d; ++i) y[t * d + i] = g[i] * (x[t * d + i] * r);
    }
    return y;
  };
  auto rope = [&](std::vector<float>& x, int heads) {
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < hd / 2; ++i) {
          const float f = 1.0f / std::pow(float(s.rope_theta), float(2 * i) / float(hd));
          const float ang = float(t) * f, c = std::cos(ang), sn = std::sin(ang);
          float* v = x.data() + (t * heads + h) * hd;
          const float x1 = v[i], x2 = v[i + hd / 2];
          v[i] = x1 * c + (-x2) * sn;
          v[i + hd / 2] = x2 * c + x1 * sn;
        }
  };
  std::vector<float> x(size_t(T) * d);
  for (int t = 0; t < T; ++t)
    std::copy_n(w.embedding.begin() + size_t(tokens[t]) * d, d, x.begin() + size_t(t) * d);
  for (int64_t l = 0; l < s.layers; ++l) {
    const auto& R = m.ref[l];
    const auto& b = w.blocks[l];
    auto xn = norm(x, b.attn_norm);
    auto q = lin(R[0], xn, T), k = lin(R[1], xn, T), v = lin(R[2], xn, T);
    rope(q, H);
    rope(k, KV);
    std::vector<float> att(size_t(T) * H * hd, 0.0f);
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h) {
        const int g = h / (H / KV);
        std::vector<float> sc(t + 1);
        float mx = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // the decoder's order (dot8)
          for (int i = 0; i < hd; ++i) lane[i % 8] += q[(t * H + h) * hd + i] * k[(j * KV + g) * hd + i];
          float dot = 0;
          for (float l : lane) dot += l;
          sc[j] = dot * float(1.0 / std::sqrt(double(hd)));
          mx = std::max(mx, sc[j]);
        }
        float sum = 0;
        for (auto& e : sc) sum += e = std::exp(e - mx);
        for (auto& e : sc) e *= 1.0f / sum;
        for (int j = 0; j <= t; ++j)
          for (int i = 0; i < hd; ++i) att[(t * H + h) * hd + i] += sc[j] * v[(j * KV + g) * hd + i];
      }
    auto o = lin(R[3], att, T);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
    xn = norm(x, b.mlp_norm);
    auto gt = lin(R[4], xn, T), up = lin(R[5], xn, T);
    for (size_t i = 0; i < gt.size(); ++i) gt[i] = gt[i] / (1.0f + std::exp(-gt[i])) * up[i];
    auto dn = lin(R[6], gt, T);
    for (size_t i = 0; i < x.size(); ++i) x[i] += dn[i];
  }
  auto xn = norm(x, w.final_norm);
  if (w.head_q) return lin(m.head, xn, T);
  const auto& H2 = w.head.empty() ? w.embedding : w.head;
  std::vector<float> y(size_t(T) * s.vocab);
  for (int t = 0; t < T; ++t)
    for (int64_t r = 0; r < s.vocab; ++r) {
      float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // the decoder's fixed order: lane i mod 8, then lanes
      for (int i = 0; i < d; ++i) lane[i % 8] += xn[t * d + i] * H2[r * d + i];
      float acc = 0;
      for (float l : lane) acc += l;
      y[t * s.vocab + r] = acc;
    }
  return y;
}

std::vector<int32_t> random_tokens(std::mt19937& rng, int n, int64_t vocab) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(rng() % uint32_t(vocab));
  return t;
}

float max_abs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

}  // namespace

TEST(LmDecoder, PrefillMatchesNaiveRecompute) {
  std::mt19937 rng(1);
  for (auto head : {LmRandomHead::kInteger8, LmRandomHead::kFloat32, LmRandomHead::kTied}) {
    for (int bits : {8, 4, 2}) {
      const auto m = random_model(small_shape(), bits, bits == 4 ? 32 : 0, head, 10 + bits);
      const auto tokens = random_tokens(rng, 17, m.w->shape.vocab);
      const auto ref = reference_logits(m, tokens);
      LmDecoder dec(m.w, {1});
      std::vector<float> got(ref.size());
      dec.forward(tokens.data(), int(tokens.size()), got.data(), /*all_logits=*/true);
      EXPECT_EQ(dec.position(), 17);
      // Same float order of operations: only libm's cos/sin/pow/exp may differ by an ulp.
      float diff = 0;
      for (size_t i = 0; i < ref.size(); ++i) diff = std::max(diff, std::fabs(got[i] - ref[i]));
      EXPECT_LE(diff, 1e-4f * std::max(1.0f, max_abs(ref))) << "bits " << bits << " head " << int(head);
      EXPECT_GT(max_abs(ref), 0.0f);
    }
  }
}

TEST(LmDecoder, TokenByTokenEqualsPrefill) {
  std::mt19937 rng(2);
  for (auto cache : {KvCache::kFloat32, KvCache::kFloat16}) {
    const auto m = random_model(small_shape(), 4, 32, LmRandomHead::kInteger8, 3);
    const int n = 23;
    const auto tokens = random_tokens(rng, n, m.w->shape.vocab);
    const int64_t V = m.w->shape.vocab;
    LmDecoderOptions opt;
    opt.threads = 1, opt.kv_cache = cache;
    LmDecoder full(m.w, opt);
    std::vector<float> all(size_t(n) * V), last(V);
    full.forward(tokens.data(), n, all.data(), true);
    for (int threads : {1, 2}) {
      opt.threads = threads;
      LmDecoder step(m.w, opt);
      for (int t = 0; t < n; ++t) {
        step.forward(&tokens[t], 1, last.data());
        // Tolerance: none. Per-token quantization, the exact integer layers and per-query
        // attention over the cache make decoding and prefill the same float computation.
        ASSERT_EQ(0, std::memcmp(last.data(), all.data() + size_t(t) * V, V * sizeof(float)))
            << "position " << t << " threads " << threads << " cache " << int(cache);
      }
      // Split prefill 9 + 14: the same logits again; the last-token output of a prefill too.
      step.reset();
      EXPECT_EQ(step.position(), 0);
      std::vector<float> part(size_t(14) * V);
      step.forward(tokens.data(), 9, last.data());
      EXPECT_EQ(0, std::memcmp(last.data(), all.data() + size_t(8) * V, V * sizeof(float)));
      step.forward(tokens.data() + 9, 14, part.data(), true);
      EXPECT_EQ(0, std::memcmp(part.data(), all.data() + size_t(9) * V, part.size() * sizeof(float)));
    }
  }
}

TEST(LmDecoder, Float16CacheIsClose) {
  std::mt19937 rng(4);
  const auto m = random_model(small_shape(), 8, 0, LmRandomHead::kFloat32, 5);
  const auto tokens = random_tokens(rng, 30, m.w->shape.vocab);
  const int64_t V = m.w->shape.vocab;
  std::vector<float> a(size_t(30) * V), b(a.size());
  LmDecoderOptions o32, o16;
  o16.kv_cache = KvCache::kFloat16;
  LmDecoder(m.w, o32).forward(tokens.data(), 30, a.data(), true);
  LmDecoder(m.w, o16).forward(tokens.data(), 30, b.data(), true);
  float diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::fabs(a[i] - b[i]));
  EXPECT_GT(diff, 0.0f);  // the cache is really rounded
  EXPECT_LE(diff, 0.05f * max_abs(a));
}

TEST(LmDecoder, RandomWeightsRun) {
  LmShape s = small_shape();
  for (auto head : {LmRandomHead::kInteger8, LmRandomHead::kFloat32, LmRandomHead::kTied}) {
    auto w = lm_random_weights(s, 3, 32, 9, head);
    LmDecoder dec(w);
    std::vector<float> logits(s.vocab);
    const int32_t t[3] = {1, 2, 3};
    dec.forward(t, 3, logits.data());
    for (float x : logits) ASSERT_TRUE(std::isfinite(x));
    EXPECT_GT(max_abs(logits), 0.0f);
    EXPECT_GT(dec.weight_bytes(), size_t(s.vocab * s.dim * 4));
  }
  // The same seed, the same weights.
  auto a = lm_random_weights(s, 2, 0, 7), b = lm_random_weights(s, 2, 0, 7);
  EXPECT_EQ(a->embedding, b->embedding);
}

TEST(LmDecoder, Errors) {
  const auto m = random_model(small_shape(), 4, 0, LmRandomHead::kTied, 6);
  LmDecoderOptions opt;
  opt.max_positions = 8;
  LmDecoder dec(m.w, opt);
  std::vector<float> logits(size_t(m.w->shape.vocab) * 9);
  const std::vector<int32_t> tokens(9, 1);
  EXPECT_CONTAINS(error_of([&] { dec.forward(tokens.data(), 9, logits.data()); }),
                  "positions 0..8 exceed the cache of max_positions = 8");
  dec.forward(tokens.data(), 8, logits.data());
  EXPECT_CONTAINS(error_of([&] { dec.forward(tokens.data(), 1, logits.data()); }), "positions 8..8 exceed");
  dec.reset();
  const int32_t bad[2] = {3, 61};
  EXPECT_CONTAINS(error_of([&] { dec.forward(bad, 2, logits.data()); }),
                  "token id 61 at index 1 is outside the vocabulary [0, 61)");
  const int32_t neg = -1;
  EXPECT_CONTAINS(error_of([&] { dec.forward(&neg, 1, logits.data()); }), "token id -1");
  EXPECT_CONTAINS(error_of([&] { dec.forward(tokens.data(), 0, logits.data()); }), "at least one token");
  EXPECT_EQ(dec.position(), 0);  // failed calls change nothing
  EXPECT_CONTAINS(error_of([] { LmDecoder(nullptr); }), "no weights");
  auto w2 = std::make_shared<LmDecoderWeights>(LmDecoderWeights{});
  w2->shape = small_shape();
  EXPECT_CONTAINS(error_of([&] { LmDecoder{w2}; }), "embedding holds 0 floats");
  auto w3 = lm_random_weights(small_shape(), 4, 0, 1, LmRandomHead::kTied);
  w3->blocks.pop_back();
  EXPECT_CONTAINS(error_of([&] { LmDecoder{w3}; }), "1 blocks, the shape has 2 layers");
  auto w4 = lm_random_weights(small_shape(), 4, 0, 1, LmRandomHead::kTied);
  std::swap(w4->blocks[1].q, w4->blocks[1].k);
  EXPECT_CONTAINS(error_of([&] { LmDecoder{w4}; }), "block 1 q is 32 x 64, the shape needs 64 x 64");
  auto w5 = lm_random_weights(small_shape(), 4, 0, 1, LmRandomHead::kTied);
  w5->shape.kv_heads = 3;
  EXPECT_CONTAINS(error_of([&] { LmDecoder{w5}; }), "multiple of kv_heads 3");
}

TEST(Sampler, GreedyTakesTheLowestIndexOnTies) {
  const std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  Sampler greedy({});
  EXPECT_EQ(greedy.sample(l.data(), 5), 1);
  SamplerOptions k1;
  k1.temperature = 1.0, k1.top_k = 1;
  EXPECT_EQ(Sampler(k1).sample(l.data(), 5), 1);
}

TEST(Sampler, SeededDeterminism) {
  std::vector<float> l(50);
  for (int i = 0; i < 50; ++i) l[i] = float(std::sin(i * 1.3));
  SamplerOptions o;
  o.temperature = 1.0, o.seed = 42;
  Sampler a(o), b(o);
  o.seed = 43;
  Sampler c(o);
  std::vector<int32_t> da, db, dc;
  for (int i = 0; i < 300; ++i) da.push_back(a.sample(l.data(), 50)), db.push_back(b.sample(l.data(), 50)),
                                dc.push_back(c.sample(l.data(), 50));
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
  EXPECT_GT(std::set<int32_t>(da.begin(), da.end()).size(), 20u);
}

TEST(Sampler, TopKAndTopPRestrict) {
  // Probabilities at temperature 1: 0.5, 0.3, 0.15, 0.05 (logits are their logs), order scrambled.
  const std::vector<float> l = {std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
  auto draws = [&](SamplerOptions o, int n) {
    Sampler s(o);
    std::map<int32_t, int> count;
    for (int i = 0; i < n; ++i) ++count[s.sample(l.data(), 4)];
    return count;
  };
  SamplerOptions o;
  o.temperature = 1.0, o.seed = 1;
  auto all = draws(o, 4000);
  EXPECT_EQ(all.size(), 4u);
  EXPECT_NEAR(all[1] / 4000.0, 0.5, 0.03);
  EXPECT_NEAR(all[3] / 4000.0, 0.3, 0.03);
  o.top_k = 2;
  auto k2 = draws(o, 4000);
  EXPECT_EQ(k2.size(), 2u);
  EXPECT_NEAR(k2[1] / 4000.0, 0.5 / 0.8, 0.03);
  o.top_k = 0, o.top_p = 0.79;  // 0.5 + 0.3 = 0.8 reaches it: two tokens
  auto p2 = draws(o, 2000);
  EXPECT_EQ(p2.size(), 2u);
  EXPECT_TRUE(p2.count(1) && p2.count(3));
  o.top_p = 0.4;  // the first alone reaches it
  auto p1 = draws(o, 200);
  EXPECT_EQ(p1.size(), 1u);
  EXPECT_EQ(p1.begin()->first, 1);
  o.top_p = 0.81, o.top_k = 4;  // three tokens
  EXPECT_EQ(draws(o, 2000).size(), 3u);
  // A low temperature sharpens towards the argmax.
  o.top_p = 1.0, o.top_k = 0, o.temperature = 0.05;
  EXPECT_GT(draws(o, 1000)[1], 990);
}

TEST(Sampler, Errors) {
  SamplerOptions o;
  o.temperature = -1;
  EXPECT_CONTAINS(error_of([&] { Sampler{o}; }), "temperature must be >= 0");
  o.temperature = 1, o.top_k = -2;
  EXPECT_CONTAINS(error_of([&] { Sampler{o}; }), "top_k must be >= 0, got -2");
  o.top_k = 0, o.top_p = 0;
  EXPECT_CONTAINS(error_of([&] { Sampler{o}; }), "top_p must be in (0, 1]");
  o.top_p = 1.5;
  EXPECT_CONTAINS(error_of([&] { Sampler{o}; }), "got 1.5");
  Sampler s({});
  EXPECT_CONTAINS(error_of([&] { s.sample(nullptr, 0); }), "vocabulary size must be positive");
}
