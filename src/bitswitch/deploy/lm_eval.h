// Held-out scoring of a token stream by the integer decoder (SPEC.md Sec. 9): what `bitswitch
// perplexity` reports and the equivalence tests hold against the trainer's evaluate_lm. Windows
// as data::TokenWindows cuts them: window i has inputs tokens[i * T, i * T + T) and targets
// shifted by one (T = the model's context), each scored from an empty KV cache by one prefill.
// Torch-free.
#pragma once
#include <cstdint>
#include <vector>

#include "bitswitch/deploy/lm_decoder.h"
#include "bitswitch/util/lm_score.h"

namespace bitswitch::deploy {

using bitswitch::LmScore;  // util/lm_score.h

// Scores the first `max_windows` (0: all) complete windows of `tokens`; `token_bytes[id]` is the
// number of text bytes token id stands for. Log-softmax in double.
LmScore lm_score(LmDecoder& decoder, const std::vector<int32_t>& tokens, const std::vector<int64_t>& token_bytes,
                 int64_t max_windows = 0);

}  // namespace bitswitch::deploy
