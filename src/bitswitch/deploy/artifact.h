// The deployment artifact (SPEC.md Sec. 7; paper Sec. 3.1): one stored INT(h) model from which
// every lower width is derived with integer operations only, in the safetensors format.
//
// A "master" artifact (`bitswitch export`) holds, for every quantized conv/linear layer, the
// h-bit weight codes (I8), the per-channel weight scale s (non-zero; training may learn a negative one) and one activation scale per width of
// the bit list; for every BatchNorm, one parameter set per width (and per transition, when the
// model has transitional BNs); the full-precision first/last layers as F32. No FP32 weight of a
// quantized layer is stored.
//
// A "switched" artifact (`bitswitch switch`, switch_widths()) holds each switchable layer at one
// width l: the codes derived by Double Rounding's integer second rounding (quant::derive_code),
// bit-packed when l < 8 (packing.h, row by row), the effective scale s * 2^(h-l), only the
// activation scale of width l, and only the BN parameters that width selects (nn::bn_key).
//
// Tensor names (L a layer, B a BatchNorm, k a bn_key):
//   L.weight_codes  I8  [O, I, kh, kw] or [O, I]     codes of a quantized layer at 8 bits or master
//   L.weight_packed U8  [O, ceil(I*kh*kw*l/8)]       codes of a switched layer at l < 8 bits
//   L.weight_scale  F32 [O], or [O, I / G]            scale of the stored codes (per output channel,
//                                                     or per group of G inputs: layer field "group")
//   L.act_scale_<b> F32 [1]                           input activation scale at width b
//   L.weight        F32 [O, I, kh, kw] or [O, I]      full-precision layers only
//   L.bias          F32 [O]                           when the layer has a bias
//   B.<k>.weight / .bias / .running_mean / .running_var   F32 [C]
// Language models (SPEC.md Sec. 9) add: the embedding as a layer of kind "embedding" ([vocab,
// dim]: F32 weight, or 8-bit codes with one scale per token row); linear layers with per-token
// 8-bit inputs ("per_token_input": no activation scales) and per-channel or group-wise scales;
//   N.weight        F32 [dim]                         an RMSNorm's weight (metadata 'norms')
//   tokenizer.model U8  [n]                           the tokenizer's model (sentencepiece)
// `__metadata__` holds format, version, arch, spec (JSON), bits, high_bits, rounding, kind
// ("master" or "switched"), layers (JSON: geometry and widths), bns (JSON: keys, wiring), graph
// (JSON, format/graph.h) and classes (JSON array of class names, optional); a language model
// also lm (JSON: vocab, dim, layers, heads, kv_heads, mlp, context, rope_theta, norm_eps, tied,
// group_size), norms (JSON: name, dim, eps) and tokenizer (JSON: kind, bytes).
// Files of version 2 without these fields are image models and read as before.
// This file has no LibTorch dependency.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bitswitch/format/graph.h"
#include "bitswitch/format/safetensors.h"
#include "bitswitch/quant/double_rounding.h"

namespace bitswitch::deploy {

constexpr const char* kArtifactFormat = "bitswitch-artifact";
// Version 2: the op graph (metadata 'graph', format/graph.h), grouped convolutions and signed
// input quantizers. Version-1 files (no graph) are refused with a message to re-export.
constexpr int kArtifactVersion = 2;

enum class LayerKind { kConv, kLinear, kEmbedding };

struct LayerRecord {
  std::string name;
  LayerKind kind = LayerKind::kConv;
  int64_t out = 0, in = 0, kernel = 1, stride = 1, padding = 0;  // linear: kernel 1
  int64_t groups = 1;           // conv: grouped (groups == in == out: depthwise)
  bool quantized = false;       // false: a full-precision layer (F32 weights)
  bool switchable = false;      // quantized and following the bit configuration
  bool quantize_input = false;  // its input is quantized (per-width scale)
  bool signed_input = false;    // ... with the signed symmetric quantizer (else unsigned)
  bool per_token_input = false; // ... per token, 8-bit signed with a dynamic scale (no act_scale)
  int64_t group = 0;            // linear: one weight scale per `group` inputs of a row; 0: per row
  int bits = 0;                 // width of `codes`
  std::vector<int8_t> codes;    // quantized: [out, in*kernel*kernel] in PyTorch order
  std::vector<float> scale;     // quantized: [out] or [out, in / group], weight = code * scale
  std::map<int, float> act_scale;  // width -> input scale (quantize_input)
  std::vector<float> weight;    // full precision: [out, in*kernel*kernel]
  std::vector<float> bias;      // empty or [out]

  int64_t row_elems() const { return in / groups * kernel * kernel; }
  std::vector<int64_t> weight_shape() const;
  std::vector<int64_t> scale_shape() const;  // [out] or [out, in / group]
};

// An RMSNorm of a language model: weight * x / sqrt(mean(x^2) + eps).
struct NormRecord {
  std::string name;
  int64_t dim = 0;
  double eps = 1e-5;
  std::vector<float> weight;  // [dim]
};

// A language model's hyper-parameters (models::LlamaArch and the vocabulary); vocab 0: not an LM.
struct LmArchRecord {
  int64_t vocab = 0, dim = 0, layers = 0, heads = 0, kv_heads = 0, mlp = 0, context = 0, group_size = 0;
  double rope_theta = 10000.0, norm_eps = 1e-5;
  bool tied = false;
  int64_t head_dim() const { return heads > 0 ? dim / heads : 0; }
  nlohmann::json to_json() const;
  // Checked reads of every field (errors name `where` and the field), then consistency.
  static LmArchRecord from_json(const nlohmann::json& j, const std::string& where);
};

struct BnParams {
  std::vector<float> weight, bias, mean, var;
};

struct BnRecord {
  std::string name;
  std::string source;  // the layer this BN follows
  std::string input;   // the layer that feeds `source` ("" if none or fixed-width)
  int64_t channels = 0;
  double eps = 1e-5;
  std::map<std::string, BnParams> by_key;  // nn::bn_key -> parameters
};

struct Artifact {
  std::string arch;            // model name in the registry ("resnet20", ...)
  nlohmann::json spec;         // the training ModelSpec, as JSON
  int64_t in_channels = 0, num_classes = 0;
  std::vector<int> bits;       // trained widths, high to low
  int high_bits = 8;
  quant::SecondRounding rounding = quant::SecondRounding::kHalfUp;
  bool master = true;
  nlohmann::json provenance = nlohmann::json::object();  // dataset, checkpoint, ...
  std::vector<LayerRecord> layers;  // in module order
  std::vector<BnRecord> bns;
  format::Graph graph;              // the inference computation (nodes name layers and bns)
  std::vector<std::string> classes;  // class names, by label index (empty: unknown)
  // Language models (lm.vocab > 0): hyper-parameters, RMSNorms, the tokenizer.
  LmArchRecord lm;
  std::vector<NormRecord> norms;
  std::string tokenizer_kind;   // "byte" or "sentencepiece" (data/text.h)
  std::string tokenizer_model;  // its serialized model (empty for "byte")

  bool is_lm() const { return lm.vocab > 0; }
  const NormRecord& norm(const std::string& name) const;

  const LayerRecord& layer(const std::string& name) const;
  const BnRecord& bn(const std::string& name) const;
  // Current width of every switchable layer.
  std::map<std::string, int> layer_bits() const;
  // "w4" when every switchable layer has the same width, "mixed" otherwise, "master".
  std::string label() const;
};

// The BN key a BatchNorm uses in `a` (the widths of its source and input layers).
std::string active_bn_key(const Artifact& a, const BnRecord& bn);

// The graph against the layers and BNs it names: every conv/linear/batchnorm node names a record
// of the matching kind and geometry, every record is used once, channels agree along every edge
// (shape mismatch), the output has num_classes channels. Language models: embedding, rmsnorm and
// head nodes against their records, attention and rmsnorm attributes against `lm`. Errors name
// `where` and the node.
void check_graph(const Artifact& a, const std::string& where);

// safetensors <-> Artifact. Reading validates everything: metadata, names, dtypes, shapes,
// code ranges, finite positive scales; errors name the file and the tensor or field.
std::vector<format::TensorToWrite> artifact_tensors(const Artifact& a, std::map<std::string, std::string>* metadata);
Artifact artifact_from_safetensors(const format::SafeTensors& st);
void write_artifact(const std::string& path, const Artifact& a);
Artifact read_artifact(const std::string& path);

// Switching (integer only). `layer_bits` must name every switchable layer of `master` with a
// width of its bit list; the result is a switched artifact. Multi-threaded over layers' rows
// with `threads` (0: all cores).
Artifact switch_widths(const Artifact& master, const std::map<std::string, int>& layer_bits, int threads = 0);
Artifact switch_uniform(const Artifact& master, int bits, int threads = 0);

// Bytes of the weight payload (codes or packed codes, FP weights) and of everything stored.
struct ArtifactSize {
  size_t weight_bytes = 0;
  size_t total_tensor_bytes = 0;
};
ArtifactSize artifact_size(const Artifact& a);

}  // namespace bitswitch::deploy
