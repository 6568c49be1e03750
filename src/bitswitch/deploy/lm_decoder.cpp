// The integer language-model decoder (lm_decoder.h; SPEC.md Sec. 9; paper Sec. 4.3). Formulas:
// RMSNorm (Zhang & Sennrich 2019), rotary position embedding in the "rotate half" arrangement
// (Su et al. 2021), grouped-query causal attention (Ainslie et al. 2023), SwiGLU (Shazeer 2020).
//
// Float order of operations: that of the training model (models/llama.cpp) evaluated in float32,
// so that logits agree closely with its integer-exact evaluation:
//  - RMSNorm: weight * (x * r), r = 1 / sqrt(mean(x^2) + eps) (the mean summed in double, then
//    rounded to float; eps rounded to float).
//  - Rotary tables: e_i = float(2i) / float(head_dim), inv_freq_i = 1 / powf(float(theta), e_i),
//    angle = float(p) * inv_freq_i, cos/sin in float; x * cos + rotate_half(x) * sin.
//  - Attention: scores q.k (float, in the fixed eight-lane order of dot8) times float(1 / sqrt(hd)),
//    softmax exp(s - max) * (1 / sum), then the probability-weighted sum of values over positions.
//  - SwiGLU: silu(g) = g / (1 + exp(-g)), times up.
// Every linear layer of the blocks quantizes its input per token (lm_quantize_tokens) and runs
// the integer LmLinear. The per-token quantization and LmLinear are exact functions of one token,
// and attention computes each query on its own from the cache, so a prefill of n tokens and n
// single-token steps give bit-identical logits (tests/deploy/test_lm_decoder.cpp).
//
// KV cache: per layer, keys (after the rotary embedding) and values of every position, [position]
// [kv_heads * head_dim], in float32 or float16 (IEEE binary16 via the compiler's _Float16, rounded
// to nearest even; halves the cache's memory and traffic at the cost of rounding keys and values to 11 significant bits).
//
// Sampler generator: splitmix64 (Steele, Lea & Flood 2014) on the 64-bit state, which starts at
// the seed: state += 0x9E3779B97F4A7C15; z = state; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
// z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z ^= z >> 31. A uniform u in [0, 1) is
// (z >> 11) * 2^-53. Integer arithmetic only, so a seed gives the same draws on every platform.
#include "bitswitch/deploy/lm_decoder.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "bitswitch/util/error.h"

namespace bitswitch::deploy {

namespace {

// IEEE binary16 storage (the compiler's _Float16: conversions round to nearest even).
using half_t = _Float16;
half_t to_half(float f) { return half_t(f); }
float from_half(half_t h) { return float(h); }

// The float dot products of the decoder (attention scores, float head): eight interleaved partial
// sums (lane j sums the products i = j mod 8) added in lane order at the end. A fixed order, so
// the same on every thread count, and vectorizable.
inline __attribute__((always_inline)) float dot8(const float* x, const float* y, int64_t n) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) lane[j] += x[i + j] * y[i + j];
  for (; i < n; ++i) lane[i % 8] += x[i] * y[i];
  float s = 0.0f;
  for (int j = 0; j < 8; ++j) s += lane[j];
  return s;
}

// One query over n cached positions: keys and values of position j at keys + j * stride,
// values + j * stride. sc: n floats of scratch; out: hd floats. Compiled for AVX2 and for the
// base ISA (the same operations in the same order, so the same bits).
__attribute__((target_clones("avx2", "default"))) void attend(const float* q, const float* keys,
                                                             const float* values, int64_t stride, int64_t n,
                                                             int64_t hd, float scale, float* sc, float* out) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    sc[j] = dot8(q, keys + j * stride, hd) * scale;
    mx = std::max(mx, sc[j]);
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    sc[j] = std::exp(sc[j] - mx);
    sum += sc[j];
  }
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) sc[j] *= inv;
  std::fill(out, out + hd, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float pj = sc[j];
    const float* v = values + j * stride;
    for (int64_t i = 0; i < hd; ++i) out[i] += pj * v[i];
  }
}

// Float head rows [r0, r1): logits[t][r] for n tokens (same clones as attend).
__attribute__((target_clones("avx2", "default"))) void head_rows(int64_t r0, int64_t r1, int n, const float* in,
                                                                const float* m, int64_t d, int64_t V,
                                                                float* logits) {
  for (int64_t r = r0; r < r1; ++r)
    for (int t = 0; t < n; ++t) logits[t * V + r] = dot8(in + t * d, m + r * d, d);
}


void check_layer(const LmLinear& l, const char* name, int64_t layer, int64_t rows, int64_t cols) {
  BS_CHECK(l.rows() == rows && l.cols() == cols, "LmDecoder: block ", layer, " ", name, " is ", l.rows(), " x ",
           l.cols(), ", the shape needs ", rows, " x ", cols);
}

}  // namespace

struct LmDecoder::Impl {
  std::shared_ptr<const LmDecoderWeights> w;
  LmDecoderOptions opt;
  int threads = 1;
  int64_t max_positions = 0, pos = 0;
  int64_t hd = 0, kvd = 0;  // head width, kv_heads * head width
  std::vector<float> cos, sin;  // [max_positions][head_dim]
  std::vector<std::vector<float>> k32, v32;      // [layer][position * kvd]
  std::vector<std::vector<half_t>> k16, v16;   // FP16 cache
  // scratch
  std::vector<float> x, xn, qb, kb, vb, att, o, g, u, scores;
  std::vector<std::vector<float>> f16_scratch;  // per thread
  std::vector<int8_t> qcodes;
  std::vector<float> qscale;

  void rmsnorm(int n, const float* in, const std::vector<float>& weight, float* out) const {
    const int64_t d = w->shape.dim;
    const float eps = float(w->shape.norm_eps);
    for (int t = 0; t < n; ++t) {
      const float* xi = in + t * d;
      double s = 0;
      for (int64_t i = 0; i < d; ++i) s += double(xi[i] * xi[i]);
      const float ms = float(s / double(d));
      const float r = 1.0f / std::sqrt(ms + eps);
      for (int64_t i = 0; i < d; ++i) out[t * d + i] = weight[i] * (xi[i] * r);
    }
  }

  // y [n][l.rows()] = l(x [n][l.cols()]) with per-token 8-bit inputs.
  void linear(const LmLinear& l, int n, const float* in, float* y, bool quantize = true) {
    if (quantize) quantize_input(n, l.cols(), in);
    l.forward(n, qcodes.data(), qscale.data(), y, threads);
  }
  void quantize_input(int n, int K, const float* in) {
    qcodes.resize(size_t(n) * K);
    qscale.resize(size_t(n));
    lm_quantize_tokens(n, K, in, qcodes.data(), qscale.data());
  }

  void rope(float* vec, int64_t p) const {
    const int64_t half = hd / 2;
    const float* c = cos.data() + p * hd;
    const float* s = sin.data() + p * hd;
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = vec[i], x2 = vec[i + half];
      vec[i] = x1 * c[i] + (-x2) * s[i];
      vec[i + half] = x2 * c[i + half] + x1 * s[i + half];
    }
  }

  void store_kv(int64_t layer, int64_t p, const float* k, const float* v) {
    if (opt.kv_cache == KvCache::kFloat32) {
      std::copy(k, k + kvd, k32[layer].begin() + p * kvd);
      std::copy(v, v + kvd, v32[layer].begin() + p * kvd);
    } else {
      for (int64_t j = 0; j < kvd; ++j) k16[layer][p * kvd + j] = to_half(k[j]), v16[layer][p * kvd + j] = to_half(v[j]);
    }
  }

  // Attention of n queries at positions pos .. pos + n - 1 (keys already cached) -> att [n][dim].
  void attention(int64_t layer, int n) {
    const auto& s = w->shape;
    const int64_t heads = s.heads, group = s.heads / s.kv_heads, dim = s.dim;
    const float scale = float(1.0 / std::sqrt(double(hd)));
    const int64_t work = int64_t(n) * heads;
    const int nt = (pos + n) * work * hd > 32768 ? threads : 1;
    scores.resize(size_t(nt) * size_t(max_positions));
    f16_scratch.resize(size_t(nt));
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t wi = 0; wi < work; ++wi) {
      const int64_t t = wi / heads, h = wi % heads, kvh = h / group, p = pos + t;
      float* sc = scores.data() + size_t(omp_get_thread_num()) * size_t(max_positions);
      const float* qv = qb.data() + t * dim + h * hd;
      float* out = att.data() + t * dim + h * hd;
      if (opt.kv_cache == KvCache::kFloat32) {
        attend(qv, k32[layer].data() + kvh * hd, v32[layer].data() + kvh * hd, kvd, p + 1, hd, scale, sc, out);
      } else {  // widen this head's keys and values, then the same computation
        std::vector<float>& kv = f16_scratch[size_t(omp_get_thread_num())];
        kv.resize(size_t(2 * (p + 1) * hd));
        for (int64_t j = 0; j <= p; ++j)
          for (int64_t i = 0; i < hd; ++i) {
            kv[size_t(j * hd + i)] = from_half(k16[layer][j * kvd + kvh * hd + i]);
            kv[size_t((p + 1 + j) * hd + i)] = from_half(v16[layer][j * kvd + kvh * hd + i]);
          }
        attend(qv, kv.data(), kv.data() + (p + 1) * hd, hd, p + 1, hd, scale, sc, out);
      }
    }
  }

  // Float head: logits [n][vocab] = x [n][dim] . rows of `m` (vocab x dim).
  void float_head(int n, const float* in, const float* m, float* logits) const {
    const int64_t V = w->shape.vocab, d = w->shape.dim;
    const int nt = V * d * n > 65536 ? threads : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int i = 0; i < nt; ++i) head_rows(V * i / nt, V * (i + 1) / nt, n, in, m, d, V, logits);
  }
};

LmDecoder::LmDecoder(std::shared_ptr<const LmDecoderWeights> weights, LmDecoderOptions options)
    : impl_(std::make_unique<Impl>()) {
  auto& p = *impl_;
  BS_CHECK(weights != nullptr, "LmDecoder: no weights");
  p.w = std::move(weights);
  p.opt = options;
  const auto& s = p.w->shape;
  BS_CHECK(s.vocab > 1 && s.dim > 0 && s.layers > 0 && s.heads > 0 && s.kv_heads > 0 && s.mlp > 0 && s.context > 0,
           "LmDecoder: shape sizes must be positive (vocab ", s.vocab, ", dim ", s.dim, ", layers ", s.layers,
           ", heads ", s.heads, ", kv_heads ", s.kv_heads, ", mlp ", s.mlp, ", context ", s.context, ")");
  BS_CHECK(s.dim % s.heads == 0 && s.head_dim() % 2 == 0, "LmDecoder: dim ", s.dim, " / heads ", s.heads,
           " must be an even integer");
  BS_CHECK(s.heads % s.kv_heads == 0, "LmDecoder: heads ", s.heads, " must be a multiple of kv_heads ", s.kv_heads);
  BS_CHECK(s.norm_eps > 0 && s.rope_theta > 1, "LmDecoder: norm_eps must be > 0 and rope_theta > 1");
  BS_CHECK(options.threads >= 0, "LmDecoder: threads must be >= 0, got ", options.threads);
  BS_CHECK(options.max_positions >= 0, "LmDecoder: max_positions must be >= 0, got ", options.max_positions);
  const auto& w = *p.w;
  BS_CHECK(w.embedding.size() == size_t(s.vocab * s.dim), "LmDecoder: embedding holds ", w.embedding.size(),
           " floats, vocab x dim = ", s.vocab * s.dim);
  BS_CHECK(int64_t(w.blocks.size()) == s.layers, "LmDecoder: ", w.blocks.size(), " blocks, the shape has ", s.layers,
           " layers");
  BS_CHECK(w.final_norm.size() == size_t(s.dim), "LmDecoder: final norm has ", w.final_norm.size(), " weights, dim is ",
           s.dim);
  const int64_t hd = s.head_dim(), kvd = s.kv_heads * hd;
  for (int64_t l = 0; l < s.layers; ++l) {
    const auto& b = w.blocks[l];
    BS_CHECK(b.attn_norm.size() == size_t(s.dim) && b.mlp_norm.size() == size_t(s.dim), "LmDecoder: block ", l,
             " norms must have dim = ", s.dim, " weights");
    check_layer(b.q, "q", l, s.heads * hd, s.dim);
    check_layer(b.k, "k", l, kvd, s.dim);
    check_layer(b.v, "v", l, kvd, s.dim);
    check_layer(b.o, "o", l, s.dim, s.heads * hd);
    check_layer(b.gate, "gate", l, s.mlp, s.dim);
    check_layer(b.up, "up", l, s.mlp, s.dim);
    check_layer(b.down, "down", l, s.dim, s.mlp);
  }
  if (w.head_q) {
    BS_CHECK(w.head_q->rows() == s.vocab && w.head_q->cols() == s.dim, "LmDecoder: the integer head is ",
             w.head_q->rows(), " x ", w.head_q->cols(), ", vocab x dim = ", s.vocab, " x ", s.dim);
  } else if (!w.head.empty()) {
    BS_CHECK(w.head.size() == size_t(s.vocab * s.dim), "LmDecoder: head holds ", w.head.size(),
             " floats, vocab x dim = ", s.vocab * s.dim);
  }
  p.threads = options.threads == 0 ? omp_get_max_threads() : options.threads;
  p.max_positions = options.max_positions == 0 ? s.context : options.max_positions;
  p.hd = hd;
  p.kvd = kvd;
  // Rotary tables as models::rope_tables computes them in float32.
  p.cos.resize(size_t(p.max_positions * hd));
  p.sin.resize(size_t(p.max_positions * hd));
  const int64_t half = hd / 2;
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    const float e = float(2 * i) / float(hd);
    inv_freq[i] = 1.0f / std::pow(float(s.rope_theta), e);
  }
  for (int64_t pos = 0; pos < p.max_positions; ++pos)
    for (int64_t i = 0; i < half; ++i) {
      const float a = float(pos) * inv_freq[i];
      const float c = std::cos(a), sn = std::sin(a);
      p.cos[pos * hd + i] = p.cos[pos * hd + i + half] = c;
      p.sin[pos * hd + i] = p.sin[pos * hd + i + half] = sn;
    }
  const size_t cache = size_t(p.max_positions * kvd);
  if (options.kv_cache == KvCache::kFloat32) {
    p.k32.assign(s.layers, std::vector<float>(cache));
    p.v32.assign(s.layers, std::vector<float>(cache));
  } else {
    p.k16.assign(s.layers, std::vector<half_t>(cache));
    p.v16.assign(s.layers, std::vector<half_t>(cache));
  }
}

LmDecoder::~LmDecoder() = default;
LmDecoder::LmDecoder(LmDecoder&&) noexcept = default;
LmDecoder& LmDecoder::operator=(LmDecoder&&) noexcept = default;

void LmDecoder::reset() { impl_->pos = 0; }
int64_t LmDecoder::position() const { return impl_->pos; }
const LmShape& LmDecoder::shape() const { return impl_->w->shape; }

size_t LmDecoder::weight_bytes() const {
  const auto& w = *impl_->w;
  size_t b = (w.embedding.size() + w.final_norm.size() + w.head.size()) * sizeof(float);
  for (const auto& blk : w.blocks) {
    b += (blk.attn_norm.size() + blk.mlp_norm.size()) * sizeof(float);
    for (const LmLinear* l : {&blk.q, &blk.k, &blk.v, &blk.o, &blk.gate, &blk.up, &blk.down}) b += l->weight_bytes();
  }
  if (w.head_q) b += w.head_q->weight_bytes();
  return b;
}

void LmDecoder::forward(const int32_t* tokens, int n, float* logits, bool all_logits) {
  auto& p = *impl_;
  const auto& w = *p.w;
  const auto& s = w.shape;
  BS_CHECK(n >= 1, "LmDecoder::forward: need at least one token, got ", n);
  BS_CHECK(p.pos + n <= p.max_positions, "LmDecoder::forward: positions ", p.pos, "..", p.pos + n - 1,
           " exceed the cache of max_positions = ", p.max_positions, " (reset() starts over)");
  for (int t = 0; t < n; ++t)
    BS_CHECK(tokens[t] >= 0 && tokens[t] < s.vocab, "LmDecoder::forward: token id ", tokens[t], " at index ", t,
             " is outside the vocabulary [0, ", s.vocab, ")");
  const int64_t d = s.dim, hd = p.hd, kvd = p.kvd, qd = s.heads * hd;
  p.x.resize(size_t(n * d));
  p.xn.resize(size_t(n * d));
  p.qb.resize(size_t(n * qd));
  p.kb.resize(size_t(n * kvd));
  p.vb.resize(size_t(n * kvd));
  p.att.resize(size_t(n * qd));
  p.o.resize(size_t(n * d));
  p.g.resize(size_t(n * s.mlp));
  p.u.resize(size_t(n * s.mlp));
  for (int t = 0; t < n; ++t)
    std::copy(w.embedding.begin() + tokens[t] * d, w.embedding.begin() + (tokens[t] + 1) * d, p.x.begin() + t * d);
  for (int64_t l = 0; l < s.layers; ++l) {
    const auto& b = w.blocks[l];
    p.rmsnorm(n, p.x.data(), b.attn_norm, p.xn.data());
    p.linear(b.q, n, p.xn.data(), p.qb.data());
    p.linear(b.k, n, p.xn.data(), p.kb.data(), /*quantize=*/false);  // same input codes
    p.linear(b.v, n, p.xn.data(), p.vb.data(), false);
    for (int t = 0; t < n; ++t) {
      for (int64_t h = 0; h < s.heads; ++h) p.rope(p.qb.data() + t * qd + h * hd, p.pos + t);
      for (int64_t h = 0; h < s.kv_heads; ++h) p.rope(p.kb.data() + t * kvd + h * hd, p.pos + t);
      p.store_kv(l, p.pos + t, p.kb.data() + t * kvd, p.vb.data() + t * kvd);
    }
    p.attention(l, n);
    p.linear(b.o, n, p.att.data(), p.o.data());
    for (int64_t i = 0; i < n * d; ++i) p.x[i] = p.x[i] + p.o[i];
    p.rmsnorm(n, p.x.data(), b.mlp_norm, p.xn.data());
    p.linear(b.gate, n, p.xn.data(), p.g.data());
    p.linear(b.up, n, p.xn.data(), p.u.data(), false);
    for (int64_t i = 0; i < n * s.mlp; ++i) {
      const float gi = p.g[i];
      p.g[i] = gi / (1.0f + std::exp(-gi)) * p.u[i];
    }
    p.linear(b.down, n, p.g.data(), p.o.data());
    for (int64_t i = 0; i < n * d; ++i) p.x[i] = p.x[i] + p.o[i];
  }
  // Final norm and head: every token, or only the last.
  const int first = all_logits ? 0 : n - 1, m = n - first;
  p.rmsnorm(m, p.x.data() + first * d, w.final_norm, p.xn.data());
  if (w.head_q) p.linear(*w.head_q, m, p.xn.data(), logits);
  else p.float_head(m, p.xn.data(), w.head.empty() ? w.embedding.data() : w.head.data(), logits);
  p.pos += n;
}

// ---------------- random weights ----------------

namespace {
uint64_t splitmix64(uint64_t& state);

LmLinear random_linear(int64_t rows, int64_t cols, int bits, int group, uint64_t& rng, QgemmIsa isa) {
  const int lo = -(1 << (bits - 1));
  const uint64_t span = uint64_t(1) << bits;
  std::vector<int8_t> codes(size_t(rows * cols));
  for (auto& c : codes) c = int8_t(lo + int(splitmix64(rng) % span));
  const int64_t G = group == 0 ? cols : group;
  // Uniform codes of std ~ 2^(l-1) / sqrt(3): weights of std ~ 1 / sqrt(3 cols).
  std::vector<float> scales(size_t(rows * (cols / G)), float(1.0 / (double(1 << (bits - 1)) * std::sqrt(double(cols)))));
  return LmLinear::from_codes(int(rows), int(cols), bits, group, codes.data(), scales.data(), isa);
}
}  // namespace

std::shared_ptr<LmDecoderWeights> lm_random_weights(const LmShape& shape, int bits, int group, uint64_t seed,
                                                    LmRandomHead head, QgemmIsa isa) {
  auto w = std::make_shared<LmDecoderWeights>();
  w->shape = shape;
  const auto& s = shape;
  BS_CHECK(s.vocab > 0 && s.dim > 0 && s.heads > 0 && s.kv_heads > 0 && s.mlp > 0 && s.layers > 0 && s.dim % s.heads == 0,
           "lm_random_weights: bad shape");
  uint64_t rng = seed;
  w->embedding.resize(size_t(s.vocab * s.dim));
  for (auto& e : w->embedding) e = float(double(splitmix64(rng) >> 11) * 0x1.0p-52 - 1.0);
  const int64_t hd = s.head_dim();
  for (int64_t l = 0; l < s.layers; ++l) {
    LmBlockWeights b;
    b.attn_norm.assign(size_t(s.dim), 1.0f);
    b.mlp_norm.assign(size_t(s.dim), 1.0f);
    b.q = random_linear(s.heads * hd, s.dim, bits, group, rng, isa);
    b.k = random_linear(s.kv_heads * hd, s.dim, bits, group, rng, isa);
    b.v = random_linear(s.kv_heads * hd, s.dim, bits, group, rng, isa);
    b.o = random_linear(s.dim, s.heads * hd, bits, group, rng, isa);
    b.gate = random_linear(s.mlp, s.dim, bits, group, rng, isa);
    b.up = random_linear(s.mlp, s.dim, bits, group, rng, isa);
    b.down = random_linear(s.dim, s.mlp, bits, group, rng, isa);
    w->blocks.push_back(std::move(b));
  }
  w->final_norm.assign(size_t(s.dim), 1.0f);
  if (head == LmRandomHead::kInteger8) {
    w->head_q = random_linear(s.vocab, s.dim, 8, 0, rng, isa);
  } else if (head == LmRandomHead::kFloat32) {
    w->head.resize(size_t(s.vocab * s.dim));
    for (auto& e : w->head) e = float((double(splitmix64(rng) >> 11) * 0x1.0p-52 - 1.0) / std::sqrt(double(s.dim)));
  }
  return w;
}

// ---------------- sampler ----------------

namespace {
// The generator of the file comment.
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

Sampler::Sampler(SamplerOptions options) : opt_(options), state_(options.seed) {
  BS_CHECK(std::isfinite(opt_.temperature) && opt_.temperature >= 0, "Sampler: temperature must be >= 0, got ",
           opt_.temperature);
  BS_CHECK(opt_.top_k >= 0, "Sampler: top_k must be >= 0, got ", opt_.top_k);
  BS_CHECK(opt_.top_p > 0 && opt_.top_p <= 1, "Sampler: top_p must be in (0, 1], got ", opt_.top_p);
}

int32_t Sampler::sample(const float* logits, int64_t vocab) {
  BS_CHECK(vocab > 0, "Sampler::sample: vocabulary size must be positive, got ", vocab);
  if (opt_.temperature <= 0 || opt_.top_k == 1) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;  // strict: the lowest index wins ties
    return int32_t(best);
  }
  // Candidates by decreasing logit (ties: lower index first), cut to top_k.
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  auto before = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  const int64_t k = opt_.top_k == 0 ? vocab : std::min<int64_t>(opt_.top_k, vocab);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), before);
  idx.resize(size_t(k));
  std::vector<double> prob(static_cast<size_t>(k));
  const double mx = logits[idx[0]];
  double total = 0;
  for (int64_t i = 0; i < k; ++i) total += prob[i] = std::exp((double(logits[idx[i]]) - mx) / opt_.temperature);
  // Nucleus: the smallest prefix whose probability reaches top_p.
  int64_t keep = k;
  if (opt_.top_p < 1) {
    double c = 0;
    for (int64_t i = 0; i < k; ++i) {
      c += prob[i] / total;
      if (c >= opt_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0;
  for (int64_t i = 0; i < keep; ++i) kept += prob[i];
  const double u = double(splitmix64(state_) >> 11) * 0x1.0p-53 * kept;
  double c = 0;
  for (int64_t i = 0; i < keep; ++i) {
    c += prob[i];
    if (u < c) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace bitswitch::deploy
