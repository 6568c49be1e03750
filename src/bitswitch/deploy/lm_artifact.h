// Language-model artifacts into the integer decoder (SPEC.md Sec. 7 and 9; paper Sec. 4.3): the
// loader from a deployment artifact (artifact.h) to the decoder's weights (lm_decoder.h).
// Torch-free, like the rest of the deployment library.
//
// The decoder runs one structure, which check_lm_graph verifies on the graph node by node:
//   tokens -> embedding -> L blocks -> rmsnorm -> head (tied) or linear (lm_head) = output,
//   block: a = add(o(attention(q(n1), k(n1), v(n1))), x), n1 = rmsnorm(x);
//          x' = add(down(silu_mul(gate(n2), up(n2))), a), n2 = rmsnorm(a),
// with every block linear quantized with per-token inputs (W{l}A8). Anything else is an error
// naming the node that does not fit.
#pragma once
#include <memory>

#include "bitswitch/deploy/artifact.h"
#include "bitswitch/deploy/lm_decoder.h"

namespace bitswitch::deploy {

// The layer names of one block and of the model's ends, as found in the graph.
struct LmGraphLayers {
  struct Block {
    std::string attn_norm, q, k, v, o, mlp_norm, gate, up, down;
  };
  std::string embedding, final_norm;
  std::string head;  // the lm_head linear layer; empty when tied to the embedding
  bool head_quantized = false;  // the head's input is quantized per token (an 8-bit head)
  std::vector<Block> blocks;
};

// Verifies the structure above (after check_graph) and returns its layers.
LmGraphLayers check_lm_graph(const Artifact& a);

// The decoder's shape (metadata 'lm').
LmShape lm_shape(const Artifact& a);

// Artifact -> decoder weights. A master artifact runs at its highest width (switch it first for
// another: switch_uniform / switch_widths). The 8-bit embedding is stored dequantized
// (code * scale in float, as training's quantizer computes it); an 8-bit head, tied or not,
// becomes an integer layer. `isa` is passed to every LmLinear.
std::shared_ptr<LmDecoderWeights> lm_decoder_weights(const Artifact& a, QgemmIsa isa = QgemmIsa::kAuto);

}  // namespace bitswitch::deploy
