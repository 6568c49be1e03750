// HASB SuperNet training's width schedule (SPEC.md Sec. 6.3; paper Sec. 3.4): at each step at
// width b, each layer keeps b or, with probability sigma_e, redraws its width by the Hessian-aware
// (or uniform) roulette of mixed/roulette.h. The trainer receives it as a train::WidthSchedule.
#pragma once
#include <memory>

#include "bitswitch/train/config.h"
#include "bitswitch/train/width_schedule.h"

namespace bitswitch::mixed {

// The schedule `config` describes: roulette (hessian with the traces file `traces`, or
// uniform), hasb_sigma, hasb_warmup_epochs, epochs and seed. The traces file is read when the
// schedule is attached to the model (errors name the file and a missing layer).
std::unique_ptr<train::WidthSchedule> hasb_schedule(const train::TrainConfig& config);

}  // namespace bitswitch::mixed
