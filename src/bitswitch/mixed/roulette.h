// Hessian-aware stochastic bit-switching (HASB): the per-layer width roulette and the
// per-iteration draw of SuperNet training (SPEC.md Sec. 6.2-6.3; paper Sec. 3.4).
#pragma once
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace bitswitch::mixed {

// Probabilities of each candidate width, per layer.
class Roulette {
 public:
  // SPEC Sec. 6.2: a layer whose average trace is below the mean of all layers' traces draws
  // uniformly; a sensitive layer (trace >= mean) draws width b_i with p_i = b_i / sum(B).
  static Roulette hessian(const std::vector<double>& traces, const std::vector<int>& bits);
  // The ablation: every layer draws uniformly.
  static Roulette uniform(size_t layers, const std::vector<int>& bits);

  const std::vector<int>& bits() const { return bits_; }
  size_t layers() const { return probs_.size(); }
  const std::vector<double>& probabilities(size_t layer) const { return probs_.at(layer); }
  bool sensitive(size_t layer) const { return sensitive_.at(layer); }
  int draw(size_t layer, std::mt19937_64& rng) const;

 private:
  std::vector<int> bits_;
  std::vector<std::vector<double>> probs_;
  std::vector<bool> sensitive_;
};

// sigma_e = sigma * (e + 1) / E for epoch e of E, and 0 during the first `warmup` epochs.
double hasb_sigma(double sigma, int epoch, int epochs, int warmup);

// The widths of one step at width `bits` (SPEC Sec. 6.3): each layer keeps `bits` or, with
// probability `sigma_e`, redraws its width by the roulette. Returned in layer order.
std::vector<int> draw_layer_widths(const Roulette& roulette, int bits, double sigma_e, std::mt19937_64& rng);

// A generator for step (epoch, iteration, width index) of a run with `seed`: the draws depend
// only on these, so an interrupted and resumed run draws the same widths.
std::mt19937_64 step_rng(uint64_t seed, int epoch, int64_t iteration, int width_index);

}  // namespace bitswitch::mixed
