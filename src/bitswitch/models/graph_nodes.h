// Internal: graph nodes (format/graph.h) of the quantized layers, from their own options, for the
// models' graph() methods.
#pragma once
#include <string>

#include "bitswitch/format/graph.h"
#include "bitswitch/nn/layers.h"

namespace bitswitch::models {

// The quantizer of a layer's input, as the layer applies it (none for a full-precision layer or
// an unquantized input such as the image).
inline format::InputQuant input_quant(const nn::QuantLayer& q) {
  const auto& o = q.quant_options();
  if (o.fixed_bits() == nn::kFloatBits || !o.quantize_input()) return format::InputQuant::kNone;
  if (o.per_token_input()) return format::InputQuant::kPerToken;
  return o.signed_input() ? format::InputQuant::kSigned : format::InputQuant::kUnsigned;
}

// conv [with its input ReLU (QuantOptions::input_relu) as a relu node before it].
inline std::string conv_node(format::GraphBuilder& g, const std::string& name, const nn::QConv2dImpl& c,
                             std::string x) {
  const auto& o = c.options();
  if (o.quant().input_relu()) x = g.relu(x);
  return g.conv(name, x, o.in_channels(), o.out_channels(), o.kernel_size(), o.stride(), o.padding(), o.groups(),
                input_quant(c));
}

inline std::string linear_node(format::GraphBuilder& g, const std::string& name, const nn::QLinearImpl& l,
                               std::string x) {
  const auto& o = l.options();
  if (o.quant().input_relu()) x = g.relu(x);
  return g.linear(name, x, o.in_features(), o.out_features(), input_quant(l));
}

// conv -> BN, the pair every model uses.
inline std::string conv_bn_nodes(format::GraphBuilder& g, const std::string& conv_name, const nn::QConv2dImpl& c,
                                 const std::string& bn_name, const std::string& x) {
  return g.batchnorm(bn_name, conv_node(g, conv_name, c, x), c.options().out_channels());
}

}  // namespace bitswitch::models
