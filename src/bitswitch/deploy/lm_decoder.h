// The integer language-model decoder (SPEC.md Sec. 9; paper Sec. 4.3): a Llama-style decoder-only
// transformer (models/llama.h is its training form) run from the l-bit weights of a deployment
// artifact, without LibTorch. Linear layers of the blocks are W{l}A8 integer layers
// (lm_kernels.h); RMSNorm, rotary embedding, attention, SiLU and the residual adds run in float32.
//
// Prefill pushes a prompt's tokens through every layer as one batch (GEMMs over the tokens);
// decoding then appends one token at a time (matrix-vector products), keys and values of earlier
// positions coming from the KV cache.
//
// LmDecoderWeights is the decoder's whole input; the artifact loader (lm_artifact.h) fills it
// from an artifact and benchmarks may fill it with random weights of any size.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bitswitch/deploy/lm_kernels.h"

namespace bitswitch::deploy {

struct LmShape {
  int64_t vocab = 0, dim = 0, layers = 0, heads = 0, kv_heads = 0, mlp = 0, context = 0;
  double rope_theta = 10000.0, norm_eps = 1e-5;
  int64_t head_dim() const { return dim / heads; }
};

struct LmBlockWeights {
  std::vector<float> attn_norm, mlp_norm;  // [dim] RMSNorm weights (input / post-attention)
  LmLinear q, k, v, o, gate, up, down;     // integer layers, [out, in] as in the HF layout
};

struct LmDecoderWeights {
  LmShape shape;
  std::vector<float> embedding;  // [vocab, dim] float32 (an 8-bit embedding stored dequantized)
  std::vector<LmBlockWeights> blocks;
  std::vector<float> final_norm;  // [dim]
  // Output head: an integer layer (8-bit head), else a float32 [vocab, dim] matrix, else (both
  // empty) tied to `embedding`.
  std::optional<LmLinear> head_q;
  std::vector<float> head;
};

// Random weights of a given shape, for tests and benchmarks (speed does not depend on the values):
// block layers with `bits`-bit codes drawn uniformly (splitmix64 from `seed`) and group-wise
// scales (group 0: per channel) that keep activations of order one; norms 1; embedding uniform
// in [-1, 1]; the head an 8-bit integer layer, a float32 matrix or tied to the embedding.
enum class LmRandomHead { kInteger8, kFloat32, kTied };
std::shared_ptr<LmDecoderWeights> lm_random_weights(const LmShape& shape, int bits, int group, uint64_t seed,
                                                    LmRandomHead head = LmRandomHead::kInteger8,
                                                    QgemmIsa isa = QgemmIsa::kAuto);

enum class KvCache { kFloat32, kFloat16 };

struct LmDecoderOptions {
  int threads = 0;  // 0: all hardware threads
  KvCache kv_cache = KvCache::kFloat32;
  int64_t max_positions = 0;  // KV cache length; 0: shape.context
};

class LmDecoder {
 public:
  LmDecoder(std::shared_ptr<const LmDecoderWeights> weights, LmDecoderOptions options = {});
  ~LmDecoder();
  LmDecoder(LmDecoder&&) noexcept;
  LmDecoder& operator=(LmDecoder&&) noexcept;

  // Forgets the cached positions.
  void reset();
  // Appends `n` tokens at positions position() .. position() + n - 1 (n > 1: a prefill batch) and
  // writes the logits of the last one ([vocab]) or, with all_logits, of every one ([n, vocab]).
  void forward(const int32_t* tokens, int n, float* logits, bool all_logits = false);
  int64_t position() const;
  const LmShape& shape() const;
  size_t weight_bytes() const;  // resident weight bytes

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Sampling from a logits row. temperature <= 0 or top_k == 1: greedy (argmax, the lowest index
// on ties). Otherwise softmax(logits / temperature), restricted to the top_k largest (0: all),
// then to the smallest set whose probability reaches top_p (1: all), drawn with `rng`.
struct SamplerOptions {
  double temperature = 0.0;
  int top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplerOptions options);
  int32_t sample(const float* logits, int64_t vocab);

 private:
  SamplerOptions opt_;
  uint64_t state_;  // a documented, platform-independent generator (see lm_decoder.cpp)
};

}  // namespace bitswitch::deploy
