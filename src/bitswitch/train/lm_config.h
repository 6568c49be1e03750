// The configuration of a language-model run (`bitswitch lm-train`): every option with its
// default, a JSON/YAML file form (configs/lm-*.yaml) and strict validation (unknown fields and
// wrong types are errors naming the field). SPEC.md Sec. 9.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace bitswitch::train {

struct LmConfig {
  // model
  std::string model = "llama";
  nlohmann::json arch = {{"preset", "tiny"}};  // models/llama.h: a preset plus overrides
  std::vector<int> bits = {8, 6, 4, 2};
  int first_last_bits = 32;                    // embedding and head: 32 (FP) or 8
  std::string second_rounding = "half-up";     // or "floor"
  bool exact_scale_grad = false;
  // data (data/text.h)
  std::vector<std::string> data = {"/usr/share/games/fortunes"};
  double heldout_fraction = 0.05;
  std::string tokenizer = "sentencepiece";     // or "byte"
  int64_t vocab = 2048;                        // sentencepiece only
  std::string spm_model_type = "bpe";          // or "unigram"
  // schedule (in optimizer steps; one step = `batch` windows of `context` tokens)
  int64_t fp_steps = 1000;                     // FP32 pre-training (skipped with `init`)
  int64_t steps = 500;                         // joint training of all widths (one step per width)
  int64_t batch = 32;
  int64_t warmup_steps = 50;
  int64_t eval_interval = 0;                   // evaluate (and checkpoint) every N steps; 0: phase ends
  int64_t eval_windows = 0;                    // held-out windows per evaluation (0: all)
  // optimisers (AdamW; cosine schedule after the warm-up)
  double fp_lr = 2e-3;
  double fp_weight_decay = 0.1;
  double lr = 5e-4;
  double weight_decay = 0.01;
  bool alrs = true;                            // SPEC Sec. 5 (an ablation for LMs, Sec. 9)
  std::string joint_mode = "per-width";        // or "summed"
  bool kd = false;                             // self-distillation from the highest width
  // run
  std::string init;                            // an LM checkpoint (FP32 or joint) to start from
  std::string out = "runs/lm";
  bool resume = false;
  int64_t stop_after = 0;                      // stop after N steps in this invocation (0: run all)
  int threads = 0;
  uint64_t seed = 1;
  double log_interval = 10.0;

  nlohmann::json to_json() const;
  // Reads fields from `j`; unknown fields and wrong types are errors naming `source` and the field.
  void merge_json(const nlohmann::json& j, const std::string& source);
  void validate() const;
};

}  // namespace bitswitch::train
