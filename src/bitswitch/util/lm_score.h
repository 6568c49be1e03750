// Held-out language-model scores (SPEC.md Sec. 9): one definition for the trainer's evaluation
// (train::evaluate_lm, LibTorch) and the integer decoder's (deploy::lm_score), so `bitswitch
// perplexity` and the training log report the same quantities from the same sums.
#pragma once
#include <cmath>
#include <cstdint>

namespace bitswitch {

struct LmScore {
  double loss = 0;           // mean cross-entropy per predicted token (nats)
  double perplexity = 0;     // exp(loss)
  double bits_per_byte = 0;  // summed loss / (ln 2 * bytes of the predicted tokens)
  int64_t windows = 0, tokens = 0, bytes = 0;

  // From the summed cross-entropy `nll_sum` (nats) over `tokens` predicted tokens that stand for
  // `bytes` bytes of text, scored in `windows` windows.
  static LmScore from_sums(double nll_sum, int64_t tokens, int64_t bytes, int64_t windows) {
    LmScore r;
    r.windows = windows, r.tokens = tokens, r.bytes = bytes;
    r.loss = tokens > 0 ? nll_sum / double(tokens) : 0;
    r.perplexity = std::exp(r.loss);
    r.bits_per_byte = bytes > 0 ? nll_sum / (std::log(2.0) * double(bytes)) : 0;
    return r;
  }
};

}  // namespace bitswitch
