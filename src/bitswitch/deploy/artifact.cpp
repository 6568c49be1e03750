// Deployment artifact: safetensors layout, validation and integer bit switching (SPEC.md Sec. 7,
// paper Sec. 3.1); see artifact.h.
#include "bitswitch/deploy/artifact.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <thread>

#include "bitswitch/deploy/packing.h"
#include "bitswitch/format/json_fields.h"
#include "bitswitch/nn/bit_config.h"
#include "bitswitch/util/error.h"

namespace bitswitch::deploy {

using json = nlohmann::json;
using format::make_tensor;
using format::SafeTensors;
using format::TensorToWrite;

namespace {

constexpr int64_t kMaxDim = int64_t(1) << 24;

const char* kind_name(LayerKind k) {
  return k == LayerKind::kConv ? "conv" : k == LayerKind::kLinear ? "linear" : "embedding";
}

std::string rounding_name(quant::SecondRounding r) {
  return r == quant::SecondRounding::kFloor ? "floor" : "half_up";
}

TensorToWrite f32(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& v) {
  return make_tensor(name, "F32", shape, v.data(), v.size() * sizeof(float));
}

// `nonzero`: scales (training may learn a negative weight scale; the quantizer is defined for any
// non-zero scale, and the runtime reproduces it exactly).
std::vector<float> read_f32(const SafeTensors& st, const std::string& name, const std::vector<int64_t>& shape,
                            bool nonzero = false) {
  const auto& t = st.get(name, "F32", shape);
  std::vector<float> v(size_t(t.numel()));
  if (!v.empty()) std::memcpy(v.data(), t.data, v.size() * sizeof(float));
  for (size_t i = 0; i < v.size(); ++i) {
    BS_CHECK(std::isfinite(v[i]), st.source(), ": tensor '", name, "' element ", i, " is not finite");
    if (nonzero) BS_CHECK(v[i] != 0, st.source(), ": tensor '", name, "' element ", i, " is zero");
  }
  return v;
}

json parse_meta_json(const SafeTensors& st, const std::string& key) {
  try {
    return json::parse(st.metadata(key));
  } catch (const json::exception& e) {
    fail(st.source(), ": metadata '", key, "' is not valid JSON: ", e.what());
  }
}

int parse_int(const std::string& text, const std::string& where) {
  try {
    size_t used = 0;
    const int v = std::stoi(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  fail(where, ": '", text, "' is not an integer");
}

// Parallel loop over [0, n) in contiguous chunks with plain threads (no LibTorch here).
template <typename F>
void parallel_chunks(size_t n, int threads, F&& fn) {
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  const size_t t = std::min<size_t>(size_t(threads), std::max<size_t>(1, n / 65536));
  if (t <= 1) {
    fn(size_t(0), n);
    return;
  }
  std::vector<std::thread> pool;
  const size_t per = (n + t - 1) / t;
  for (size_t i = 1; i < t; ++i)
    pool.emplace_back([&, i] { fn(std::min(n, i * per), std::min(n, (i + 1) * per)); });
  fn(0, std::min(n, per));
  for (auto& th : pool) th.join();
}

}  // namespace

std::vector<int64_t> LayerRecord::weight_shape() const {
  if (kind != LayerKind::kConv) return {out, in};
  return {out, in / groups, kernel, kernel};
}

std::vector<int64_t> LayerRecord::scale_shape() const {
  if (group == 0) return {out};
  return {out, row_elems() / group};
}

json LmArchRecord::to_json() const {
  return json{{"vocab", vocab},         {"dim", dim},       {"layers", layers},         {"heads", heads},
              {"kv_heads", kv_heads},   {"mlp", mlp},       {"context", context},       {"rope_theta", rope_theta},
              {"norm_eps", norm_eps},   {"tied", tied},     {"group_size", group_size}};
}

LmArchRecord LmArchRecord::from_json(const json& j, const std::string& where) {
  LmArchRecord r;
  r.vocab = format::json_int(j, "vocab", 2, kMaxDim, where);
  r.dim = format::json_int(j, "dim", 1, kMaxDim, where);
  r.layers = format::json_int(j, "layers", 1, 4096, where);
  r.heads = format::json_int(j, "heads", 1, 4096, where);
  r.kv_heads = format::json_int(j, "kv_heads", 1, 4096, where);
  r.mlp = format::json_int(j, "mlp", 1, kMaxDim, where);
  r.context = format::json_int(j, "context", 1, kMaxDim, where);
  r.group_size = format::json_int(j, "group_size", 0, kMaxDim, where);
  r.rope_theta = format::json_number(j, "rope_theta", 1, 1e12, where);
  r.norm_eps = format::json_number(j, "norm_eps", 0, 1, where);
  r.tied = format::json_bool(j, "tied", where);
  BS_CHECK(r.dim % r.heads == 0 && r.head_dim() % 2 == 0, where, ": dim ", r.dim, " / heads ", r.heads,
           " must be an even head width");
  BS_CHECK(r.heads % r.kv_heads == 0, where, ": heads ", r.heads, " must be a multiple of kv_heads ", r.kv_heads);
  BS_CHECK(r.rope_theta > 1 && r.norm_eps > 0, where, ": rope_theta must be > 1 and norm_eps > 0");
  BS_CHECK(r.group_size == 0 || (r.dim % r.group_size == 0 && r.mlp % r.group_size == 0), where, ": group_size ",
           r.group_size, " must divide dim ", r.dim, " and mlp ", r.mlp);
  return r;
}

const NormRecord& Artifact::norm(const std::string& name) const {
  for (const auto& n : norms)
    if (n.name == name) return n;
  fail("artifact has no RMSNorm '", name, "'");
}

const LayerRecord& Artifact::layer(const std::string& name) const {
  for (const auto& l : layers)
    if (l.name == name) return l;
  fail("artifact has no layer '", name, "'");
}

const BnRecord& Artifact::bn(const std::string& name) const {
  for (const auto& b : bns)
    if (b.name == name) return b;
  fail("artifact has no BatchNorm '", name, "'");
}

std::map<std::string, int> Artifact::layer_bits() const {
  std::map<std::string, int> m;
  for (const auto& l : layers)
    if (l.switchable) m[l.name] = l.bits;
  return m;
}

std::string Artifact::label() const {
  if (master) return "master";
  std::set<int> widths;
  for (const auto& [_, b] : layer_bits()) widths.insert(b);
  return widths.size() == 1 ? "w" + std::to_string(*widths.begin()) : "mixed";
}

std::string active_bn_key(const Artifact& a, const BnRecord& bn) {
  const auto& src = a.layer(bn.source);
  if (!src.quantized) return nn::bn_key(0, nn::kFloatBits);
  int prev = 0;
  if (!bn.input.empty()) {
    const auto& in = a.layer(bn.input);
    if (in.switchable) prev = in.bits;
  }
  return nn::bn_key(prev, src.bits);
}

// ---------------------------------------------------------------------------------------------
// The graph against the records.

void check_graph(const Artifact& a, const std::string& where) {
  using format::OpKind;
  const auto order = format::validate_graph(a.graph, where);
  std::set<std::string> used;
  std::map<std::string, const LayerRecord*> layers;
  std::map<std::string, const BnRecord*> bns;
  std::map<std::string, const NormRecord*> norms;
  for (const auto& l : a.layers) layers[l.name] = &l;
  for (const auto& b : a.bns) bns[b.name] = &b;
  for (const auto& n : a.norms) norms[n.name] = &n;
  bool has_lm_op = false;
  for (const auto& n : a.graph.nodes) has_lm_op |= format::is_lm_op(n.op);
  BS_CHECK(has_lm_op == a.is_lm(), where, ": ",
           a.is_lm() ? "a language model's graph needs tokens, embedding, ... nodes"
                     : "language-model nodes in a graph without language-model metadata ('lm')");
  // The record a node names, used by this node only; `what` names its kind in errors.
  auto record = [&](const auto& records, const format::GraphNode& n, const std::string& w, const char* what) {
    auto it = records.find(n.layer);
    BS_CHECK(it != records.end(), w, ": ", what, " '", n.layer, "' is not in the artifact");
    BS_CHECK(used.insert(n.layer).second, w, ": ", what, " '", n.layer, "' is used by two nodes");
    return it->second;
  };
  auto input_channels = [&](const format::GraphNode& n, size_t k, int want_rank, const std::vector<int64_t>& ch,
                            const std::vector<int>& rank) {
    const int j = a.graph.index(n.inputs[k]);
    BS_CHECK(rank[size_t(j)] == want_rank, where, ": node '", n.name, "': input '", n.inputs[k], "' is not a ",
             want_rank == 1 ? "token sequence" : "sequence of vectors");
    return ch[size_t(j)];
  };
  // Per node: channels, and whether the spatial size is known to be 1 x 1 / flattened.
  std::vector<int64_t> ch(a.graph.nodes.size(), 0);
  std::vector<int> rank(a.graph.nodes.size(), 4);  // 4: N x C x H x W, 2: N x C
  for (int i : order) {
    const auto& n = a.graph.nodes[size_t(i)];
    const std::string w = where + ": node '" + n.name + "'";
    int64_t c = 0;
    int r = 4;
    if (!n.inputs.empty()) {
      const int j = a.graph.index(n.inputs[0]);
      c = ch[size_t(j)], r = rank[size_t(j)];
    }
    switch (n.op) {
      case OpKind::kInput:
        BS_CHECK(n.out == a.in_channels, w, ": ", n.out, " input channels, the model has ", a.in_channels);
        c = n.out;
        break;
      case OpKind::kConv:
      case OpKind::kLinear: {
        const LayerRecord& l = *record(layers, n, w, "layer");
        const bool conv = n.op == OpKind::kConv;
        BS_CHECK(l.kind == (conv ? LayerKind::kConv : LayerKind::kLinear), w, ": layer '", n.layer, "' is a ",
                 kind_name(l.kind));
        BS_CHECK(n.in == l.in && n.out == l.out && n.kernel == l.kernel && n.stride == l.stride &&
                     n.padding == l.padding && n.groups == l.groups,
                 w, ": geometry differs from layer '", n.layer, "'");
        const auto q = !l.quantize_input  ? format::InputQuant::kNone
                       : l.per_token_input ? format::InputQuant::kPerToken
                       : l.signed_input    ? format::InputQuant::kSigned
                                           : format::InputQuant::kUnsigned;
        BS_CHECK(n.quant == q, w, ": input quantizer '", format::input_quant_name(n.quant), "' differs from layer '",
                 n.layer, "' ('", format::input_quant_name(q), "')");
        BS_CHECK(r == (conv ? 4 : 2), w, ": a ", conv ? "conv" : "linear", " node needs a ", conv ? "4-d" : "flattened",
                 " input");
        BS_CHECK(c == n.in, w, ": input has ", c, " channels, the layer takes ", n.in, " (shape mismatch)");
        c = n.out;
        break;
      }
      case OpKind::kBatchNorm: {
        const BnRecord& b = *record(bns, n, w, "BatchNorm");
        BS_CHECK(r == 4 && c == b.channels && n.out == c, w, ": input has ", c, " channels, the BatchNorm ", b.channels,
                 " (shape mismatch)");
        break;
      }
      case OpKind::kAdd: {
        const int j = a.graph.index(n.inputs[1]);
        BS_CHECK(ch[size_t(j)] == c && rank[size_t(j)] == r, w, ": adds ", c, " to ", ch[size_t(j)],
                 " channels (shape mismatch)");
        break;
      }
      case OpKind::kMaxPool:
      case OpKind::kGlobalAvgPool:
        BS_CHECK(r == 4, w, ": pooling needs a 4-d input");
        break;
      case OpKind::kFlatten:
        BS_CHECK(r == 4 && a.graph.nodes[size_t(a.graph.index(n.inputs[0]))].op == OpKind::kGlobalAvgPool, w,
                 ": flatten must follow a global average pooling (1 x 1 spatial)");
        r = 2;
        break;
      case OpKind::kTokens:
        BS_CHECK(n.out == a.lm.vocab, w, ": vocabulary of ", n.out, " tokens, the model has ", a.lm.vocab);
        c = n.out, r = 1;
        break;
      case OpKind::kEmbedding: {
        const LayerRecord& l = *record(layers, n, w, "layer");
        BS_CHECK(l.kind == LayerKind::kEmbedding, w, ": layer '", n.layer, "' is not an embedding");
        BS_CHECK(r == 1 && c == l.out && n.in == l.out && n.out == l.in, w, ": embedding of ", n.in, " x ", n.out,
                 " differs from layer '", n.layer, "' (", l.out, " x ", l.in, ") or its input (shape mismatch)");
        c = n.out, r = 2;
        break;
      }
      case OpKind::kRmsNorm: {
        const NormRecord& nr = *record(norms, n, w, "RMSNorm");
        BS_CHECK(r == 2 && c == nr.dim && n.out == c, w, ": input has ", c, " values, the RMSNorm ", nr.dim,
                 " (shape mismatch)");
        BS_CHECK(n.eps == nr.eps, w, ": eps ", n.eps, " differs from RMSNorm '", n.layer, "' (", nr.eps, ")");
        break;
      }
      case OpKind::kAttention: {
        const int64_t cq = input_channels(n, 0, 2, ch, rank), ck = input_channels(n, 1, 2, ch, rank),
                      cv = input_channels(n, 2, 2, ch, rank);
        BS_CHECK(cq == n.heads * n.head_dim && ck == n.kv_heads * n.head_dim && cv == ck, w, ": q, k, v have ", cq,
                 ", ", ck, ", ", cv, " values; ", n.heads, " query and ", n.kv_heads, " key/value heads of ", n.head_dim,
                 " need ", n.heads * n.head_dim, ", ", n.kv_heads * n.head_dim, ", ", n.kv_heads * n.head_dim,
                 " (shape mismatch)");
        BS_CHECK(n.heads == a.lm.heads && n.kv_heads == a.lm.kv_heads && n.head_dim == a.lm.head_dim() &&
                     n.rope_theta == a.lm.rope_theta,
                 w, ": heads/kv_heads/head_dim/rope_theta differ from the model's (metadata 'lm')");
        c = n.heads * n.head_dim, r = 2;
        break;
      }
      case OpKind::kSiluMul: {
        const int64_t cu = input_channels(n, 1, 2, ch, rank);
        BS_CHECK(r == 2 && c == cu, w, ": multiplies ", c, " by ", cu, " values (shape mismatch)");
        break;
      }
      case OpKind::kHead: {
        auto it = layers.find(n.layer);
        BS_CHECK(it != layers.end() && it->second->kind == LayerKind::kEmbedding, w, ": layer '", n.layer,
                 "' is not an embedding of the artifact (a tied head reads the embedding)");
        const LayerRecord& l = *it->second;
        BS_CHECK(r == 2 && c == l.in && n.in == l.in && n.out == l.out, w, ": head of ", n.in, " -> ", n.out,
                 " differs from embedding '", n.layer, "' (", l.out, " x ", l.in, ") or its input (shape mismatch)");
        const auto q = l.quantized ? format::InputQuant::kPerToken : format::InputQuant::kNone;
        BS_CHECK(n.quant == q, w, ": input quantizer '", format::input_quant_name(n.quant), "' does not fit the ",
                 l.quantized ? "8-bit" : "full-precision", " embedding (", format::input_quant_name(q), ")");
        c = n.out;
        break;
      }
      default: break;
    }
    ch[size_t(i)] = c, rank[size_t(i)] = r;
  }
  const int out = a.graph.index(a.graph.output);
  BS_CHECK(rank[size_t(out)] == 2 && ch[size_t(out)] == a.num_classes, where, ": output '", a.graph.output, "' has ",
           ch[size_t(out)], " values per image, the model has ", a.num_classes, " classes");
  for (const auto& l : a.layers) BS_CHECK(used.count(l.name), where, ": layer '", l.name, "' is in no node");
  for (const auto& b : a.bns) BS_CHECK(used.count(b.name), where, ": BatchNorm '", b.name, "' is in no node");
  for (const auto& n : a.norms) BS_CHECK(used.count(n.name), where, ": RMSNorm '", n.name, "' is in no node");
}

// ---------------------------------------------------------------------------------------------
// Writing.

std::vector<TensorToWrite> artifact_tensors(const Artifact& a, std::map<std::string, std::string>* metadata) {
  std::vector<TensorToWrite> out;
  json layers = json::array(), bns = json::array();
  for (const auto& l : a.layers) {
    const int64_t K = l.row_elems();
    json jl = {{"name", l.name},   {"kind", kind_name(l.kind)}, {"out", l.out},
               {"in", l.in},       {"kernel", l.kernel},        {"stride", l.stride},
               {"padding", l.padding}, {"quantized", l.quantized}, {"switchable", l.switchable},
               {"quantize_input", l.quantize_input}, {"bias", !l.bias.empty()},
               {"groups", l.groups}, {"signed_input", l.signed_input}};
    if (l.per_token_input) jl["per_token_input"] = true;
    if (l.group > 0) jl["group"] = l.group;
    if (l.quantized) {
      jl["bits"] = l.bits;
      BS_CHECK(l.codes.size() == size_t(l.out * K), "layer '", l.name, "': ", l.codes.size(), " codes for ",
               l.out, " x ", K, " weights");
      if (l.bits == 8 || a.master) {
        out.push_back(make_tensor(l.name + ".weight_codes", "I8", l.weight_shape(), l.codes.data(), l.codes.size()));
      } else {
        auto packed = pack_rows(l.codes.data(), size_t(l.out), size_t(K), l.bits);
        const int64_t row_bytes = int64_t(packed_bytes(size_t(K), l.bits));
        out.push_back(make_tensor(l.name + ".weight_packed", "U8", {l.out, row_bytes}, packed.data(), packed.size()));
      }
      out.push_back(f32(l.name + ".weight_scale", l.scale_shape(), l.scale));
      json widths = json::array();
      for (const auto& [b, s] : l.act_scale) {
        out.push_back(f32(l.name + ".act_scale_" + std::to_string(b), {1}, {s}));
        widths.push_back(b);
      }
      jl["act_widths"] = widths;
    } else {
      out.push_back(f32(l.name + ".weight", l.weight_shape(), l.weight));
    }
    if (!l.bias.empty()) out.push_back(f32(l.name + ".bias", {l.out}, l.bias));
    layers.push_back(jl);
  }
  for (const auto& b : a.bns) {
    json keys = json::array();
    for (const auto& [k, p] : b.by_key) {
      const std::string base = b.name + "." + k;
      out.push_back(f32(base + ".weight", {b.channels}, p.weight));
      out.push_back(f32(base + ".bias", {b.channels}, p.bias));
      out.push_back(f32(base + ".running_mean", {b.channels}, p.mean));
      out.push_back(f32(base + ".running_var", {b.channels}, p.var));
      keys.push_back(k);
    }
    bns.push_back({{"name", b.name}, {"source", b.source}, {"input", b.input}, {"channels", b.channels},
                   {"eps", b.eps}, {"keys", keys}});
  }
  json norms = json::array();
  for (const auto& n : a.norms) {
    out.push_back(f32(n.name + ".weight", {n.dim}, n.weight));
    norms.push_back({{"name", n.name}, {"dim", n.dim}, {"eps", n.eps}});
  }
  if (a.is_lm() && !a.tokenizer_model.empty())
    out.push_back(make_tensor("tokenizer.model", "U8", {int64_t(a.tokenizer_model.size())}, a.tokenizer_model.data(),
                              a.tokenizer_model.size()));
  if (metadata) {
    *metadata = {{"format", kArtifactFormat},
                 {"version", std::to_string(kArtifactVersion)},
                 {"arch", a.arch},
                 {"spec", a.spec.dump()},
                 {"in_channels", std::to_string(a.in_channels)},
                 {"num_classes", std::to_string(a.num_classes)},
                 {"bits", nn::format_bit_list(a.bits)},
                 {"high_bits", std::to_string(a.high_bits)},
                 {"rounding", rounding_name(a.rounding)},
                 {"kind", a.master ? "master" : "switched"},
                 {"layers", layers.dump()},
                 {"bns", bns.dump()},
                 {"graph", format::graph_to_json(a.graph).dump()},
                 {"classes", json(a.classes).dump()},
                 {"provenance", a.provenance.dump()}};
    if (!a.master) (*metadata)["layer_bits"] = json(a.layer_bits()).dump();
    if (a.is_lm()) {
      (*metadata)["lm"] = a.lm.to_json().dump();
      (*metadata)["norms"] = norms.dump();
      (*metadata)["tokenizer"] = json{{"kind", a.tokenizer_kind}, {"bytes", a.tokenizer_model.size()}}.dump();
    }
  }
  return out;
}

void write_artifact(const std::string& path, const Artifact& a) {
  std::map<std::string, std::string> meta;
  auto tensors = artifact_tensors(a, &meta);
  format::write_safetensors(path, tensors, meta);
}

// ---------------------------------------------------------------------------------------------
// Reading and validation.

Artifact artifact_from_safetensors(const SafeTensors& st) {
  const std::string& src = st.source();
  BS_CHECK(st.metadata().count("format") && st.metadata("format") == kArtifactFormat, src,
           ": not a bitswitch artifact (metadata 'format' must be '", kArtifactFormat, "')");
  const int version = parse_int(st.metadata("version"), src + ": metadata 'version'");
  BS_CHECK(version != 1, src, ": artifact version 1 has no op graph; re-export it from its checkpoint with this ",
           "build (`bitswitch export --checkpoint CK -o ", src, "`)");
  BS_CHECK(version == kArtifactVersion, src, ": artifact version ", version, " is not supported (this build reads ",
           kArtifactVersion, ")");
  Artifact a;
  a.arch = st.metadata("arch");
  a.spec = parse_meta_json(st, "spec");
  a.provenance = parse_meta_json(st, "provenance");
  a.in_channels = parse_int(st.metadata("in_channels"), src + ": metadata 'in_channels'");
  a.num_classes = parse_int(st.metadata("num_classes"), src + ": metadata 'num_classes'");
  BS_CHECK(a.in_channels > 0 && a.in_channels <= 4096 && a.num_classes > 0 && a.num_classes <= kMaxDim, src,
           ": bad in_channels/num_classes ", a.in_channels, "/", a.num_classes);
  try {
    a.bits = nn::parse_bit_list(st.metadata("bits"), "metadata 'bits'");
  } catch (const Error& e) {
    fail(src, ": ", e.what());
  }
  a.high_bits = parse_int(st.metadata("high_bits"), src + ": metadata 'high_bits'");
  BS_CHECK(a.high_bits == a.bits.front(), src, ": metadata high_bits ", a.high_bits,
           " is not the highest width of the bit list ", st.metadata("bits"));
  const std::string rounding = st.metadata("rounding");
  BS_CHECK(rounding == "half_up" || rounding == "floor", src, ": metadata 'rounding' must be half_up or floor, got '",
           rounding, "'");
  a.rounding = rounding == "floor" ? quant::SecondRounding::kFloor : quant::SecondRounding::kHalfUp;
  const std::string kind = st.metadata("kind");
  BS_CHECK(kind == "master" || kind == "switched", src, ": metadata 'kind' must be master or switched, got '", kind, "'");
  a.master = kind == "master";

  std::set<std::string> used;
  auto use = [&](const std::string& name) { used.insert(name); return name; };
  const json layers = parse_meta_json(st, "layers");
  BS_CHECK(layers.is_array() && !layers.empty(), src, ": metadata 'layers' must be a non-empty array");
  std::set<std::string> names;
  for (const auto& jl : layers) {
    LayerRecord l;
    const std::string where = src + ": metadata 'layers'";
    l.name = format::json_string(jl, "name", where);
    const std::string lw = src + ": layer '" + l.name + "'";
    BS_CHECK(!l.name.empty() && names.insert(l.name).second, lw, ": empty or duplicate layer name");
    const std::string k = format::json_string(jl, "kind", lw);
    BS_CHECK(k == "conv" || k == "linear" || k == "embedding", lw, ": kind must be conv, linear or embedding, got '", k,
             "'");
    l.kind = k == "conv" ? LayerKind::kConv : k == "linear" ? LayerKind::kLinear : LayerKind::kEmbedding;
    l.out = format::json_int(jl, "out", 1, kMaxDim, lw);
    l.in = format::json_int(jl, "in", 1, kMaxDim, lw);
    l.kernel = format::json_int(jl, "kernel", 1, 15, lw);
    l.stride = format::json_int(jl, "stride", 1, 16, lw);
    l.padding = format::json_int(jl, "padding", 0, 22, lw);
    l.groups = format::json_int(jl, "groups", 1, kMaxDim, lw);
    BS_CHECK(l.in % l.groups == 0 && l.out % l.groups == 0, lw, ": groups ", l.groups, " does not divide ", l.in,
             " -> ", l.out);
    BS_CHECK(l.kind == LayerKind::kConv || l.groups == 1, lw, ": a ", k, " layer has no groups");
    BS_CHECK(l.out > 0 && l.out <= kMaxDim && l.in > 0 && l.in <= kMaxDim, lw, ": bad shape ", l.out, " x ", l.in);
    BS_CHECK(l.kernel >= 1 && l.kernel <= 15 && l.stride >= 1 && l.stride <= 16 && l.padding >= 0 &&
                 l.padding < l.kernel + 8,
             lw, ": bad kernel/stride/padding ", l.kernel, "/", l.stride, "/", l.padding);
    BS_CHECK(l.kind == LayerKind::kConv || (l.kernel == 1 && l.stride == 1 && l.padding == 0), lw, ": a ", k,
             " layer has kernel 1, stride 1, padding 0");
    BS_CHECK(l.row_elems() <= kMaxDim, lw, ": rows of ", l.row_elems(), " weights are too long");
    l.quantized = format::json_bool(jl, "quantized", lw);
    l.switchable = format::json_bool(jl, "switchable", lw);
    l.quantize_input = format::json_bool(jl, "quantize_input", lw);
    l.signed_input = format::json_bool(jl, "signed_input", lw);
    BS_CHECK(l.quantize_input || !l.signed_input, lw, ": signed_input without quantize_input");
    if (jl.contains("per_token_input")) l.per_token_input = format::json_bool(jl, "per_token_input", lw);
    if (jl.contains("group")) l.group = format::json_int(jl, "group", 0, kMaxDim, lw);
    BS_CHECK(!l.per_token_input || (l.quantize_input && !l.signed_input && l.kind == LayerKind::kLinear), lw,
             ": per_token_input is for quantized inputs of linear layers (not signed_input)");
    BS_CHECK(l.group == 0 || (l.kind == LayerKind::kLinear && l.quantized && l.row_elems() % l.group == 0), lw,
             ": bad group ", l.group, " (a divisor of the ", l.row_elems(), " inputs of a quantized linear layer)");
    BS_CHECK(l.kind != LayerKind::kEmbedding || (!l.switchable && !l.quantize_input), lw,
             ": an embedding is fixed-width and has no input quantizer");
    BS_CHECK(l.quantized || (!l.switchable && !l.quantize_input), lw, ": a full-precision layer is neither switchable nor input-quantized");
    const bool has_bias = format::json_bool(jl, "bias", lw);
    const int64_t K = l.row_elems();
    if (l.quantized) {
      l.bits = int(format::json_int(jl, "bits", quant::kMinBits, quant::kMaxBits, lw));
      BS_CHECK(l.bits >= quant::kMinBits && l.bits <= quant::kMaxBits, lw, ": bits ", l.bits, " is outside [2, 8]");
      if (a.master && l.switchable)
        BS_CHECK(l.bits == a.high_bits, lw, ": a master artifact stores ", a.high_bits, "-bit codes, not ", l.bits);
      BS_CHECK(l.switchable || l.bits == 8, lw, ": a fixed-width layer is stored at 8 bits, not ", l.bits);
      if (l.switchable)
        BS_CHECK(std::find(a.bits.begin(), a.bits.end(), l.bits) != a.bits.end(), lw, ": width ", l.bits,
                 " is not in the bit list ", nn::format_bit_list(a.bits));
      l.codes.resize(size_t(l.out * K));
      if (l.bits == 8 || a.master) {
        const auto& t = st.get(use(l.name + ".weight_codes"), "I8", l.weight_shape());
        std::memcpy(l.codes.data(), t.data, l.codes.size());
        const int lo = quant::signed_qmin(l.bits), hi = quant::signed_qmax(l.bits);
        for (size_t i = 0; i < l.codes.size(); ++i)
          BS_CHECK(l.codes[i] >= lo && l.codes[i] <= hi, src, ": tensor '", l.name, ".weight_codes' element ", i, " = ",
                   int(l.codes[i]), " is outside the ", l.bits, "-bit range [", lo, ", ", hi, "]");
      } else {
        const int64_t row_bytes = int64_t(packed_bytes(size_t(K), l.bits));
        const auto& t = st.get(use(l.name + ".weight_packed"), "U8", {l.out, row_bytes});
        unpack_rows_into(t.data, 0, size_t(l.out), size_t(K), l.bits, l.codes.data());
      }
      l.scale = read_f32(st, use(l.name + ".weight_scale"), l.scale_shape(), true);
      const json widths = jl.value("act_widths", json::array());
      BS_CHECK(widths.is_array(), lw, ": act_widths must be an array");
      for (const auto& jw : widths) {
        const int b = int(format::json_to_int(jw, quant::kMinBits, quant::kMaxBits, lw, "activation width"));
        l.act_scale[b] = read_f32(st, use(l.name + ".act_scale_" + std::to_string(b)), {1}, true)[0];
      }
      BS_CHECK(!l.per_token_input || l.act_scale.empty(), lw, ": a per-token input has no activation scales");
      if (l.quantize_input && !l.per_token_input) {
        BS_CHECK(l.act_scale.count(l.bits), lw, ": no activation scale for its width ", l.bits);
        if (a.master && l.switchable)
          for (int b : a.bits)
            BS_CHECK(l.act_scale.count(b), lw, ": a master artifact needs the activation scale of every width; ", b,
                     " is missing");
      }
    } else {
      l.weight = read_f32(st, use(l.name + ".weight"), l.weight_shape());
    }
    if (has_bias) l.bias = read_f32(st, use(l.name + ".bias"), {l.out});
    a.layers.push_back(std::move(l));
  }

  const json bns = parse_meta_json(st, "bns");
  BS_CHECK(bns.is_array(), src, ": metadata 'bns' must be an array");
  std::set<std::string> bn_names;
  for (const auto& jb : bns) {
    BnRecord b;
    b.name = format::json_string(jb, "name", src + ": metadata 'bns'");
    const std::string bw = src + ": BatchNorm '" + b.name + "'";
    BS_CHECK(!b.name.empty() && bn_names.insert(b.name).second, bw, ": empty or duplicate name");
    b.source = format::json_string(jb, "source", bw);
    b.input = format::json_string(jb, "input", bw);
    BS_CHECK(names.count(b.source), bw, ": source layer '", b.source, "' is not in the artifact");
    BS_CHECK(b.input.empty() || names.count(b.input), bw, ": input layer '", b.input, "' is not in the artifact");
    b.channels = format::json_int(jb, "channels", 1, kMaxDim, bw);
    BS_CHECK(b.channels == a.layer(b.source).out, bw, ": ", b.channels, " channels, but layer '", b.source, "' has ",
             a.layer(b.source).out, " outputs");
    b.eps = format::json_number(jb, "eps", 0, 1, bw);
    BS_CHECK(b.eps > 0 && b.eps < 1, bw, ": eps ", b.eps, " is outside (0, 1)");
    const json keys = jb.value("keys", json::array());
    BS_CHECK(keys.is_array() && !keys.empty(), bw, ": 'keys' must be a non-empty array");
    for (const auto& jk : keys) {
      BS_CHECK(jk.is_string(), bw, ": key ", jk.dump(), " is not a string");
      const std::string k = jk.get<std::string>();
      BS_CHECK(!k.empty() && k.find('.') == std::string::npos && !b.by_key.count(k), bw, ": bad or duplicate key '", k, "'");
      const std::string base = b.name + "." + k;
      BnParams p;
      p.weight = read_f32(st, use(base + ".weight"), {b.channels});
      p.bias = read_f32(st, use(base + ".bias"), {b.channels});
      p.mean = read_f32(st, use(base + ".running_mean"), {b.channels});
      p.var = read_f32(st, use(base + ".running_var"), {b.channels});
      for (size_t i = 0; i < p.var.size(); ++i)
        BS_CHECK(p.var[i] >= 0, src, ": tensor '", base, ".running_var' element ", i, " is negative");
      b.by_key.emplace(k, std::move(p));
    }
    a.bns.push_back(std::move(b));
  }
  for (const auto& b : a.bns) {
    const std::string key = active_bn_key(a, b);
    BS_CHECK(a.master || b.by_key.count(key), src, ": BatchNorm '", b.name, "' has no parameters for key '", key,
             "' (the widths of its layers)");
  }
  if (st.metadata().count("lm")) {
    a.lm = LmArchRecord::from_json(parse_meta_json(st, "lm"), src + ": metadata 'lm'");
    BS_CHECK(a.lm.vocab == a.num_classes, src, ": metadata 'lm' has a vocabulary of ", a.lm.vocab, ", num_classes is ",
             a.num_classes);
    BS_CHECK(st.metadata().count("norms") && st.metadata().count("tokenizer"), src,
             ": a language model needs metadata 'norms' and 'tokenizer'");
    const json norms = parse_meta_json(st, "norms");
    BS_CHECK(norms.is_array() && norms.size() <= 100000, src, ": metadata 'norms' must be an array");
    std::set<std::string> norm_names;
    for (const auto& jn : norms) {
      NormRecord n;
      n.name = format::json_string(jn, "name", src + ": metadata 'norms'");
      const std::string nw = src + ": RMSNorm '" + n.name + "'";
      BS_CHECK(!n.name.empty() && norm_names.insert(n.name).second && !names.count(n.name), nw,
               ": empty or duplicate name");
      n.dim = format::json_int(jn, "dim", 1, kMaxDim, nw);
      n.eps = format::json_number(jn, "eps", 0, 1, nw);
      BS_CHECK(n.eps > 0, nw, ": eps must be > 0");
      n.weight = read_f32(st, use(n.name + ".weight"), {n.dim});
      a.norms.push_back(std::move(n));
    }
    const json tok = parse_meta_json(st, "tokenizer");
    const std::string tw = src + ": metadata 'tokenizer'";
    a.tokenizer_kind = format::json_string(tok, "kind", tw);
    BS_CHECK(a.tokenizer_kind == "byte" || a.tokenizer_kind == "sentencepiece", tw, ": kind must be byte or ",
             "sentencepiece, got '", a.tokenizer_kind, "'");
    const int64_t bytes = format::json_int(tok, "bytes", 0, int64_t(1) << 31, tw);
    BS_CHECK((a.tokenizer_kind == "byte") == (bytes == 0), tw, ": a ", a.tokenizer_kind, " tokenizer ",
             a.tokenizer_kind == "byte" ? "has no model bytes" : "needs its model bytes");
    if (bytes > 0) {
      const auto& t = st.get(use("tokenizer.model"), "U8", {bytes});
      a.tokenizer_model.assign(reinterpret_cast<const char*>(t.data), size_t(bytes));
    }
  }
  for (const auto& name : st.names())
    BS_CHECK(used.count(name), src, ": unexpected tensor '", name, "'");
  BS_CHECK(st.metadata().count("graph"), src, ": metadata 'graph' is missing");
  a.graph = format::graph_from_json(parse_meta_json(st, "graph"), src + ": graph");
  check_graph(a, src + ": graph");
  if (st.metadata().count("classes")) {
    const json classes = parse_meta_json(st, "classes");
    BS_CHECK(classes.is_array() && (classes.empty() || int64_t(classes.size()) == a.num_classes), src,
             ": metadata 'classes' must be an array of ", a.num_classes, " class names");
    for (const auto& c : classes) {
      BS_CHECK(c.is_string(), src, ": class name ", c.dump(), " is not a string");
      a.classes.push_back(c.get<std::string>());
    }
  }
  return a;
}

Artifact read_artifact(const std::string& path) { return artifact_from_safetensors(format::read_safetensors(path)); }

// ---------------------------------------------------------------------------------------------
// Switching.

Artifact switch_widths(const Artifact& master, const std::map<std::string, int>& layer_bits, int threads) {
  BS_CHECK(master.master, "switching needs a master artifact (from `bitswitch export`); this one is already switched to ",
           master.label());
  for (const auto& [name, b] : layer_bits) {
    bool found = false;
    for (const auto& l : master.layers) found |= l.name == name && l.switchable;
    BS_CHECK(found, "layer widths name '", name, "', which is not a switchable layer of the model");
    BS_CHECK(std::find(master.bits.begin(), master.bits.end(), b) != master.bits.end(), "layer '", name, "': width ", b,
             " is not in the bit list ", nn::format_bit_list(master.bits));
  }
  Artifact out;
  out.arch = master.arch;
  out.spec = master.spec;
  out.in_channels = master.in_channels;
  out.num_classes = master.num_classes;
  out.bits = master.bits;
  out.high_bits = master.high_bits;
  out.rounding = master.rounding;
  out.master = false;
  out.provenance = master.provenance;
  out.graph = master.graph;
  out.classes = master.classes;
  out.lm = master.lm;
  out.norms = master.norms;
  out.tokenizer_kind = master.tokenizer_kind;
  out.tokenizer_model = master.tokenizer_model;
  out.layers.reserve(master.layers.size());
  for (const auto& l : master.layers) {
    if (!l.switchable) {
      out.layers.push_back(l);
      continue;
    }
    auto it = layer_bits.find(l.name);
    BS_CHECK(it != layer_bits.end(), "layer widths do not name switchable layer '", l.name, "'");
    const int b = it->second, h = master.high_bits, d = h - b;
    LayerRecord s;
    s.name = l.name;
    s.kind = l.kind;
    s.out = l.out, s.in = l.in, s.kernel = l.kernel, s.stride = l.stride, s.padding = l.padding;
    s.groups = l.groups;
    s.quantized = true, s.switchable = true, s.quantize_input = l.quantize_input, s.signed_input = l.signed_input;
    s.per_token_input = l.per_token_input, s.group = l.group;
    s.bits = b;
    s.codes.resize(l.codes.size());
    const int8_t* src = l.codes.data();
    int8_t* dst = s.codes.data();
    const auto mode = master.rounding;
    parallel_chunks(l.codes.size(), threads, [&](size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; ++i) dst[i] = int8_t(quant::derive_code(src[i], h, b, mode));
    });
    s.scale.resize(l.scale.size());
    for (size_t c = 0; c < l.scale.size(); ++c) s.scale[c] = l.scale[c] * std::ldexp(1.0f, d);
    if (l.act_scale.count(b)) s.act_scale[b] = l.act_scale.at(b);
    s.bias = l.bias;
    out.layers.push_back(std::move(s));
  }
  for (const auto& b : master.bns) {
    BnRecord nb = b;
    nb.by_key.clear();
    const std::string key = active_bn_key(out, b);
    auto it = b.by_key.find(key);
    if (it == b.by_key.end() && key.find('_') != std::string::npos) {
      // A model trained without transitional BNs: the width's own BN (what training used).
      it = b.by_key.find(std::to_string(out.layer(b.source).bits));
    }
    BS_CHECK(it != b.by_key.end(), "BatchNorm '", b.name, "' has no parameters for key '", key, "'");
    nb.by_key.emplace(it->first, it->second);
    out.bns.push_back(std::move(nb));
  }
  return out;
}

Artifact switch_uniform(const Artifact& master, int bits, int threads) {
  BS_CHECK(std::find(master.bits.begin(), master.bits.end(), bits) != master.bits.end(), "width ", bits,
           " is not in the artifact's bit list ", nn::format_bit_list(master.bits));
  std::map<std::string, int> m;
  for (const auto& l : master.layers)
    if (l.switchable) m[l.name] = bits;
  return switch_widths(master, m, threads);
}

ArtifactSize artifact_size(const Artifact& a) {
  ArtifactSize s;
  std::map<std::string, std::string> meta;
  for (const auto& t : artifact_tensors(a, &meta)) {
    s.total_tensor_bytes += t.bytes.size();
    const std::string& n = t.name;
    auto ends = [&](const std::string& suf) {
      return n.size() >= suf.size() && n.compare(n.size() - suf.size(), suf.size(), suf) == 0;
    };
    if (ends(".weight_codes") || ends(".weight_packed")) s.weight_bytes += t.bytes.size();
    else if (ends(".weight")) {
      // FP layer weights (BN ".weight" entries are per-channel and belong to the rest).
      for (const auto& l : a.layers)
        if (!l.quantized && n == l.name + ".weight") s.weight_bytes += t.bytes.size();
    }
  }
  return s;
}

}  // namespace bitswitch::deploy
