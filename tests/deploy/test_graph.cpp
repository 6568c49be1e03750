// The op graph format (format/graph.h) on its own: builder names, JSON round trip, and the
// structural errors of validate_graph / graph_from_json, each naming the node.
#include <gtest/gtest.h>

#include "bitswitch/format/graph.h"
#include "bitswitch/util/error.h"
#include "deploy_test_util.h"

using namespace bitswitch;
using namespace bitswitch::format;

namespace {
Graph small_graph() {
  GraphBuilder g;
  auto x = g.input(3);
  auto y = g.relu(g.batchnorm("bn", g.conv("conv", x, 3, 8, 3, 2, 1, 1, InputQuant::kNone), 8));
  y = g.maxpool(y, 3, 2, 1);
  auto z = g.relu6(g.batchnorm("dw_bn", g.conv("dw", y, 8, 8, 3, 1, 1, 8, InputQuant::kUnsigned), 8));
  y = g.add(y, z);
  return g.finish(g.linear("fc", g.flatten(g.global_avgpool(y)), 8, 10, InputQuant::kSigned));
}
}  // namespace

TEST(Graph, JsonRoundTripAndTopologicalOrder) {
  const Graph g = small_graph();
  EXPECT_EQ(g.output, "fc");
  EXPECT_EQ(g.node("dw").groups, 8);
  const Graph h = graph_from_json(graph_to_json(g), "t");
  EXPECT_EQ(graph_to_json(h), graph_to_json(g));
  EXPECT_EQ(h.node("fc").quant, InputQuant::kSigned);
  // A stored order that is not topological is fine: the order comes out sorted.
  Graph r = g;
  std::reverse(r.nodes.begin(), r.nodes.end());
  const auto order = validate_graph(r, "t");
  std::vector<int> pos(order.size());
  for (size_t i = 0; i < order.size(); ++i) pos[size_t(order[i])] = int(i);
  for (size_t i = 0; i < r.nodes.size(); ++i)
    for (const auto& in : r.nodes[i].inputs) EXPECT_LT(pos[size_t(r.index(in))], pos[i]);
}

TEST(Graph, StructuralErrorsNameTheNode) {
  auto with = [](std::function<void(nlohmann::json&)> fn) {
    auto j = graph_to_json(small_graph());
    fn(j);
    return error_of([&] { graph_from_json(j, "m.safetensors: graph"); });
  };
  auto node = [](nlohmann::json& j, const std::string& name) -> nlohmann::json& {
    for (auto& n : j["nodes"])
      if (n["name"] == name) return n;
    throw std::runtime_error(name);
  };
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "dw")["op"] = "softmax"; }),
                  "m.safetensors: graph: node 'dw': unknown op 'softmax'");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "dw")["inputs"] = {"ghost"}; }),
                  "node 'dw' reads 'ghost', which is not a node (dangling input)");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "dw")["inputs"] = {"dw_bn"}; }), "is on a cycle");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "dw")["inputs"] = {"dw"}; }), "node 'dw' reads itself (cycle)");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "dw")["groups"] = 3; }),
                  "node 'dw': groups 3 does not divide the channels 8 -> 8");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "bn.relu.maxpool.add")["inputs"] = {"bn.relu"}; }),
                  "node 'bn.relu.maxpool.add': op 'add' takes 2 input(s), got 1");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "dw")["padding"] = -1; }), "node 'dw': field 'padding' = -1");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "dw")["kernel"] = 1e300; }),
                  "node 'dw': field 'kernel' must be an integer");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "dw")["quant"] = "ternary"; }),
                  "node 'dw': field 'quant' = 'ternary' is not none, unsigned, signed or per_token");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "conv")["name"] = "dw"; }), "node 'dw': duplicate node name");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { j["nodes"].push_back(j["nodes"][0]); j["nodes"].back()["name"] = "in2"; }),
                  "exactly one input node, has 2");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { j["output"] = "logits"; }), "output 'logits' is not a node");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { j.erase("nodes"); }), "missing field 'nodes'");
}

namespace {
// One Llama block between the token input and a tied head, as models::LlamaImpl::graph() emits.
Graph lm_graph() {
  GraphBuilder g;
  auto x = g.embedding("emb", g.tokens(50), 50, 16);
  auto h = g.rmsnorm("b.n1", x, 16, 1e-5);
  auto q = g.linear("b.q", h, 16, 16, InputQuant::kPerToken);
  auto k = g.linear("b.k", h, 16, 8, InputQuant::kPerToken);
  auto v = g.linear("b.v", h, 16, 8, InputQuant::kPerToken);
  auto a = g.attention("b.attn", q, k, v, 4, 2, 4, 10000.0);
  x = g.add(g.linear("b.o", a, 16, 16, InputQuant::kPerToken), x);
  h = g.rmsnorm("b.n2", x, 16, 1e-5);
  auto m = g.silu_mul(g.linear("b.gate", h, 16, 32, InputQuant::kPerToken), g.linear("b.up", h, 16, 32, InputQuant::kPerToken));
  x = g.add(g.linear("b.down", m, 32, 16, InputQuant::kPerToken), x);
  return g.finish(g.head("emb", g.rmsnorm("norm", x, 16, 1e-5), 16, 50, InputQuant::kPerToken));
}
}  // namespace

TEST(Graph, LanguageModelOpsRoundTripAndErrorsNameTheNode) {
  const Graph g = lm_graph();
  const Graph h = graph_from_json(graph_to_json(g), "t");
  EXPECT_EQ(graph_to_json(h), graph_to_json(g));
  EXPECT_EQ(h.node("b.attn").kv_heads, 2);
  EXPECT_EQ(h.node("b.attn").rope_theta, 10000.0);
  EXPECT_EQ(h.node("b.q").quant, InputQuant::kPerToken);
  EXPECT_EQ(h.node(h.output).op, OpKind::kHead);
  EXPECT_TRUE(is_lm_op(OpKind::kAttention) && !is_lm_op(OpKind::kConv));
  auto with = [](std::function<void(nlohmann::json&)> fn) {
    auto j = graph_to_json(lm_graph());
    fn(j);
    return error_of([&] { graph_from_json(j, "lm.safetensors: graph"); });
  };
  auto node = [](nlohmann::json& j, const std::string& name) -> nlohmann::json& {
    for (auto& n : j["nodes"])
      if (n["name"] == name) return n;
    throw std::runtime_error(name);
  };
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "b.attn")["kv_heads"] = 3; }),
                  "node 'b.attn': heads 4 must be a positive multiple of kv_heads 3");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "b.attn")["head_dim"] = 5; }),
                  "node 'b.attn': head_dim 5 must be even");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "b.attn")["rope_theta"] = "big"; }),
                  "node 'b.attn': field 'rope_theta' must be a number");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "b.attn")["inputs"] = {"b.q", "b.k"}; }),
                  "node 'b.attn': op 'attention' takes 3 input(s), got 2");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "b.n1")["eps"] = 0; }), "node 'b.n1': bad dim 16 or eps 0");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "b.q")["quant"] = "per_row"; }),
                  "node 'b.q': field 'quant' = 'per_row' is not none, unsigned, signed or per_token");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "emb.head")["quant"] = "unsigned"; }),
                  "node 'emb.head': a head's input quantizer is none or per_token");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "tokens")["vocab"] = -1; }),
                  "node 'tokens': field 'vocab' = -1 is outside");
  EXPECT_CONTAINS(with([&](nlohmann::json& j) { node(j, "emb").erase("layer"); }), "node 'emb': missing field 'layer'");
}
