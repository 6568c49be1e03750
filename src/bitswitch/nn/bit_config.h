// Bit configurations: the precision of a model as an explicit value (SPEC.md Sec. 4 and 6).
// A BitConfig gives every quantized layer its weight and activation width; uniform configs
// give every layer the same width, per-layer configs (mixed precision) override by layer name.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace bitswitch::nn {

constexpr int kFloatBits = 32;  // "width" of a full-precision layer

struct LayerBits {
  int weight = kFloatBits;
  int act = kFloatBits;
  bool operator==(const LayerBits& o) const { return weight == o.weight && act == o.act; }
};

class BitConfig {
 public:
  // Every quantized layer at `bits` (kFloatBits: the FP32 network).
  static BitConfig uniform(int bits);
  static BitConfig fp32() { return uniform(kFloatBits); }
  // Per-layer widths; layers not named take `default_bits`.
  static BitConfig per_layer(std::map<std::string, LayerBits> layers, int default_bits);

  LayerBits for_layer(const std::string& name) const;
  bool is_uniform() const { return overrides_.empty(); }
  int default_bits() const { return default_bits_; }
  const std::map<std::string, LayerBits>& overrides() const { return overrides_; }
  // "fp32", "w8", ... for uniform configs; "mixed" otherwise.
  std::string label() const;

 private:
  int default_bits_ = kFloatBits;
  std::map<std::string, LayerBits> overrides_;
};

// Parses "8,6,4,2": each width in [2, 8], no duplicates; returned sorted high to low.
// Throws bitswitch::Error naming `what` and the bad value.
std::vector<int> parse_bit_list(const std::string& text, const std::string& what = "--bits");
// Validates an already-split list the same way; returns it sorted high to low.
std::vector<int> check_bit_list(std::vector<int> bits, const std::string& what = "bits");
std::string format_bit_list(const std::vector<int>& bits);
// Label of a uniform width: "fp32" or "w<b>".
std::string width_label(int bits);

// Name of the BatchNorm that follows a layer running at `bits` whose input comes from a layer
// running at `prev_bits` (SPEC Sec. 3 "transitional BN"): "fp" for kFloatBits, "<b>" when the
// widths agree or the input layer does not follow the config (prev_bits 0 or kFloatBits), and
// "<prev>_<b>" otherwise. Training, export and the integer runtime all select BNs by this key.
std::string bn_key(int prev_bits, int bits);

// Per-layer widths file of the mixed-precision path (`--layer-bits`): a JSON object mapping each
// config-following quantized layer's module name to its width, e.g. {"blocks.0.conv1": 4, ...}
// (weights and input activations of a layer share the width, SPEC Sec. 6).
// Reading checks the JSON and each width (in `allowed`, when given), naming the file and layer.
std::map<std::string, int> parse_layer_bits(const std::string& json_text, const std::string& source,
                                            const std::vector<int>& allowed = {});
std::map<std::string, int> read_layer_bits(const std::string& path, const std::vector<int>& allowed = {});
std::string layer_bits_to_json(const std::map<std::string, int>& layers);
// The BitConfig of a per-layer map (every named layer at its width; others at default_bits).
// default_bits also decides whether fixed-width layers (first/last at 8 bits) run quantized:
// pass a trained width to evaluate the quantized network, kFloatBits only for the FP one.
BitConfig layer_bits_config(const std::map<std::string, int>& layers, int default_bits);

}  // namespace bitswitch::nn
