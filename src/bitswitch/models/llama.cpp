// Llama-style decoder (SPEC.md Sec. 9; paper Sec. 4.3). Formulas: RMSNorm (Zhang & Sennrich
// 2019), rotary position embedding (Su et al. 2021), SwiGLU (Shazeer 2020), grouped-query
// attention (Ainslie et al. 2023), in the arrangement of the Llama papers (Touvron et al. 2023).
#include "bitswitch/models/llama.h"

#include <torch/nn/functional/activation.h>
#include <torch/nn/init.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>

#include "bitswitch/format/safetensors.h"
#include "bitswitch/models/graph_nodes.h"
#include "bitswitch/models/registry_impl.h"
#include "bitswitch/util/error.h"

namespace bitswitch::models {

using json = nlohmann::json;

// ---------------- arch and presets ----------------

namespace {
const std::map<std::string, json>& presets() {
  // Widths are multiples of 64 so that group-wise scales of 64 fit every linear layer.
  static const std::map<std::string, json> p = {
      // trains in minutes on two CPU cores (the main LM job)
      {"tiny", {{"dim", 128}, {"layers", 4}, {"heads", 4}, {"kv_heads", 2}, {"mlp", 384}, {"context", 128}}},
      {"small", {{"dim", 256}, {"layers", 6}, {"heads", 8}, {"kv_heads", 4}, {"mlp", 704}, {"context", 256}}},
      {"base", {{"dim", 512}, {"layers", 8}, {"heads", 8}, {"kv_heads", 4}, {"mlp", 1408}, {"context", 512}}},
      // TinyLlama-1.1B's shape (its HF checkpoint imports with load_hf_llama; vocab 32000)
      {"tinyllama-1.1b",
       {{"dim", 2048}, {"layers", 22}, {"heads", 32}, {"kv_heads", 4}, {"mlp", 5632}, {"context", 2048}}},
  };
  return p;
}

const std::set<std::string>& arch_fields() {
  static const std::set<std::string> f = {"dim",       "layers", "heads", "kv_heads", "mlp",       "context",
                                          "rope_theta", "norm_eps", "tied", "group_size"};
  return f;
}
}  // namespace

std::vector<std::string> llama_presets() {
  std::vector<std::string> out;
  for (const auto& [k, v] : presets()) out.push_back(k);
  return out;
}

json LlamaArch::to_json() const {
  return json{{"dim", dim},          {"layers", layers},         {"heads", heads},       {"kv_heads", kv_heads},
              {"mlp", mlp},          {"context", context},       {"rope_theta", rope_theta}, {"norm_eps", norm_eps},
              {"tied", tied},        {"group_size", group_size}};
}

LlamaArch LlamaArch::from_json(const json& j, int64_t vocab, const std::string& source) {
  LlamaArch a;
  a.vocab = vocab;
  BS_CHECK(j.is_object(), source, ": `arch` must be an object, got ", j.dump());
  for (const auto& [k, v] : j.items()) BS_CHECK(arch_fields().count(k), source, ": unknown arch field '", k, "'");
  auto get_int = [&](const char* name, int64_t& out) {
    if (!j.contains(name)) return;
    BS_CHECK(j[name].is_number_integer(), source, ": arch field `", name, "` must be an integer, got ", j[name].dump());
    out = j[name].get<int64_t>();
  };
  auto get_num = [&](const char* name, double& out) {
    if (!j.contains(name)) return;
    BS_CHECK(j[name].is_number(), source, ": arch field `", name, "` must be a number, got ", j[name].dump());
    out = j[name].get<double>();
  };
  get_int("dim", a.dim);
  get_int("layers", a.layers);
  get_int("heads", a.heads);
  get_int("kv_heads", a.kv_heads);
  get_int("mlp", a.mlp);
  get_int("context", a.context);
  get_int("group_size", a.group_size);
  get_num("rope_theta", a.rope_theta);
  get_num("norm_eps", a.norm_eps);
  if (j.contains("tied")) {
    BS_CHECK(j["tied"].is_boolean(), source, ": arch field `tied` must be true or false, got ", j["tied"].dump());
    a.tied = j["tied"].get<bool>();
  }
  a.validate(source);
  return a;
}

void LlamaArch::validate(const std::string& source) const {
  BS_CHECK(vocab > 1, source, ": vocabulary size must be > 1, got ", vocab);
  BS_CHECK(dim > 0 && layers > 0 && heads > 0 && kv_heads > 0 && mlp > 0 && context > 0, source,
           ": arch sizes must be positive: ", to_json().dump());
  BS_CHECK(dim % heads == 0, source, ": `dim` ", dim, " must be a multiple of `heads` ", heads);
  BS_CHECK(head_dim() % 2 == 0, source, ": the head width dim / heads = ", head_dim(), " must be even (rotary pairs)");
  BS_CHECK(heads % kv_heads == 0, source, ": `heads` ", heads, " must be a multiple of `kv_heads` ", kv_heads);
  BS_CHECK(rope_theta > 1 && norm_eps > 0, source, ": `rope_theta` must be > 1 and `norm_eps` > 0");
  if (group_size != 0) {
    BS_CHECK(group_size > 0 && dim % group_size == 0 && mlp % group_size == 0, source, ": `group_size` ", group_size,
             " must divide `dim` ", dim, " and `mlp` ", mlp, " (0: per-channel scales)");
  }
}

json resolve_llama_arch(const json& j, const std::string& source) {
  BS_CHECK(j.is_null() || j.is_object(), source, ": `arch` must be an object, got ", j.dump());
  std::string name = "tiny";
  if (j.is_object() && j.contains("preset")) {
    BS_CHECK(j["preset"].is_string(), source, ": `arch.preset` must be a string");
    name = j["preset"].get<std::string>();
  }
  auto it = presets().find(name);
  if (it == presets().end()) {
    std::string known;
    for (const auto& n : llama_presets()) known += (known.empty() ? "" : ", ") + n;
    fail(source, ": unknown arch preset '", name, "' (known: ", known, ")");
  }
  json out = LlamaArch::from_json(it->second, 2, source).to_json();
  if (j.is_object())
    for (const auto& [k, v] : j.items())
      if (k != "preset") {
        BS_CHECK(arch_fields().count(k), source, ": unknown arch field '", k, "'");
        out[k] = v;
      }
  return out;
}

// ---------------- rotary embedding, mask ----------------

std::pair<torch::Tensor, torch::Tensor> rope_tables(int64_t positions, int64_t head_dim, double theta) {
  BS_CHECK(head_dim % 2 == 0, "rotary embedding needs an even head width, got ", head_dim);
  auto i = torch::arange(0, head_dim, 2, torch::kFloat32) / double(head_dim);
  auto inv_freq = torch::pow(torch::scalar_tensor(theta, torch::kFloat32), i).reciprocal();
  auto pos = torch::arange(positions, torch::kFloat32);
  auto angles = torch::outer(pos, inv_freq);
  auto emb = torch::cat({angles, angles}, -1);
  return {emb.cos(), emb.sin()};
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  auto rotated = torch::cat({-x2, x1}, -1);
  return x * cos + rotated * sin;
}

torch::Tensor causal_mask(int64_t t, const torch::TensorOptions& options) {
  return torch::full({t, t}, -std::numeric_limits<float>::infinity(), options.dtype(torch::kFloat32)).triu(1);
}

// ---------------- layers ----------------

QEmbeddingImpl::QEmbeddingImpl(int64_t vocab, int64_t dim, nn::QuantOptions opt) {
  weight = register_parameter("weight", torch::empty({vocab, dim}));
  torch::nn::init::normal_(weight, 0.0, 0.02);
  register_quant_state(*this, vocab, opt.quantize_input(false));
}

torch::Tensor QEmbeddingImpl::effective_weight() { return quant_weight(weight); }

torch::Tensor QEmbeddingImpl::forward(const torch::Tensor& ids) {
  return torch::embedding(effective_weight(), ids);
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  return weight * (x * torch::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps));
}

namespace {
nn::QLinear make_linear(torch::nn::Module& self, const char* name, int64_t in, int64_t out, const nn::QuantOptions& q) {
  auto l = self.register_module(name, nn::QLinear(nn::QLinearOptions(in, out).bias(false).quant(q)));
  torch::NoGradGuard ng;
  torch::nn::init::normal_(l->weight, 0.0, 0.02);
  return l;
}
}  // namespace

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaArch& a, const nn::QuantOptions& q)
    : heads(a.heads), kv_heads(a.kv_heads), head_dim(a.head_dim()) {
  q_proj = make_linear(*this, "q_proj", a.dim, heads * head_dim, q);
  k_proj = make_linear(*this, "k_proj", a.dim, kv_heads * head_dim, q);
  v_proj = make_linear(*this, "v_proj", a.dim, kv_heads * head_dim, q);
  o_proj = make_linear(*this, "o_proj", heads * head_dim, a.dim, q);
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                          const torch::Tensor& mask) {
  const int64_t b = x.size(0), t = x.size(1);
  auto q = q_proj(x).view({b, t, heads, head_dim}).transpose(1, 2);
  auto k = k_proj(x).view({b, t, kv_heads, head_dim}).transpose(1, 2);
  auto v = v_proj(x).view({b, t, kv_heads, head_dim}).transpose(1, 2);
  q = apply_rope(q, cos, sin);
  k = apply_rope(k, cos, sin);
  if (kv_heads != heads) {
    // Grouped-query attention: query head h reads key/value head h / (heads / kv_heads).
    k = k.repeat_interleave(heads / kv_heads, 1);
    v = v.repeat_interleave(heads / kv_heads, 1);
  }
  auto scores = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(head_dim))) + mask;
  auto out = torch::matmul(torch::softmax(scores, -1), v);
  return o_proj(out.transpose(1, 2).reshape({b, t, heads * head_dim}));
}

LlamaMLPImpl::LlamaMLPImpl(const LlamaArch& a, const nn::QuantOptions& q) {
  gate_proj = make_linear(*this, "gate_proj", a.dim, a.mlp, q);
  up_proj = make_linear(*this, "up_proj", a.dim, a.mlp, q);
  down_proj = make_linear(*this, "down_proj", a.mlp, a.dim, q);
}

torch::Tensor LlamaMLPImpl::forward(const torch::Tensor& x) {
  return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
}

LlamaBlockImpl::LlamaBlockImpl(const LlamaArch& a, const nn::QuantOptions& q) {
  input_layernorm = register_module("input_layernorm", RMSNorm(a.dim, a.norm_eps));
  self_attn = register_module("self_attn", LlamaAttention(a, q));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(a.dim, a.norm_eps));
  mlp = register_module("mlp", LlamaMLP(a, q));
}

torch::Tensor LlamaBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                      const torch::Tensor& mask) {
  auto h = x + self_attn(input_layernorm(x), cos, sin, mask);
  return h + mlp(post_attention_layernorm(h));
}

LlamaBodyImpl::LlamaBodyImpl(const LlamaArch& a, const nn::QuantOptions& q, const nn::QuantOptions& edge) {
  embed_tokens = register_module("embed_tokens", QEmbedding(a.vocab, a.dim, edge));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t l = 0; l < a.layers; ++l) layers->push_back(LlamaBlock(a, q));
  norm = register_module("norm", RMSNorm(a.dim, a.norm_eps));
}

LlamaImpl::LlamaImpl(const ModelSpec& spec)
    : arch_(LlamaArch::from_json(spec.arch.empty() ? resolve_llama_arch(json::object(), "llama")
                                                  : spec.arch,
                                 spec.num_classes, "model spec arch")) {
  auto q = quant_options(spec);
  q.per_token_input(true).group_size(arch_.group_size);
  auto edge = edge_options(spec, true);
  edge.per_token_input(true);
  edge_quantized_ = spec.first_last_bits != nn::kFloatBits;
  model = register_module("model", LlamaBody(arch_, q, edge));
  if (!arch_.tied) lm_head = make_linear(*this, "lm_head", arch_.dim, arch_.vocab, edge);
  // Computed, not stored: the tables are a function of the arch.
  std::tie(cos_, sin_) = rope_tables(arch_.context, arch_.head_dim(), arch_.rope_theta);
}

torch::Tensor LlamaImpl::forward(const torch::Tensor& tokens) {
  BS_CHECK(tokens.dim() == 2, "llama: tokens must be [batch, time], got ", tokens.sizes());
  const int64_t t = tokens.size(1);
  BS_CHECK(t >= 1 && t <= arch_.context, "llama: sequence length ", t, " exceeds the context ", arch_.context);
  auto x = model->embed_tokens(tokens);
  auto cos = cos_.narrow(0, 0, t).to(x.device()), sin = sin_.narrow(0, 0, t).to(x.device());
  auto mask = causal_mask(t, x.options());
  for (auto& m : *model->layers) x = m->as<LlamaBlock>()->forward(x, cos, sin, mask);
  x = model->norm(x);
  if (lm_head) return lm_head(x);
  // Tied head: the embedding's weight at its width; an 8-bit head quantizes its input per token.
  auto& emb = *model->embed_tokens;
  const bool quantized = edge_quantized_ && emb.bits().weight != nn::kFloatBits;
  if (quantized && emb.integer_eval() && !is_training()) {
    // Integer-exact evaluation (nn::set_integer_eval): the decoder's 8-bit head over the codes.
    torch::NoGradGuard ng;
    auto [codes, scales] = emb.integer_weight(emb.bits().weight);
    return nn::lm_integer_linear(x, codes, scales, 0);
  }
  return torch::linear(quantized ? quant::fake_quant_per_token(x, 8) : x, emb.effective_weight());
}

format::Graph LlamaImpl::graph() const {
  format::GraphBuilder g;
  const auto& a = arch_;
  auto x = g.embedding("model.embed_tokens", g.tokens(a.vocab), a.vocab, a.dim);
  int64_t l = 0;
  for (const auto& m : *model->layers) {
    const auto* b = m->as<LlamaBlockImpl>();
    const std::string p = "model.layers." + std::to_string(l++) + ".";
    const auto& at = *b->self_attn;
    auto h = g.rmsnorm(p + "input_layernorm", x, a.dim, a.norm_eps);
    auto q = linear_node(g, p + "self_attn.q_proj", *at.q_proj, h);
    auto k = linear_node(g, p + "self_attn.k_proj", *at.k_proj, h);
    auto v = linear_node(g, p + "self_attn.v_proj", *at.v_proj, h);
    auto att = g.attention(p + "self_attn", q, k, v, at.heads, at.kv_heads, at.head_dim, a.rope_theta);
    // Residual adds read (branch, stream), so they are named after the branch's layer.
    x = g.add(linear_node(g, p + "self_attn.o_proj", *at.o_proj, att), x);
    h = g.rmsnorm(p + "post_attention_layernorm", x, a.dim, a.norm_eps);
    const auto& mlp = *b->mlp;
    auto gate = linear_node(g, p + "mlp.gate_proj", *mlp.gate_proj, h);
    auto up = linear_node(g, p + "mlp.up_proj", *mlp.up_proj, h);
    x = g.add(linear_node(g, p + "mlp.down_proj", *mlp.down_proj, g.silu_mul(gate, up)), x);
  }
  x = g.rmsnorm("model.norm", x, a.dim, a.norm_eps);
  if (lm_head) return g.finish(linear_node(g, "lm_head", *lm_head, x));
  const auto q = edge_quantized_ ? format::InputQuant::kPerToken : format::InputQuant::kNone;
  return g.finish(g.head("model.embed_tokens", x, a.dim, a.vocab, q));
}

Model make_llama(const ModelSpec& spec) { return std::make_shared<LlamaImpl>(spec); }

// ---------------- Hugging Face import ----------------

namespace {
torch::Tensor to_float(const format::TensorView& v, const std::string& file, const std::string& name) {
  torch::ScalarType t;
  if (v.dtype == "F32") t = torch::kFloat32;
  else if (v.dtype == "F16") t = torch::kFloat16;
  else if (v.dtype == "BF16") t = torch::kBFloat16;
  else fail(file, ": tensor '", name, "' has dtype ", v.dtype, " (expected F32, F16 or BF16)");
  auto raw = torch::empty(v.shape, torch::TensorOptions().dtype(t));
  std::memcpy(raw.data_ptr(), v.data, v.nbytes);
  return raw.to(torch::kFloat32);
}
}  // namespace

void load_hf_llama(LlamaImpl& model, const std::string& path) {
  const auto file = format::read_safetensors(path);
  std::set<std::string> used;
  torch::NoGradGuard ng;
  for (const auto& p : model.named_parameters()) {
    const auto& name = p.key();
    // The FP tensors: every ".weight" (quantizer scales are named weight_scale / act_scale_<b>).
    if (name.size() < 7 || name.compare(name.size() - 7, 7, ".weight") != 0) continue;
    BS_CHECK(file.contains(name), path, ": tensor '", name, "' is missing from the file");
    const auto& v = file.get(name);
    const std::vector<int64_t> shape(p.value().sizes().begin(), p.value().sizes().end());
    BS_CHECK(v.shape == shape, path, ": tensor '", name, "' has shape ", torch::IntArrayRef(v.shape),
             ", the model expects ", p.value().sizes());
    p.value().copy_(to_float(v, path, name));
    used.insert(name);
  }
  for (const auto& name : file.names()) {
    if (used.count(name)) continue;
    if (model.arch().tied && name == "lm_head.weight") continue;  // a tied checkpoint may store the copy
    // HF stores its rotary inverse frequencies in older checkpoints; ours are computed.
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    fail(path, ": tensor '", name, "' has no counterpart in this model (wrong architecture?)");
  }
}

std::pair<json, int64_t> read_hf_llama_config(const std::string& path) {
  std::ifstream in(path);
  BS_CHECK(in, "cannot read '", path, "'");
  json c;
  try {
    c = json::parse(in);
  } catch (const json::exception& e) {
    fail(path, ": not JSON (", e.what(), ")");
  }
  auto need = [&](const char* k) -> const json& {
    BS_CHECK(c.contains(k), path, ": missing field `", k, "`");
    return c[k];
  };
  json a{{"dim", need("hidden_size")},
         {"layers", need("num_hidden_layers")},
         {"heads", need("num_attention_heads")},
         {"kv_heads", c.value("num_key_value_heads", need("num_attention_heads").get<int64_t>())},
         {"mlp", need("intermediate_size")},
         {"context", need("max_position_embeddings")},
         {"rope_theta", c.value("rope_theta", 10000.0)},
         {"norm_eps", c.value("rms_norm_eps", 1e-6)},
         {"tied", c.value("tie_word_embeddings", false)},
         {"group_size", 0}};
  const int64_t vocab = need("vocab_size").get<int64_t>();
  LlamaArch::from_json(a, vocab, path);  // validates
  return {a, vocab};
}

}  // namespace bitswitch::models
