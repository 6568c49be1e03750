// HASB roulette and per-step width draws (SPEC.md Sec. 6.2-6.3; paper Sec. 3.4).
#include "bitswitch/mixed/roulette.h"

#include <numeric>

#include "bitswitch/util/error.h"

namespace bitswitch::mixed {

Roulette Roulette::uniform(size_t layers, const std::vector<int>& bits) {
  BS_CHECK(!bits.empty(), "roulette: empty bit list");
  Roulette r;
  r.bits_ = bits;
  r.probs_.assign(layers, std::vector<double>(bits.size(), 1.0 / double(bits.size())));
  r.sensitive_.assign(layers, false);
  return r;
}

Roulette Roulette::hessian(const std::vector<double>& traces, const std::vector<int>& bits) {
  BS_CHECK(!traces.empty(), "roulette: no layer traces");
  Roulette r = uniform(traces.size(), bits);
  const double mean = std::accumulate(traces.begin(), traces.end(), 0.0) / double(traces.size());
  const double total = std::accumulate(bits.begin(), bits.end(), 0.0);
  for (size_t l = 0; l < traces.size(); ++l) {
    if (traces[l] < mean) continue;
    r.sensitive_[l] = true;
    for (size_t i = 0; i < bits.size(); ++i) r.probs_[l][i] = bits[i] / total;
  }
  return r;
}

int Roulette::draw(size_t layer, std::mt19937_64& rng) const {
  const auto& p = probs_.at(layer);
  std::discrete_distribution<size_t> d(p.begin(), p.end());
  return bits_[d(rng)];
}

double hasb_sigma(double sigma, int epoch, int epochs, int warmup) {
  if (epoch < warmup || epochs <= 0) return 0.0;
  return sigma * double(epoch + 1) / double(epochs);
}

std::vector<int> draw_layer_widths(const Roulette& roulette, int bits, double sigma_e, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<int> out(roulette.layers(), bits);
  for (size_t l = 0; l < out.size(); ++l)
    if (u(rng) < sigma_e) out[l] = roulette.draw(l, rng);
  return out;
}

std::mt19937_64 step_rng(uint64_t seed, int epoch, int64_t iteration, int width_index) {
  std::seed_seq seq{uint32_t(seed), uint32_t(seed >> 32), uint32_t(epoch), uint32_t(iteration),
                    uint32_t(uint64_t(iteration) >> 32), uint32_t(width_index), 0x4841u /* "HA" */};
  return std::mt19937_64(seq);
}

}  // namespace bitswitch::mixed
