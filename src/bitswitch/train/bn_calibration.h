// BatchNorm re-estimation after training. The running statistics a run ends with are an
// exponential average (momentum 0.1) over the last augmented training batches, taken while
// the weights still moved; this recomputes them for the final weights as plain averages over a
// fixed set of batches (for the widths of switchable BN, SPEC.md Sec. 3, each width's own BN).
// Only running means and variances change; BN weights, biases, scales and conv weights do not.
#pragma once
#include <cstdint>
#include <vector>

#include "bitswitch/data/loader.h"
#include "bitswitch/models/model.h"
#include "bitswitch/nn/bit_config.h"

namespace bitswitch::train {

class Distributed;

// For each configuration in `configs`, resets the running statistics of the BNs that the
// configuration selects and re-estimates them from the first `max_batches` batches of `loader`
// (0: the whole epoch) as cumulative averages. With `dist`, each rank reads its shard and the
// statistics are averaged over the ranks. Returns the number of images read per configuration.
int64_t recalibrate_bn(models::ModelImpl& model, data::BatchSource& loader, const std::vector<nn::BitConfig>& configs,
                       int64_t max_batches, Distributed* dist = nullptr);

}  // namespace bitswitch::train
