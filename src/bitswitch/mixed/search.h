// Mixed-precision search: per-layer widths by ILP under budgets, a budget sweep to a Pareto
// front, and evaluation of every candidate on the test set without retraining (SPEC.md
// Sec. 6.4; paper Sec. 3.4).
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bitswitch/mixed/hessian.h"
#include "bitswitch/mixed/ilp.h"

namespace bitswitch::mixed {  // (data::Loader and models::ModelImpl are declared in hessian.h)

// One budget swept over [from, to] in `steps` evenly spaced values (SPEC Sec. 6.4).
struct Sweep {
  std::string kind;  // "avg-bits", "bytes" or "bitops"; empty: no sweep
  double from = 0, to = 0;
  int steps = 0;
  std::vector<double> values() const;
};
// Parses "KIND:FROM:TO:STEPS", e.g. "avg-bits:2:8:13"; errors name `what`.
Sweep parse_sweep(const std::string& text, const std::string& what = "--sweep");

struct SearchOptions {
  Objective objective = Objective::kMaxTraceBits;
  Budgets budgets;  // fixed budgets; a swept budget replaces its kind
  Sweep sweep;
  int random_configs = 0;  // per ILP candidate: random placements of its widths over the layers
  bool uniform = true;     // also evaluate every uniform width
  uint64_t seed = 1;
  int pick = -1;           // the chosen ILP candidate by index (-1: the most accurate)
};

struct Candidate {
  std::string kind;     // "ilp", "uniform" or "random"
  std::string budget;   // for "ilp": e.g. "avg-bits <= 4"
  int source = -1;      // for "random": index of the ILP candidate whose widths it permutes
  std::vector<int> widths;  // per layer, in problem order
  ConfigCost cost;
  double accuracy = 0, loss = 0;
  bool pareto = false;  // not dominated in (cost of the swept kind, accuracy) among all candidates
};

struct SearchResult {
  IlpProblem problem;
  std::vector<Candidate> candidates;
  int chosen = -1;  // index into candidates
  int64_t test_images = 0;
  std::map<std::string, int> chosen_layer_bits() const;
};

// The ILP of `model` (at its current weights and scales) with the traces of `traces` (matched by
// layer name; negative estimates count as 0): parameters, MACs per sample (one forward of `sample` at the highest width) and,
// for the HAWQ objective, ||Q_b(W) - W||^2 by Double Rounding with the layer's learned scale.
// fixed_bytes: fixed-width layers' weights at their width, their biases and the config-following
// layers' per-channel weight scales (FP32); BN and activation scales are not counted.
IlpProblem build_problem(models::ModelImpl& model, const TraceReport& traces, Objective objective,
                         const torch::Tensor& sample);

// Solves for each budget (the sweep's points, or the fixed budgets once), evaluates every
// distinct candidate (and uniform widths, random placements) on `test`, marks the Pareto front.
// Sweep points whose budget is infeasible are skipped with a message; if none is feasible, the
// solver's error propagates.
SearchResult run_search(models::ModelImpl& model, data::Loader& test, const TraceReport& traces,
                        const SearchOptions& options, const torch::Tensor& sample);

nlohmann::json search_to_json(const SearchResult& r, const SearchOptions& options);

}  // namespace bitswitch::mixed
