// Held-out scoring by the integer decoder (SPEC.md Sec. 9); see lm_eval.h.
#include "bitswitch/deploy/lm_eval.h"

#include <algorithm>
#include <cmath>

#include "bitswitch/util/error.h"

namespace bitswitch::deploy {

LmScore lm_score(LmDecoder& decoder, const std::vector<int32_t>& tokens, const std::vector<int64_t>& token_bytes,
                 int64_t max_windows) {
  const int64_t ctx = decoder.shape().context, vocab = decoder.shape().vocab;
  BS_CHECK(int64_t(token_bytes.size()) == vocab, "lm_score: ", token_bytes.size(), " byte counts for a vocabulary of ",
           vocab);
  int64_t windows = tokens.size() > size_t(ctx) ? int64_t(tokens.size() - 1) / ctx : 0;
  BS_CHECK(windows > 0, "lm_score: ", tokens.size(), " tokens are fewer than one window of ", ctx + 1);
  if (max_windows > 0) windows = std::min(windows, max_windows);
  std::vector<float> logits(size_t(ctx * vocab));
  double loss = 0;
  int64_t bytes = 0;
  for (int64_t w = 0; w < windows; ++w) {
    decoder.reset();
    decoder.forward(tokens.data() + w * ctx, int(ctx), logits.data(), /*all_logits=*/true);
    for (int64_t t = 0; t < ctx; ++t) {
      const float* row = logits.data() + t * vocab;
      const int32_t target = tokens[size_t(w * ctx + t + 1)];
      BS_CHECK(target >= 0 && target < vocab, "lm_score: token ", target, " is outside the vocabulary of ", vocab);
      double mx = row[0];
      for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, double(row[v]));
      double z = 0;
      for (int64_t v = 0; v < vocab; ++v) z += std::exp(double(row[v]) - mx);
      loss += std::log(z) + mx - double(row[target]);
      bytes += token_bytes[size_t(target)];
    }
  }
  return LmScore::from_sums(loss, windows * ctx, bytes, windows);
}

}  // namespace bitswitch::deploy
