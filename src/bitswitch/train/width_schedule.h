// The bit configuration of each step of joint training, as the trainer receives it. Plain joint
// training (paper Alg. A.2) runs every width uniformly; HASB SuperNet training (SPEC.md Sec. 6.3,
// paper Sec. 3.4) lets layers switch widths by a Hessian-aware roulette. The trainer knows only
// this interface; mixed/hasb.h implements HASB, and the CLI hands it to the trainer, so that
// train depends on nothing in mixed (mixed builds on train).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "bitswitch/models/model.h"
#include "bitswitch/nn/bit_config.h"

namespace bitswitch::train {

class WidthSchedule {
 public:
  virtual ~WidthSchedule() = default;
  // Called once with the model the trainer built and its trained widths (highest first), before
  // any step. Returns a line for the log describing the schedule.
  virtual std::string attach(models::ModelImpl& model, const std::vector<int>& bits) = 0;
  // Called when the joint phase starts from the checkpoint `init`, after its weights are loaded;
  // `from_fp`: it was an FP32 checkpoint. May refuse (throw bitswitch::Error) or adapt the model.
  virtual void start_from(models::ModelImpl& model, const std::string& init, bool from_fp) = 0;
  // The configuration of step `iteration` of joint epoch `epoch` at the `width_index`-th width
  // `bits`. Must be a pure function of its arguments (and of the schedule's construction), so
  // that every data-parallel rank and a resumed run choose alike.
  virtual nn::BitConfig step_bits(int epoch, int64_t iteration, size_t width_index, int bits) = 0;
};

}  // namespace bitswitch::train
