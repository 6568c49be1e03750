// Language-model training: FP32 pre-training, then one-shot joint training of the bit list
// (SPEC.md Sec. 4, 5 and 9; paper Sec. 3.2-3.3, 4.3): every step runs all widths highest first,
// each with its own forward, backward and optimizer step (or one summed step), ALRS on the
// scale/norm group (or --no-alrs), optional self-distillation from the highest width.
// Evaluation per width: held-out cross-entropy, perplexity exp(loss), bits per byte.
#pragma once
#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "bitswitch/data/text.h"
#include "bitswitch/models/llama.h"
#include "bitswitch/nn/bit_config.h"
#include "bitswitch/train/lm_config.h"
#include "bitswitch/util/lm_score.h"

namespace bitswitch::train {

using LmEval = LmScore;  // util/lm_score.h: the decoder's perplexity uses the same definition

// Evaluates `model` at `bits` on the first `max_windows` (0: all) windows of `windows`, in order,
// in eval mode without gradients; `tokenizer` gives each target token's byte count.
LmEval evaluate_lm(models::LlamaImpl& model, const data::TokenWindows& windows, const data::Tokenizer& tokenizer,
                   const nn::BitConfig& bits, int64_t max_windows = 0, int64_t batch = 16);

struct LmResult {
  nlohmann::json perplexity, bits_per_byte, loss;  // {"fp32": .., "w8": .., ...}
  double seconds = 0;
  bool finished = false;
  std::string checkpoint;
};

// Runs the job of `config` and writes its run directory: config.json, metrics.jsonl,
// summary.json, checkpoint.pt, fp32.pt (after the FP phase) and tokenizer.model (sentencepiece).
LmResult run_lm_training(LmConfig config);

// True for a checkpoint written by the LM trainer (its meta holds "task": "lm").
bool is_lm_checkpoint(const nlohmann::json& meta);

// A trained LM with its tokenizer, loaded from a checkpoint.
struct LoadedLm {
  std::shared_ptr<models::LlamaImpl> model;
  std::shared_ptr<data::Tokenizer> tokenizer;
  LmConfig config;  // the run's config
};
LoadedLm load_lm_checkpoint(const std::string& path);

// Continues `prompt` by `tokens` tokens at `bits`: sampling with `temperature` from the `top_k`
// likeliest tokens (temperature 0: greedy), seeded. The prompt is cut to the model's context.
std::string lm_generate(models::LlamaImpl& model, const data::Tokenizer& tokenizer, const std::string& prompt,
                        const nn::BitConfig& bits, int64_t tokens, double temperature, int64_t top_k, uint64_t seed);

}  // namespace bitswitch::train
