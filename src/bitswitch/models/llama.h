// Llama-style decoder-only language model (SPEC.md Sec. 9; paper Sec. 4.3, TinyLlama): token
// embedding, pre-norm blocks of RMSNorm + causal self-attention with rotary position embedding
// (grouped-query attention when kv_heads < heads) and RMSNorm + SwiGLU MLP, a final RMSNorm and
// the output head (optionally tied to the embedding).
//
// Quantization: every linear layer of the blocks (q, k, v, o, gate, up, down) is an nn::QLinear
// with Double Rounding weights (per output channel, or per group of `group_size` input elements)
// and per-token signed 8-bit inputs at every width (W{b}A8). Embedding and head follow the spec's
// `first_last_bits`: full precision (default) or always 8-bit.
//
// Module names are those of the Hugging Face Llama layout (model.embed_tokens, model.layers.N.
// self_attn.q_proj, ..., model.norm, lm_head), so FP weights in that layout import by name.
// Sizes are data: the spec's `arch` object (LlamaArch), resolved from a named preset plus
// overrides by resolve_llama_arch.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bitswitch/models/model.h"
#include "bitswitch/nn/layers.h"

namespace bitswitch::models {

struct LlamaArch {
  int64_t vocab = 256;       // = ModelSpec::num_classes
  int64_t dim = 128;         // model width
  int64_t layers = 4;
  int64_t heads = 4;
  int64_t kv_heads = 4;      // < heads: grouped-query attention
  int64_t mlp = 384;         // SwiGLU hidden width
  int64_t context = 128;     // longest sequence (rotary tables are computed up to it)
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  bool tied = false;         // head weight = embedding weight
  int64_t group_size = 0;    // weight scales per group of G input elements; 0: per output channel

  int64_t head_dim() const { return dim / heads; }
  nlohmann::json to_json() const;  // every field except vocab
  // Reads a full arch object (as to_json writes it); errors name `source` and the field.
  static LlamaArch from_json(const nlohmann::json& j, int64_t vocab, const std::string& source);
  void validate(const std::string& source) const;
};

// Named size presets ("tiny", "small", "tinyllama-1.1b", ...).
std::vector<std::string> llama_presets();
// A full arch object from `j`: {"preset": name} (default "tiny") plus any LlamaArch fields, which
// override the preset. Unknown fields are errors naming `source` and the field.
nlohmann::json resolve_llama_arch(const nlohmann::json& j, const std::string& source);

// Rotary position embedding (Su et al. 2021, in the "rotate half" arrangement of the HF Llama):
// inv_freq_i = theta^(-2i / head_dim), i < head_dim / 2; angle(p, i) = p * inv_freq_i;
// cos/sin tables [positions, head_dim] hold the angles twice (columns i and i + head_dim / 2).
std::pair<torch::Tensor, torch::Tensor> rope_tables(int64_t positions, int64_t head_dim, double theta);
// x [..., T, head_dim]: x * cos + rotate_half(x) * sin, rotate_half([x1, x2]) = [-x2, x1].
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
// [T, T] additive mask: 0 where key position <= query position, -inf above the diagonal.
torch::Tensor causal_mask(int64_t t, const torch::TensorOptions& options = {});

// Token embedding as a quantized layer: full precision, or (fixed_bits 8) rows fake-quantized
// with one scale per token row, the weight quantizer of Sec. 2. Its input is not quantized.
class QEmbeddingImpl : public torch::nn::Module, public nn::QuantLayer {
 public:
  QEmbeddingImpl(int64_t vocab, int64_t dim, nn::QuantOptions opt);
  torch::Tensor forward(const torch::Tensor& ids);
  // The weight at the current width (the tied head's weight).
  torch::Tensor effective_weight();
  torch::Tensor& weight_param() override { return weight; }
  torch::Tensor weight;
};
TORCH_MODULE(QEmbedding);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  // weight * x / sqrt(mean(x^2) + eps), over the last dimension.
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  LlamaAttentionImpl(const LlamaArch& a, const nn::QuantOptions& q);
  // x [B, T, dim]; cos/sin [T, head_dim]; mask [T, T].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask);
  nn::QLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t heads, kv_heads, head_dim;
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
 public:
  LlamaMLPImpl(const LlamaArch& a, const nn::QuantOptions& q);
  // down(silu(gate(x)) * up(x))
  torch::Tensor forward(const torch::Tensor& x);
  nn::QLinear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

class LlamaBlockImpl : public torch::nn::Module {
 public:
  LlamaBlockImpl(const LlamaArch& a, const nn::QuantOptions& q);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
};
TORCH_MODULE(LlamaBlock);

// The decoder body ("model." in the HF layout).
class LlamaBodyImpl : public torch::nn::Module {
 public:
  LlamaBodyImpl(const LlamaArch& a, const nn::QuantOptions& q, const nn::QuantOptions& edge);
  QEmbedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaBody);

class LlamaImpl : public ModelImpl {
 public:
  explicit LlamaImpl(const ModelSpec& spec);
  // tokens [B, T] (int64, T <= context) -> logits [B, T, vocab].
  torch::Tensor forward(const torch::Tensor& tokens) override;
  // tokens -> embedding -> per block: rmsnorm, q/k/v linears (per-token inputs), attention, o,
  // add(o, x), rmsnorm, gate/up linears, silu_mul, down, add(down, h) -> rmsnorm -> head (tied: a head node on
  // the embedding; else the lm_head linear). Node layers are the module names.
  format::Graph graph() const override;
  const LlamaArch& arch() const { return arch_; }

  LlamaBody model{nullptr};
  nn::QLinear lm_head{nullptr};  // null when tied

 private:
  LlamaArch arch_;
  bool edge_quantized_ = false;
  torch::Tensor cos_, sin_;
};

Model make_llama(const ModelSpec& spec);

// Loads FP weights in the Hugging Face Llama safetensors layout (model.embed_tokens.weight,
// model.layers.N.self_attn.q_proj.weight, ..., model.norm.weight, lm_head.weight unless tied)
// into `model`, converting F32, F16 or BF16 to float. Every tensor of the file must be used
// (a tied checkpoint's lm_head.weight may be absent) and every FP tensor of the model filled;
// shapes must match. Errors name the file and the tensor. Quantizer state is left as it is.
void load_hf_llama(LlamaImpl& model, const std::string& path);
// Reads the HF config.json of a Llama checkpoint into an arch object and the vocabulary size.
std::pair<nlohmann::json, int64_t> read_hf_llama_config(const std::string& path);

}  // namespace bitswitch::models
