// Internal: constructors the registry knows about.
#pragma once
#include "bitswitch/models/model.h"

namespace bitswitch::nn {
struct QuantOptions;
}

namespace bitswitch::models {
Model make_resnet20(const ModelSpec& spec);
Model make_small_cnn(const ModelSpec& spec);
Model make_resnet18(const ModelSpec& spec);
Model make_resnet50(const ModelSpec& spec);
Model make_mobilenetv2(const ModelSpec& spec);
Model make_llama(const ModelSpec& spec);  // models/llama.h

// Quantizer options of the layers that follow the bit config, and of the first conv / last
// linear (`first_last_bits`); stem_options: the first conv, on the image (its input quantized,
// signed, only with `quantize_image`).
nn::QuantOptions quant_options(const ModelSpec& spec);
nn::QuantOptions edge_options(const ModelSpec& spec, bool quantize_input);
nn::QuantOptions stem_options(const ModelSpec& spec);
}  // namespace bitswitch::models
