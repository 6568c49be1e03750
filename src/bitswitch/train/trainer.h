// FP32 training and one-shot joint multi-precision training (SPEC.md Sec. 4-5; paper Sec. 3.2-3.3,
// Alg. A.2 with the summed-loss Alg. A.1 as an option), with evaluation, checkpoints and resume.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "bitswitch/models/model.h"
#include "bitswitch/nn/bit_config.h"
#include "bitswitch/train/config.h"

namespace bitswitch::train {

class WidthSchedule;

struct TrainResult {
  nlohmann::json accuracy;  // {"fp32": .., "w8": .., ...} from the last evaluation
  double seconds = 0;       // training time over all invocations of the run
  bool finished = false;    // false when stopped early by `stop_after`
  std::string checkpoint;
  bool main_process = true;  // false on data-parallel ranks other than 0 (they write nothing)
};

// Runs the whole job described by `config` and writes the run directory:
// config.json, metrics.jsonl, summary.json, checkpoint.pt (and fp32.pt after the FP phase).
// `schedule` chooses each joint step's bit configuration (train/width_schedule.h); null: every
// width uniformly. `config.hasb` needs HASB's schedule (mixed::hasb_schedule).
// Evaluation is eval::evaluate (eval/evaluate.h).
TrainResult run_training(TrainConfig config, WidthSchedule* schedule = nullptr);

// The model spec a config describes on a dataset with `in_channels` and `num_classes`.
models::ModelSpec spec_from_config(const TrainConfig& config, int64_t in_channels, int64_t num_classes);

// Sets torch's thread count: `threads` or, when 0, all hardware threads shared by `processes`
// processes on this machine. Returns the count.
int configure_threads(int threads, int processes = 1);

}  // namespace bitswitch::train
