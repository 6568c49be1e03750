// Internal: constructors the registry knows about.
#pragma once
#include "bitswitch/models/model.h"

namespace bitswitch::models {
Model make_resnet20(const ModelSpec& spec);
Model make_small_cnn(const ModelSpec& spec);
}  // namespace bitswitch::models
