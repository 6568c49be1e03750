// The network as data: an op graph of a model's inference computation (SPEC.md Sec. 7; paper
// Sec. 3.1, the deployed l-bit model). A model emits its own graph (models::ModelImpl::graph),
// the exporter stores it in the deployment artifact's metadata and the integer runtime
// interprets it, so no component keeps a table of layer names per architecture.
//
// Nodes, in a topological order (inputs first):
//   input                      the image batch, N x C x H x W (attr channels)
//   conv / linear              a QConv2d / QLinear of the model: `layer` names its tensors; attrs
//                              in, out, kernel, stride, padding, groups (conv); the input
//                              quantizer of the layer: quant = none | unsigned | signed
//   batchnorm                  a SwitchableBatchNorm2d: `layer` names it; attr channels
//   relu, relu6                max(x, 0), clamp(x, 0, 6)
//   add                        x + y (two inputs)
//   maxpool                    kernel, stride, padding (pads are -inf)
//   global_avgpool             mean over H x W
//   flatten                    N x C x 1 x 1 -> N x C
// Language models (a sequence of T tokens; every value is T x C):
//   tokens                     the token ids (attr vocab)
//   embedding                  the token embedding: `layer` names it; attrs vocab (in), dim (out)
//   rmsnorm                    weight * x / sqrt(mean(x^2) + eps): `layer` names its weight;
//                              attrs dim, eps
//   linear                     as above; quant = per_token: signed 8-bit codes, one dynamic
//                              scale per token (quant::per_token_scale), at every width
//   attention                  causal multi-head attention with rotary position embedding over
//                              inputs q, k, v (the projections' outputs; keys and values of every
//                              earlier position); attrs heads, kv_heads (grouped-query when
//                              fewer), head_dim, rope_theta
//   silu_mul                   silu(gate) * up (two inputs, SwiGLU)
//   head                       the output head tied to the embedding named by `layer`: x times
//                              its weight transposed; attrs dim (in), vocab (out), quant
//                              (none or per_token). An untied head is a linear node.
// The graph's output is the node named by `output` (the logits).
//
// This file has no LibTorch dependency (models and the torch-free runtime both use it).
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace bitswitch::format {

enum class OpKind {
  kInput, kConv, kLinear, kBatchNorm, kRelu, kRelu6, kAdd, kMaxPool, kGlobalAvgPool, kFlatten,
  kTokens, kEmbedding, kRmsNorm, kAttention, kSiluMul, kHead,  // language models
};
enum class InputQuant { kNone, kUnsigned, kSigned, kPerToken };

// True for the ops of language-model graphs (tokens ... head), which the CNN runtime does not run.
bool is_lm_op(OpKind k);

const char* op_name(OpKind k);
const char* input_quant_name(InputQuant q);

struct GraphNode {
  std::string name;
  OpKind op = OpKind::kInput;
  std::vector<std::string> inputs;
  std::string layer;  // conv / linear / batchnorm: the module holding its tensors
  // conv / linear geometry (linear: kernel 1); input: channels in `out`; batchnorm: channels.
  int64_t in = 0, out = 0, kernel = 1, stride = 1, padding = 0, groups = 1;
  InputQuant quant = InputQuant::kNone;  // conv / linear / head: the quantizer of the layer's input
  // Language models. tokens: vocab in `out`; embedding: vocab in `in`, dim in `out`; rmsnorm:
  // dim in `in` and `out`; head: dim in `in`, vocab in `out`; attention: the fields below.
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  double rope_theta = 0;  // attention
  double eps = 0;         // rmsnorm
};

struct Graph {
  std::vector<GraphNode> nodes;
  std::string output;

  const GraphNode& node(const std::string& name) const;  // throws naming the node
  int index(const std::string& name) const;              // -1 when absent
  // Consumers of every node, by index.
  std::vector<std::vector<int>> consumers() const;
};

// Builds a graph while a model walks its own modules; every add returns the node's name.
class GraphBuilder {
 public:
  std::string input(int64_t channels);
  std::string conv(const std::string& layer, const std::string& x, int64_t in, int64_t out, int64_t kernel,
                   int64_t stride, int64_t padding, int64_t groups, InputQuant quant);
  std::string linear(const std::string& layer, const std::string& x, int64_t in, int64_t out, InputQuant quant);
  std::string batchnorm(const std::string& layer, const std::string& x, int64_t channels);
  std::string relu(const std::string& x);
  std::string relu6(const std::string& x);
  std::string add(const std::string& x, const std::string& y);
  std::string maxpool(const std::string& x, int64_t kernel, int64_t stride, int64_t padding);
  std::string global_avgpool(const std::string& x);
  std::string flatten(const std::string& x);
  // Language models.
  std::string tokens(int64_t vocab);
  std::string embedding(const std::string& layer, const std::string& x, int64_t vocab, int64_t dim);
  std::string rmsnorm(const std::string& layer, const std::string& x, int64_t dim, double eps);
  std::string attention(const std::string& name, const std::string& q, const std::string& k, const std::string& v,
                        int64_t heads, int64_t kv_heads, int64_t head_dim, double rope_theta);
  std::string silu_mul(const std::string& gate, const std::string& up);
  std::string head(const std::string& embedding_layer, const std::string& x, int64_t dim, int64_t vocab,
                   InputQuant quant);
  Graph finish(const std::string& output);

 private:
  std::string push(GraphNode n);
  std::string unique(const std::string& base);
  Graph g_;
  std::map<std::string, int> used_;
};

// Structural validation: known ops, unique non-empty names, inputs that exist and are of the
// op's arity, no cycle (the stored order need not be topological; the result is), one input
// node (input or tokens), an output that exists; attributes in range. Errors name `where` and the node.
// Returns the node indices in a topological order.
std::vector<int> validate_graph(const Graph& g, const std::string& where);

// JSON <-> Graph. Reading uses the checked field readers (format/json_fields.h): a number out of
// range or of the wrong type is an error naming the node and field. Then validate_graph.
nlohmann::json graph_to_json(const Graph& g);
Graph graph_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace bitswitch::format
