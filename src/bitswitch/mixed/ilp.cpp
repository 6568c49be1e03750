// Exact per-layer width selection with GLPK (SPEC.md Sec. 6.4).
// Variables x_{l,i} in {0,1}: layer l takes width bits[i]; sum_i x_{l,i} = 1 per layer.
// Each budget is one linear row over the x; the objective is linear in the x.
#include "bitswitch/mixed/ilp.h"

#include <glpk.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "bitswitch/util/error.h"

namespace bitswitch::mixed {

Objective parse_objective(const std::string& name) {
  if (name == "reference") return Objective::kMaxTraceBits;
  if (name == "hawq") return Objective::kMinTraceError;
  fail("objective must be reference (maximise sum trace x bits) or hawq (minimise sum trace x quantization error), got '",
       name, "'");
}

std::string objective_name(Objective o) { return o == Objective::kMaxTraceBits ? "reference" : "hawq"; }

int64_t layer_bytes(int64_t params, int bits) { return (params * bits + 7) / 8; }
double layer_bitops(int64_t macs, int bits) { return double(macs) * bits * bits; }

namespace {

// Objective coefficient of layer l at width index i (to be maximised or minimised).
double coefficient(const IlpProblem& p, size_t l, size_t i) {
  const auto& layer = p.layers[l];
  if (p.objective == Objective::kMaxTraceBits) return layer.trace * p.bits[i];
  return layer.trace * layer.quant_error.at(i);
}

void check_problem(const IlpProblem& p) {
  BS_CHECK(!p.bits.empty(), "search: empty bit list");
  BS_CHECK(!p.layers.empty(), "search: no layers to choose widths for");
  for (const auto& l : p.layers) {
    BS_CHECK(std::isfinite(l.trace), "search: layer '", l.name, "' has a non-finite trace");
    if (p.objective == Objective::kMinTraceError)
      BS_CHECK(l.quant_error.size() == p.bits.size(), "search: layer '", l.name, "' has ", l.quant_error.size(),
               " quantization errors for ", p.bits.size(), " widths");
  }
}

// The budgets that the all-lowest-width configuration already violates: no solution exists.
void check_budgets_reachable(const IlpProblem& p) {
  const int low = *std::min_element(p.bits.begin(), p.bits.end());
  const auto lowest = config_cost(p, std::vector<int>(p.layers.size(), low));
  const auto& b = p.budgets;
  BS_CHECK(!b.avg_bits || lowest.avg_bits <= *b.avg_bits + 1e-9, "search: infeasible budget: average bits <= ",
           *b.avg_bits, " cannot be met (the smallest average is ", lowest.avg_bits, ", every layer at ", low, " bits)");
  BS_CHECK(!b.bytes || lowest.bytes <= *b.bytes + 1e-9, "search: infeasible budget: model bytes <= ",
           int64_t(*b.bytes), " cannot be met (the smallest model is ", int64_t(lowest.bytes), " bytes, every layer at ",
           low, " bits)");
  BS_CHECK(!b.bitops || lowest.bitops <= *b.bitops * (1 + 1e-12), "search: infeasible budget: BitOPs <= ", *b.bitops,
           " cannot be met (the smallest is ", lowest.bitops, ", every layer at ", low, " bits)");
}

struct GlpDeleter {
  void operator()(glp_prob* p) const { glp_delete_prob(p); }
};

}  // namespace

ConfigCost config_cost(const IlpProblem& p, const std::vector<int>& widths) {
  BS_CHECK(widths.size() == p.layers.size(), "search: ", widths.size(), " widths for ", p.layers.size(), " layers");
  ConfigCost c;
  c.bytes = p.fixed_bytes;
  for (size_t l = 0; l < widths.size(); ++l) {
    const auto it = std::find(p.bits.begin(), p.bits.end(), widths[l]);
    BS_CHECK(it != p.bits.end(), "search: width ", widths[l], " of layer '", p.layers[l].name, "' is not a candidate");
    const size_t i = size_t(it - p.bits.begin());
    if (p.objective == Objective::kMaxTraceBits || !p.layers[l].quant_error.empty()) c.objective += coefficient(p, l, i);
    c.avg_bits += widths[l];
    c.bytes += double(layer_bytes(p.layers[l].params, widths[l]));
    c.bitops += layer_bitops(p.layers[l].macs, widths[l]);
  }
  c.avg_bits /= double(widths.size());
  return c;
}

IlpSolution solve_ilp(const IlpProblem& p) {
  check_problem(p);
  check_budgets_reachable(p);
  const size_t L = p.layers.size(), B = p.bits.size();
  std::unique_ptr<glp_prob, GlpDeleter> lp(glp_create_prob());
  glp_set_obj_dir(lp.get(), p.objective == Objective::kMaxTraceBits ? GLP_MAX : GLP_MIN);
  glp_add_cols(lp.get(), int(L * B));
  auto col = [&](size_t l, size_t i) { return int(l * B + i + 1); };
  for (size_t l = 0; l < L; ++l)
    for (size_t i = 0; i < B; ++i) {
      glp_set_col_kind(lp.get(), col(l, i), GLP_BV);
      glp_set_obj_coef(lp.get(), col(l, i), coefficient(p, l, i));
    }
  // Rows: one choice per layer, then each budget. GLPK arrays are 1-based.
  std::vector<int> ind(L * B + 1);
  std::vector<double> val(L * B + 1);
  for (size_t l = 0; l < L; ++l) {
    const int row = glp_add_rows(lp.get(), 1);
    for (size_t i = 0; i < B; ++i) ind[i + 1] = col(l, i), val[i + 1] = 1.0;
    glp_set_mat_row(lp.get(), row, int(B), ind.data(), val.data());
    glp_set_row_bnds(lp.get(), row, GLP_FX, 1.0, 1.0);
  }
  auto add_budget = [&](double bound, auto cost) {
    const int row = glp_add_rows(lp.get(), 1);
    for (size_t l = 0; l < L; ++l)
      for (size_t i = 0; i < B; ++i) ind[l * B + i + 1] = col(l, i), val[l * B + i + 1] = cost(l, i);
    glp_set_mat_row(lp.get(), row, int(L * B), ind.data(), val.data());
    glp_set_row_bnds(lp.get(), row, GLP_UP, 0.0, bound);
  };
  const auto& b = p.budgets;
  // Average bits as a sum (integers, exact): sum_l b_l <= L * avg.
  if (b.avg_bits) add_budget(std::floor(*b.avg_bits * double(L) + 1e-9), [&](size_t, size_t i) { return double(p.bits[i]); });
  if (b.bytes)
    add_budget(*b.bytes - p.fixed_bytes, [&](size_t l, size_t i) { return double(layer_bytes(p.layers[l].params, p.bits[i])); });
  if (b.bitops) add_budget(*b.bitops, [&](size_t l, size_t i) { return layer_bitops(p.layers[l].macs, p.bits[i]); });

  glp_iocp parm;
  glp_init_iocp(&parm);
  parm.presolve = GLP_ON;
  parm.msg_lev = GLP_MSG_OFF;
  parm.mip_gap = 0.0;
  const int rc = glp_intopt(lp.get(), &parm);
  const int status = glp_mip_status(lp.get());
  BS_CHECK(rc != GLP_ENOPFS && status != GLP_NOFEAS,
           "search: infeasible budgets: no per-layer configuration meets all of them together");
  BS_CHECK(rc == 0 && status == GLP_OPT, "search: the ILP solver failed (glp_intopt code ", rc, ", status ", status, ")");

  IlpSolution s;
  s.widths.resize(L);
  for (size_t l = 0; l < L; ++l) {
    size_t chosen = B;
    for (size_t i = 0; i < B; ++i)
      if (glp_mip_col_val(lp.get(), col(l, i)) > 0.5) chosen = i;
    BS_CHECK(chosen < B, "search: the ILP solver returned no width for layer '", p.layers[l].name, "'");
    s.widths[l] = p.bits[chosen];
  }
  s.cost = config_cost(p, s.widths);
  return s;
}

}  // namespace bitswitch::mixed
