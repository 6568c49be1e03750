// Helpers of the language-model deployment tests: tiny Llama models with initialised quantizer
// scales (random weights, seeded), as test_lm_deploy.cpp and the decoder equivalence tests use.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "bitswitch/models/llama.h"
#include "bitswitch/nn/layers.h"

namespace bitswitch::lmtest {

inline models::ModelSpec tiny_llama_spec(const nlohmann::json& arch_overrides, int edge_bits, std::vector<int> bits,
                                         int64_t vocab = 96) {
  models::ModelSpec s;
  s.name = "llama";
  s.num_classes = vocab;
  s.bits = std::move(bits);
  s.first_last_bits = edge_bits;
  nlohmann::json arch = {{"dim", 64}, {"layers", 2}, {"heads", 4}, {"kv_heads", 2}, {"mlp", 128}, {"context", 96}};
  for (const auto& [k, v] : arch_overrides.items()) arch[k] = v;
  s.arch = models::resolve_llama_arch(arch, "test");
  return s;
}

// A tiny Llama with seeded random weights (std `weight_std`, larger than the init's 0.02 so that
// logits are far from ties) and every weight scale initialised by one quantized forward.
inline std::shared_ptr<models::LlamaImpl> tiny_llama(const nlohmann::json& arch_overrides, int edge_bits,
                                                     std::vector<int> bits, uint64_t seed, double weight_std = 0.08,
                                                     int64_t vocab = 96) {
  torch::manual_seed(seed);
  const auto spec = tiny_llama_spec(arch_overrides, edge_bits, bits, vocab);
  auto m = std::dynamic_pointer_cast<models::LlamaImpl>(models::create_model(spec));
  torch::NoGradGuard ng;
  for (auto& p : m->named_parameters()) {
    const auto& n = p.key();
    if (n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0 && p.value().dim() == 2)
      p.value().normal_(0.0, n.find("embed_tokens") != std::string::npos ? 1.0 : weight_std);
    else if (n.find("layernorm.weight") != std::string::npos || n == "model.norm.weight")
      p.value().uniform_(0.5, 1.5);
  }
  m->train();
  nn::apply_bits(*m, nn::BitConfig::uniform(bits.front()));
  (void)m->forward(torch::randint(0, vocab, {1, 8}, torch::kInt64));
  m->eval();
  return m;
}

}  // namespace bitswitch::lmtest
