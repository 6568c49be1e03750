// Language-model artifact -> integer decoder weights (SPEC.md Sec. 7, 9); see lm_artifact.h.
#include "bitswitch/deploy/lm_artifact.h"

#include <set>

#include "bitswitch/util/error.h"

namespace bitswitch::deploy {

using format::GraphNode;
using format::InputQuant;
using format::OpKind;

namespace {

// Walks the graph backwards from the output, checking each node's op and inputs.
class Matcher {
 public:
  explicit Matcher(const Artifact& a) : g_(a.graph) {}

  const GraphNode& node(const std::string& name, OpKind op, const std::string& role) {
    const int i = g_.index(name);
    BS_CHECK(i >= 0, "graph: node '", name, "' does not exist");
    const GraphNode& n = g_.nodes[size_t(i)];
    BS_CHECK(n.op == op, "graph: node '", n.name, "' is a ", format::op_name(n.op), " where the decoder expects ",
             role, " (a ", format::op_name(op), " node)");
    seen_.insert(n.name);
    return n;
  }

  // A block linear: quantized with per-token inputs, reading `input` when given.
  const GraphNode& block_linear(const std::string& name, const std::string& role, const std::string& input = "") {
    const GraphNode& n = node(name, OpKind::kLinear, role);
    BS_CHECK(n.quant == InputQuant::kPerToken, "graph: node '", n.name, "' (", role,
             "): the decoder's block linears quantize their inputs per token, this one is '",
             format::input_quant_name(n.quant), "'");
    BS_CHECK(input.empty() || n.inputs[0] == input, "graph: node '", n.name, "' (", role, ") reads '", n.inputs[0],
             "', the decoder expects '", input, "'");
    return n;
  }

  void check_all_seen() const {
    for (const auto& n : g_.nodes)
      BS_CHECK(seen_.count(n.name), "graph: node '", n.name, "' (", format::op_name(n.op),
               ") is not part of the structure the decoder runs");
  }

 private:
  const format::Graph& g_;
  std::set<std::string> seen_;
};

}  // namespace

LmGraphLayers check_lm_graph(const Artifact& a) {
  BS_CHECK(a.is_lm(), "not a language-model artifact (no metadata 'lm')");
  Matcher m(a);
  LmGraphLayers out;
  const GraphNode& last = m.node(a.graph.output, a.lm.tied ? OpKind::kHead : OpKind::kLinear,
                                 a.lm.tied ? "the tied output head" : "the output head (lm_head)");
  if (last.op == OpKind::kLinear) {
    out.head = last.layer;
    BS_CHECK(last.quant == InputQuant::kNone || last.quant == InputQuant::kPerToken, "graph: node '", last.name,
             "': the head's input is quantized per token or not at all");
  }
  out.head_quantized = last.quant == InputQuant::kPerToken;
  const GraphNode& fnorm = m.node(last.inputs[0], OpKind::kRmsNorm, "the final RMSNorm");
  out.final_norm = fnorm.layer;
  std::string x = fnorm.inputs[0];
  std::vector<LmGraphLayers::Block> rev;
  for (;;) {
    const int i = a.graph.index(x);
    BS_CHECK(i >= 0, "graph: node '", x, "' does not exist");
    if (a.graph.nodes[size_t(i)].op != OpKind::kAdd) break;
    LmGraphLayers::Block b;
    // MLP half: x = add(down(silu_mul(gate(n2), up(n2))), h), n2 = rmsnorm(h).
    const GraphNode& add2 = m.node(x, OpKind::kAdd, "a residual add");
    const GraphNode& down = m.block_linear(add2.inputs[0], "the MLP's down projection");
    const GraphNode& sm = m.node(down.inputs[0], OpKind::kSiluMul, "the SwiGLU product");
    const GraphNode& gate = m.block_linear(sm.inputs[0], "the MLP's gate projection");
    const GraphNode& n2 = m.node(gate.inputs[0], OpKind::kRmsNorm, "the post-attention RMSNorm");
    const GraphNode& up = m.block_linear(sm.inputs[1], "the MLP's up projection", n2.name);
    BS_CHECK(n2.inputs[0] == add2.inputs[1], "graph: node '", n2.name, "' normalises '", n2.inputs[0],
             "', the decoder expects the residual stream '", add2.inputs[1], "'");
    // Attention half: h = add(o(attention(q(n1), k(n1), v(n1))), x0), n1 = rmsnorm(x0).
    const GraphNode& add1 = m.node(add2.inputs[1], OpKind::kAdd, "a residual add");
    const GraphNode& o = m.block_linear(add1.inputs[0], "the attention's output projection");
    const GraphNode& att = m.node(o.inputs[0], OpKind::kAttention, "the attention");
    const GraphNode& q = m.block_linear(att.inputs[0], "the query projection");
    const GraphNode& n1 = m.node(q.inputs[0], OpKind::kRmsNorm, "the input RMSNorm");
    const GraphNode& k = m.block_linear(att.inputs[1], "the key projection", n1.name);
    const GraphNode& v = m.block_linear(att.inputs[2], "the value projection", n1.name);
    BS_CHECK(n1.inputs[0] == add1.inputs[1], "graph: node '", n1.name, "' normalises '", n1.inputs[0],
             "', the decoder expects the residual stream '", add1.inputs[1], "'");
    b.attn_norm = n1.layer, b.q = q.layer, b.k = k.layer, b.v = v.layer, b.o = o.layer;
    b.mlp_norm = n2.layer, b.gate = gate.layer, b.up = up.layer, b.down = down.layer;
    rev.push_back(b);
    x = add1.inputs[1];
  }
  const GraphNode& emb = m.node(x, OpKind::kEmbedding, "the token embedding");
  m.node(emb.inputs[0], OpKind::kTokens, "the token input");
  out.embedding = emb.layer;
  BS_CHECK(last.op != OpKind::kHead || last.layer == emb.layer, "graph: node '", last.name, "' is tied to '",
           last.layer, "', the model's embedding is '", emb.layer, "'");
  out.blocks.assign(rev.rbegin(), rev.rend());
  BS_CHECK(int64_t(out.blocks.size()) == a.lm.layers, "graph: ", out.blocks.size(), " blocks, metadata 'lm' says ",
           a.lm.layers);
  m.check_all_seen();
  return out;
}

LmShape lm_shape(const Artifact& a) {
  BS_CHECK(a.is_lm(), "not a language-model artifact (no metadata 'lm')");
  LmShape s;
  s.vocab = a.lm.vocab, s.dim = a.lm.dim, s.layers = a.lm.layers, s.heads = a.lm.heads, s.kv_heads = a.lm.kv_heads;
  s.mlp = a.lm.mlp, s.context = a.lm.context, s.rope_theta = a.lm.rope_theta, s.norm_eps = a.lm.norm_eps;
  return s;
}

namespace {

LmLinear integer_layer(const LayerRecord& l, int64_t rows, int64_t cols, QgemmIsa isa) {
  BS_CHECK(l.kind == LayerKind::kLinear || l.kind == LayerKind::kEmbedding, "layer '", l.name, "' is not linear");
  BS_CHECK(l.quantized, "layer '", l.name, "' is full precision; the decoder's block linears are integer layers");
  BS_CHECK(l.out == rows && l.in == cols, "layer '", l.name, "' is ", l.out, " x ", l.in, ", the model needs ", rows,
           " x ", cols);
  BS_CHECK(l.row_elems() <= kLmMaxK, "layer '", l.name, "': rows of ", l.row_elems(), " exceed ", kLmMaxK);
  return LmLinear::from_codes(int(l.out), int(l.in), l.bits, int(l.group), l.codes.data(), l.scale.data(), isa);
}

std::vector<float> norm_weight(const Artifact& a, const std::string& name, int64_t dim) {
  const auto& n = a.norm(name);
  BS_CHECK(n.dim == dim, "RMSNorm '", name, "' has ", n.dim, " weights, the model's width is ", dim);
  BS_CHECK(n.eps == a.lm.norm_eps, "RMSNorm '", name, "' has eps ", n.eps, ", the decoder uses the model's ",
           a.lm.norm_eps);
  return n.weight;
}

}  // namespace

std::shared_ptr<LmDecoderWeights> lm_decoder_weights(const Artifact& art, QgemmIsa isa) {
  if (art.master) return lm_decoder_weights(switch_uniform(art, art.high_bits), isa);
  const Artifact& a = art;
  const auto layers = check_lm_graph(a);
  auto w = std::make_shared<LmDecoderWeights>();
  w->shape = lm_shape(a);
  const auto& s = w->shape;
  const int64_t hd = s.head_dim();
  // Embedding: float32, an 8-bit one dequantized row by row.
  const LayerRecord& e = a.layer(layers.embedding);
  BS_CHECK(e.out == s.vocab && e.in == s.dim, "embedding '", e.name, "' is ", e.out, " x ", e.in, ", the model needs ",
           s.vocab, " x ", s.dim);
  if (e.quantized) {
    BS_CHECK(e.bits == 8 && e.group == 0, "embedding '", e.name, "': an 8-bit embedding has one scale per row");
    w->embedding.resize(e.codes.size());
    for (int64_t r = 0; r < e.out; ++r)
      for (int64_t c = 0; c < e.in; ++c)
        w->embedding[size_t(r * e.in + c)] = float(e.codes[size_t(r * e.in + c)]) * e.scale[size_t(r)];
  } else {
    w->embedding = e.weight;
  }
  for (const auto& b : layers.blocks) {
    LmBlockWeights bw;
    bw.attn_norm = norm_weight(a, b.attn_norm, s.dim);
    bw.mlp_norm = norm_weight(a, b.mlp_norm, s.dim);
    bw.q = integer_layer(a.layer(b.q), s.heads * hd, s.dim, isa);
    bw.k = integer_layer(a.layer(b.k), s.kv_heads * hd, s.dim, isa);
    bw.v = integer_layer(a.layer(b.v), s.kv_heads * hd, s.dim, isa);
    bw.o = integer_layer(a.layer(b.o), s.dim, s.heads * hd, isa);
    bw.gate = integer_layer(a.layer(b.gate), s.mlp, s.dim, isa);
    bw.up = integer_layer(a.layer(b.up), s.mlp, s.dim, isa);
    bw.down = integer_layer(a.layer(b.down), s.dim, s.mlp, isa);
    w->blocks.push_back(std::move(bw));
  }
  w->final_norm = norm_weight(a, layers.final_norm, s.dim);
  if (!layers.head.empty()) {
    const LayerRecord& h = a.layer(layers.head);
    if (h.quantized) {
      BS_CHECK(layers.head_quantized && h.per_token_input, "head '", h.name, "': an 8-bit head quantizes its input per token");
      w->head_q = integer_layer(h, s.vocab, s.dim, isa);
    } else {
      BS_CHECK(h.out == s.vocab && h.in == s.dim && h.bias.empty(), "head '", h.name, "' is ", h.out, " x ", h.in,
               h.bias.empty() ? "" : " with a bias", ", the model needs ", s.vocab, " x ", s.dim, " without bias");
      w->head = h.weight;
    }
  } else if (layers.head_quantized) {
    BS_CHECK(e.quantized, "the tied head quantizes its input but embedding '", e.name, "' is full precision");
    w->head_q = integer_layer(e, s.vocab, s.dim, isa);
  }
  return w;
}

}  // namespace bitswitch::deploy
