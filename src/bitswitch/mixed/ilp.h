// The per-layer bit-width choice as an integer linear program (SPEC.md Sec. 6.4; the
// reference objective of the paper's Sec. 3.4 and the HAWQ-V3 objective of Yao et al. 2021,
// Sec. 3.3), solved exactly with GLPK's branch and cut.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace bitswitch::mixed {

enum class Objective {
  kMaxTraceBits,   // reference: maximise sum_l t_l * b_l
  kMinTraceError,  // HAWQ-V3: minimise sum_l t_l * ||Q_b(W_l) - W_l||^2
};
Objective parse_objective(const std::string& name);  // "reference" or "hawq"
std::string objective_name(Objective o);

struct IlpLayer {
  std::string name;
  double trace = 0;                 // average Hessian trace t_l
  int64_t params = 0;               // weight elements
  int64_t macs = 0;                 // multiply-accumulates per sample
  std::vector<double> quant_error;  // ||Q_b(W) - W||^2 per candidate width (HAWQ objective)
};

// Budgets (upper bounds); a missing one does not constrain.
struct Budgets {
  std::optional<double> avg_bits;  // mean over layers of b_l
  std::optional<double> bytes;     // fixed_bytes + sum_l ceil(params_l * b_l / 8)
  std::optional<double> bitops;    // sum_l macs_l * b_l * b_l (weights and inputs share b_l)
};

struct IlpProblem {
  std::vector<int> bits;  // candidate widths
  std::vector<IlpLayer> layers;
  Objective objective = Objective::kMaxTraceBits;
  Budgets budgets;
  double fixed_bytes = 0;  // bytes that do not depend on the choice
};

// Costs of one per-layer choice.
int64_t layer_bytes(int64_t params, int bits);    // ceil(params * bits / 8)
double layer_bitops(int64_t macs, int bits);      // macs * bits * bits
struct ConfigCost {
  double objective = 0, avg_bits = 0, bytes = 0, bitops = 0;
};
// `widths[l]` is layer l's width (one of problem.bits).
ConfigCost config_cost(const IlpProblem& problem, const std::vector<int>& widths);

struct IlpSolution {
  std::vector<int> widths;  // per layer
  ConfigCost cost;
};

// Solves the ILP exactly. Throws bitswitch::Error when a budget cannot be met, naming it and
// the smallest value it can take (every layer at the lowest width).
IlpSolution solve_ilp(const IlpProblem& problem);

}  // namespace bitswitch::mixed
