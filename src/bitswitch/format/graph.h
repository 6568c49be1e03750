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

enum class OpKind { kInput, kConv, kLinear, kBatchNorm, kRelu, kRelu6, kAdd, kMaxPool, kGlobalAvgPool, kFlatten };
enum class InputQuant { kNone, kUnsigned, kSigned };

const char* op_name(OpKind k);
const char* input_quant_name(InputQuant q);

struct GraphNode {
  std::string name;
  OpKind op = OpKind::kInput;
  std::vector<std::string> inputs;
  std::string layer;  // conv / linear / batchnorm: the module holding its tensors
  // conv / linear geometry (linear: kernel 1); input: channels in `out`; batchnorm: channels.
  int64_t in = 0, out = 0, kernel = 1, stride = 1, padding = 0, groups = 1;
  InputQuant quant = InputQuant::kNone;  // conv / linear: the quantizer of the layer's input
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
  Graph finish(const std::string& output);

 private:
  std::string push(GraphNode n);
  std::string unique(const std::string& base);
  Graph g_;
  std::map<std::string, int> used_;
};

// Structural validation: known ops, unique non-empty names, inputs that exist and are of the
// op's arity, no cycle (the stored order need not be topological; the result is), one input
// node, an output that exists; attributes in range. Errors name `where` and the node.
// Returns the node indices in a topological order.
std::vector<int> validate_graph(const Graph& g, const std::string& where);

// JSON <-> Graph. Reading uses the checked field readers (format/json_fields.h): a number out of
// range or of the wrong type is an error naming the node and field. Then validate_graph.
nlohmann::json graph_to_json(const Graph& g);
Graph graph_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace bitswitch::format
