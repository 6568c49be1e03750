// Op graph of a model's inference computation: building, validation and JSON (SPEC.md Sec. 7);
// see graph.h.
#include "bitswitch/format/graph.h"

#include <cmath>
#include <set>

#include "bitswitch/format/json_fields.h"
#include "bitswitch/util/error.h"

namespace bitswitch::format {

using json = nlohmann::json;

namespace {

constexpr int64_t kMaxDim = int64_t(1) << 24;

struct OpInfo {
  OpKind kind;
  const char* name;
  int arity;
};
constexpr OpInfo kOps[] = {
    {OpKind::kInput, "input", 0},       {OpKind::kConv, "conv", 1},       {OpKind::kLinear, "linear", 1},
    {OpKind::kBatchNorm, "batchnorm", 1}, {OpKind::kRelu, "relu", 1},     {OpKind::kRelu6, "relu6", 1},
    {OpKind::kAdd, "add", 2},           {OpKind::kMaxPool, "maxpool", 1}, {OpKind::kGlobalAvgPool, "global_avgpool", 1},
    {OpKind::kFlatten, "flatten", 1},   {OpKind::kTokens, "tokens", 0},   {OpKind::kEmbedding, "embedding", 1},
    {OpKind::kRmsNorm, "rmsnorm", 1},   {OpKind::kAttention, "attention", 3}, {OpKind::kSiluMul, "silu_mul", 2},
    {OpKind::kHead, "head", 1},
};

const OpInfo& info(OpKind k) {
  for (const auto& o : kOps)
    if (o.kind == k) return o;
  fail("graph: op kind ", int(k), " has no name");
}

bool has_layer(OpKind k) {
  return k == OpKind::kConv || k == OpKind::kLinear || k == OpKind::kBatchNorm || k == OpKind::kEmbedding ||
         k == OpKind::kRmsNorm || k == OpKind::kHead;
}

InputQuant parse_input_quant(const std::string& q, const std::string& where) {
  if (q == "none") return InputQuant::kNone;
  if (q == "unsigned") return InputQuant::kUnsigned;
  if (q == "signed") return InputQuant::kSigned;
  if (q == "per_token") return InputQuant::kPerToken;
  fail(where, ": field 'quant' = '", q, "' is not none, unsigned, signed or per_token");
}

GraphNode make_node(std::string name, OpKind op, std::vector<std::string> inputs, std::string layer = "") {
  GraphNode n;
  n.name = std::move(name);
  n.op = op;
  n.inputs = std::move(inputs);
  n.layer = std::move(layer);
  return n;
}

}  // namespace

const char* op_name(OpKind k) { return info(k).name; }

bool is_lm_op(OpKind k) { return k >= OpKind::kTokens; }

const char* input_quant_name(InputQuant q) {
  switch (q) {
    case InputQuant::kNone: return "none";
    case InputQuant::kUnsigned: return "unsigned";
    case InputQuant::kSigned: return "signed";
    case InputQuant::kPerToken: return "per_token";
  }
  return "?";
}

const GraphNode& Graph::node(const std::string& name) const {
  const int i = index(name);
  BS_CHECK(i >= 0, "graph has no node '", name, "'");
  return nodes[size_t(i)];
}

int Graph::index(const std::string& name) const {
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].name == name) return int(i);
  return -1;
}

std::vector<std::vector<int>> Graph::consumers() const {
  std::map<std::string, int> at;
  for (size_t i = 0; i < nodes.size(); ++i) at[nodes[i].name] = int(i);
  std::vector<std::vector<int>> c(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i)
    for (const auto& in : nodes[i].inputs)
      if (auto it = at.find(in); it != at.end()) c[size_t(it->second)].push_back(int(i));
  return c;
}

// ---------------------------------------------------------------------------------------------
// Building.

std::string GraphBuilder::unique(const std::string& base) {
  const int k = used_[base]++;
  return k == 0 ? base : base + "_" + std::to_string(k);
}

std::string GraphBuilder::push(GraphNode n) {
  g_.nodes.push_back(std::move(n));
  return g_.nodes.back().name;
}

std::string GraphBuilder::input(int64_t channels) {
  GraphNode n = make_node(unique("input"), OpKind::kInput, {});
  n.out = channels;
  return push(std::move(n));
}

std::string GraphBuilder::conv(const std::string& layer, const std::string& x, int64_t in, int64_t out, int64_t kernel,
                               int64_t stride, int64_t padding, int64_t groups, InputQuant quant) {
  GraphNode n = make_node(unique(layer), OpKind::kConv, {x}, layer);
  n.in = in, n.out = out, n.kernel = kernel, n.stride = stride, n.padding = padding, n.groups = groups;
  n.quant = quant;
  return push(std::move(n));
}

std::string GraphBuilder::linear(const std::string& layer, const std::string& x, int64_t in, int64_t out,
                                 InputQuant quant) {
  GraphNode n = make_node(unique(layer), OpKind::kLinear, {x}, layer);
  n.in = in, n.out = out;
  n.quant = quant;
  return push(std::move(n));
}

std::string GraphBuilder::batchnorm(const std::string& layer, const std::string& x, int64_t channels) {
  GraphNode n = make_node(unique(layer), OpKind::kBatchNorm, {x}, layer);
  n.in = n.out = channels;
  return push(std::move(n));
}

std::string GraphBuilder::relu(const std::string& x) {
  return push(make_node(unique(x + ".relu"), OpKind::kRelu, {x}));
}

std::string GraphBuilder::relu6(const std::string& x) {
  return push(make_node(unique(x + ".relu6"), OpKind::kRelu6, {x}));
}

std::string GraphBuilder::add(const std::string& x, const std::string& y) {
  return push(make_node(unique(x + ".add"), OpKind::kAdd, {x, y}));
}

std::string GraphBuilder::maxpool(const std::string& x, int64_t kernel, int64_t stride, int64_t padding) {
  GraphNode n = make_node(unique(x + ".maxpool"), OpKind::kMaxPool, {x});
  n.kernel = kernel, n.stride = stride, n.padding = padding;
  return push(std::move(n));
}

std::string GraphBuilder::global_avgpool(const std::string& x) {
  return push(make_node(unique(x + ".avgpool"), OpKind::kGlobalAvgPool, {x}));
}

std::string GraphBuilder::flatten(const std::string& x) {
  return push(make_node(unique(x + ".flatten"), OpKind::kFlatten, {x}));
}

std::string GraphBuilder::tokens(int64_t vocab) {
  GraphNode n = make_node(unique("tokens"), OpKind::kTokens, {});
  n.out = vocab;
  return push(std::move(n));
}

std::string GraphBuilder::embedding(const std::string& layer, const std::string& x, int64_t vocab, int64_t dim) {
  GraphNode n = make_node(unique(layer), OpKind::kEmbedding, {x}, layer);
  n.in = vocab, n.out = dim;
  return push(std::move(n));
}

std::string GraphBuilder::rmsnorm(const std::string& layer, const std::string& x, int64_t dim, double eps) {
  GraphNode n = make_node(unique(layer), OpKind::kRmsNorm, {x}, layer);
  n.in = n.out = dim;
  n.eps = eps;
  return push(std::move(n));
}

std::string GraphBuilder::attention(const std::string& name, const std::string& q, const std::string& k,
                                    const std::string& v, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                    double rope_theta) {
  GraphNode n = make_node(unique(name), OpKind::kAttention, {q, k, v});
  n.heads = heads, n.kv_heads = kv_heads, n.head_dim = head_dim, n.rope_theta = rope_theta;
  n.in = n.out = heads * head_dim;
  return push(std::move(n));
}

std::string GraphBuilder::silu_mul(const std::string& gate, const std::string& up) {
  return push(make_node(unique(gate + ".silu_mul"), OpKind::kSiluMul, {gate, up}));
}

std::string GraphBuilder::head(const std::string& embedding_layer, const std::string& x, int64_t dim, int64_t vocab,
                               InputQuant quant) {
  GraphNode n = make_node(unique(embedding_layer + ".head"), OpKind::kHead, {x}, embedding_layer);
  n.in = dim, n.out = vocab;
  n.quant = quant;
  return push(std::move(n));
}

Graph GraphBuilder::finish(const std::string& output) {
  g_.output = output;
  Graph g = std::move(g_);
  g_ = Graph();
  used_.clear();
  validate_graph(g, "model graph");
  return g;
}

// ---------------------------------------------------------------------------------------------
// Validation.

std::vector<int> validate_graph(const Graph& g, const std::string& where) {
  BS_CHECK(!g.nodes.empty(), where, ": the graph has no nodes");
  std::map<std::string, int> at;
  int inputs = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const GraphNode& n = g.nodes[i];
    const std::string w = where + ": node '" + n.name + "'";
    BS_CHECK(!n.name.empty(), where, ": node ", i, " has an empty name");
    BS_CHECK(at.emplace(n.name, int(i)).second, w, ": duplicate node name");
    const OpInfo& oi = info(n.op);
    BS_CHECK(int(n.inputs.size()) == oi.arity, w, ": op '", oi.name, "' takes ", oi.arity, " input(s), got ",
             n.inputs.size());
    BS_CHECK(!has_layer(n.op) || !n.layer.empty(), w, ": op '", oi.name, "' needs a layer name");
    if (n.op == OpKind::kInput || n.op == OpKind::kTokens) ++inputs;
    if (n.op == OpKind::kInput || n.op == OpKind::kBatchNorm || n.op == OpKind::kTokens)
      BS_CHECK(n.out >= 1 && n.out <= kMaxDim, w, ": bad channel count ", n.out);
    if (n.op == OpKind::kEmbedding || n.op == OpKind::kRmsNorm || n.op == OpKind::kHead)
      BS_CHECK(n.in >= 1 && n.in <= kMaxDim && n.out >= 1 && n.out <= kMaxDim, w, ": bad sizes ", n.in, " -> ", n.out);
    if (n.op == OpKind::kRmsNorm)
      BS_CHECK(n.in == n.out && n.eps > 0 && n.eps < 1, w, ": bad dim ", n.in, " or eps ", n.eps, " (must be in (0, 1))");
    if (n.op == OpKind::kAttention) {
      BS_CHECK(n.heads >= 1 && n.heads <= 4096 && n.kv_heads >= 1 && n.heads % n.kv_heads == 0, w, ": heads ", n.heads,
               " must be a positive multiple of kv_heads ", n.kv_heads);
      BS_CHECK(n.head_dim >= 2 && n.head_dim <= 4096 && n.head_dim % 2 == 0, w, ": head_dim ", n.head_dim,
               " must be even and in [2, 4096]");
      BS_CHECK(std::isfinite(n.rope_theta) && n.rope_theta > 1, w, ": rope_theta ", n.rope_theta, " must be > 1");
    }
    if (n.op == OpKind::kConv)
      BS_CHECK(n.quant != InputQuant::kPerToken, w, ": a conv node has no per-token input quantizer");
    if (n.op == OpKind::kHead)
      BS_CHECK(n.quant == InputQuant::kNone || n.quant == InputQuant::kPerToken, w,
               ": a head's input quantizer is none or per_token, not ", input_quant_name(n.quant));
    if (n.op == OpKind::kConv || n.op == OpKind::kLinear) {
      BS_CHECK(n.in >= 1 && n.in <= kMaxDim && n.out >= 1 && n.out <= kMaxDim, w, ": bad channels ", n.in, " -> ",
               n.out);
      BS_CHECK(n.kernel >= 1 && n.kernel <= 64 && n.stride >= 1 && n.stride <= 64 && n.padding >= 0 &&
                   n.padding < n.kernel,
               w, ": bad kernel/stride/padding ", n.kernel, "/", n.stride, "/", n.padding);
      BS_CHECK(n.groups >= 1 && n.in % n.groups == 0 && n.out % n.groups == 0, w, ": groups ", n.groups,
               " does not divide the channels ", n.in, " -> ", n.out);
      BS_CHECK(n.op == OpKind::kConv || (n.kernel == 1 && n.stride == 1 && n.padding == 0 && n.groups == 1), w,
               ": a linear node has no kernel, stride, padding or groups");
    }
    if (n.op == OpKind::kMaxPool)
      BS_CHECK(n.kernel >= 1 && n.kernel <= 64 && n.stride >= 1 && n.stride <= 64 && n.padding >= 0 &&
                   2 * n.padding <= n.kernel,
               w, ": bad kernel/stride/padding ", n.kernel, "/", n.stride, "/", n.padding);
  }
  BS_CHECK(inputs == 1, where, ": the graph needs exactly one input node, has ", inputs);
  BS_CHECK(at.count(g.output), where, ": output '", g.output, "' is not a node of the graph");
  // Dangling inputs, then a topological order (Kahn; stored order kept where it is already one).
  std::vector<int> pending(g.nodes.size(), 0);
  std::vector<std::vector<int>> users(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& in : g.nodes[i].inputs) {
      auto it = at.find(in);
      BS_CHECK(it != at.end(), where, ": node '", g.nodes[i].name, "' reads '", in, "', which is not a node (dangling input)");
      BS_CHECK(it->second != int(i), where, ": node '", g.nodes[i].name, "' reads itself (cycle)");
      users[size_t(it->second)].push_back(int(i));
      ++pending[i];
    }
  std::vector<int> order;
  std::set<int> ready;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (pending[i] == 0) ready.insert(int(i));
  while (!ready.empty()) {
    const int i = *ready.begin();
    ready.erase(ready.begin());
    order.push_back(i);
    for (int u : users[size_t(i)])
      if (--pending[size_t(u)] == 0) ready.insert(u);
  }
  if (order.size() != g.nodes.size()) {
    for (size_t i = 0; i < g.nodes.size(); ++i)
      BS_CHECK(pending[i] == 0, where, ": node '", g.nodes[i].name, "' is on a cycle (or reads one)");
  }
  return order;
}

// ---------------------------------------------------------------------------------------------
// JSON.

json graph_to_json(const Graph& g) {
  json nodes = json::array();
  for (const auto& n : g.nodes) {
    json j = {{"name", n.name}, {"op", op_name(n.op)}, {"inputs", n.inputs}};
    if (!n.layer.empty()) j["layer"] = n.layer;
    switch (n.op) {
      case OpKind::kInput: j["channels"] = n.out; break;
      case OpKind::kBatchNorm: j["channels"] = n.out; break;
      case OpKind::kConv:
        j["groups"] = n.groups;
        j["kernel"] = n.kernel;
        j["stride"] = n.stride;
        j["padding"] = n.padding;
        [[fallthrough]];
      case OpKind::kLinear:
        j["in"] = n.in;
        j["out"] = n.out;
        j["quant"] = input_quant_name(n.quant);
        break;
      case OpKind::kMaxPool:
        j["kernel"] = n.kernel;
        j["stride"] = n.stride;
        j["padding"] = n.padding;
        break;
      case OpKind::kTokens: j["vocab"] = n.out; break;
      case OpKind::kEmbedding:
        j["vocab"] = n.in;
        j["dim"] = n.out;
        break;
      case OpKind::kRmsNorm:
        j["dim"] = n.out;
        j["eps"] = n.eps;
        break;
      case OpKind::kAttention:
        j["heads"] = n.heads;
        j["kv_heads"] = n.kv_heads;
        j["head_dim"] = n.head_dim;
        j["rope_theta"] = n.rope_theta;
        break;
      case OpKind::kHead:
        j["dim"] = n.in;
        j["vocab"] = n.out;
        j["quant"] = input_quant_name(n.quant);
        break;
      default: break;
    }
    nodes.push_back(std::move(j));
  }
  return {{"nodes", nodes}, {"output", g.output}};
}

Graph graph_from_json(const json& j, const std::string& where) {
  Graph g;
  const json& nodes = json_member(j, "nodes", where);
  BS_CHECK(nodes.is_array(), where, ": 'nodes' must be an array");
  BS_CHECK(nodes.size() <= 100000, where, ": ", nodes.size(), " nodes is too many");
  g.output = json_string(j, "output", where);
  for (size_t i = 0; i < nodes.size(); ++i) {
    const json& jn = nodes[i];
    GraphNode n;
    n.name = json_string(jn, "name", where + ": node " + std::to_string(i));
    const std::string w = where + ": node '" + n.name + "'";
    const std::string op = json_string(jn, "op", w);
    bool known = false;
    for (const auto& o : kOps)
      if (op == o.name) n.op = o.kind, known = true;
    BS_CHECK(known, w, ": unknown op '", op, "'");
    const json& ins = json_member(jn, "inputs", w);
    BS_CHECK(ins.is_array() && ins.size() <= 16, w, ": 'inputs' must be an array of node names");
    for (const auto& x : ins) {
      BS_CHECK(x.is_string(), w, ": input ", x.dump(), " is not a node name");
      n.inputs.push_back(x.get<std::string>());
    }
    if (has_layer(n.op)) n.layer = json_string(jn, "layer", w);
    switch (n.op) {
      case OpKind::kInput:
      case OpKind::kBatchNorm:
        n.out = json_int(jn, "channels", 1, kMaxDim, w);
        n.in = n.out;
        break;
      case OpKind::kConv:
        n.groups = json_int(jn, "groups", 1, kMaxDim, w);
        n.kernel = json_int(jn, "kernel", 1, 64, w);
        n.stride = json_int(jn, "stride", 1, 64, w);
        n.padding = json_int(jn, "padding", 0, 63, w);
        [[fallthrough]];
      case OpKind::kLinear: {
        n.in = json_int(jn, "in", 1, kMaxDim, w);
        n.out = json_int(jn, "out", 1, kMaxDim, w);
        n.quant = parse_input_quant(json_string(jn, "quant", w), w);
        break;
      }
      case OpKind::kMaxPool:
        n.kernel = json_int(jn, "kernel", 1, 64, w);
        n.stride = json_int(jn, "stride", 1, 64, w);
        n.padding = json_int(jn, "padding", 0, 32, w);
        break;
      case OpKind::kTokens: n.out = json_int(jn, "vocab", 1, kMaxDim, w); break;
      case OpKind::kEmbedding:
        n.in = json_int(jn, "vocab", 1, kMaxDim, w);
        n.out = json_int(jn, "dim", 1, kMaxDim, w);
        break;
      case OpKind::kRmsNorm:
        n.in = n.out = json_int(jn, "dim", 1, kMaxDim, w);
        n.eps = json_number(jn, "eps", 0, 1, w);
        break;
      case OpKind::kAttention:
        n.heads = json_int(jn, "heads", 1, 4096, w);
        n.kv_heads = json_int(jn, "kv_heads", 1, 4096, w);
        n.head_dim = json_int(jn, "head_dim", 2, 4096, w);
        n.rope_theta = json_number(jn, "rope_theta", 1, 1e12, w);
        n.in = n.out = n.heads * n.head_dim;
        break;
      case OpKind::kHead:
        n.in = json_int(jn, "dim", 1, kMaxDim, w);
        n.out = json_int(jn, "vocab", 1, kMaxDim, w);
        n.quant = parse_input_quant(json_string(jn, "quant", w), w);
        break;
      default: break;
    }
    g.nodes.push_back(std::move(n));
  }
  validate_graph(g, where);
  return g;
}

}  // namespace bitswitch::format
