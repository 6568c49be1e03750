// Mixed-precision search by ILP, budget sweep and evaluation (SPEC.md Sec. 6.4).
#include "bitswitch/mixed/search.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include <fmt/format.h>

#include "bitswitch/data/loader.h"
#include "bitswitch/eval/evaluate.h"
#include "bitswitch/models/model.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/util/error.h"

namespace bitswitch::mixed {

using json = nlohmann::json;

std::vector<double> Sweep::values() const {
  std::vector<double> v;
  for (int i = 0; i < steps; ++i) v.push_back(steps == 1 ? from : from + (to - from) * i / double(steps - 1));
  return v;
}

Sweep parse_sweep(const std::string& text, const std::string& what) {
  std::vector<std::string> parts;
  size_t start = 0, pos;
  while ((pos = text.find(':', start)) != std::string::npos) parts.push_back(text.substr(start, pos - start)), start = pos + 1;
  parts.push_back(text.substr(start));
  BS_CHECK(parts.size() == 4, what, ": '", text, "' must be KIND:FROM:TO:STEPS, e.g. avg-bits:2:8:13");
  Sweep s;
  s.kind = parts[0];
  BS_CHECK(s.kind == "avg-bits" || s.kind == "bytes" || s.kind == "bitops", what, ": budget kind '", s.kind,
           "' must be avg-bits, bytes or bitops");
  auto number = [&](const std::string& t, const char* field) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(t, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    BS_CHECK(used > 0 && used == t.size() && std::isfinite(v), what, ": ", field, " '", t, "' is not a number");
    return v;
  };
  s.from = number(parts[1], "FROM");
  s.to = number(parts[2], "TO");
  const double steps = number(parts[3], "STEPS");
  BS_CHECK(steps >= 1 && steps <= 1000 && steps == std::floor(steps), what, ": STEPS '", parts[3],
           "' must be an integer in [1, 1000]");
  s.steps = int(steps);
  return s;
}

std::map<std::string, int> SearchResult::chosen_layer_bits() const {
  BS_CHECK(chosen >= 0 && size_t(chosen) < candidates.size(), "search: no candidate was chosen");
  std::map<std::string, int> m;
  for (size_t l = 0; l < problem.layers.size(); ++l) m[problem.layers[l].name] = candidates[size_t(chosen)].widths[l];
  return m;
}

IlpProblem build_problem(models::ModelImpl& model, const TraceReport& traces, Objective objective,
                         const torch::Tensor& sample) {
  torch::NoGradGuard ng;
  auto layers = nn::quant_layers(model);
  BS_CHECK(!layers.empty(), "search: the model has no quantized layers that follow the bit configuration");
  IlpProblem p;
  p.bits = layers.front().second->quant_options().bits();
  p.objective = objective;
  const int high = p.bits.front();
  const bool was_training = model.is_training();
  model.eval();
  nn::apply_bits(model, nn::BitConfig::uniform(high));
  model.forward(sample.slice(0, 0, 1));
  model.train(was_training);

  std::map<std::string, double> trace_of;
  for (const auto& t : traces.layers) trace_of[t.name] = t.trace;
  for (auto& [name, q] : layers) {
    auto it = trace_of.find(name);
    BS_CHECK(it != trace_of.end(), "search: the traces file has no layer '", name,
             "' (was it written for this model? run `bitswitch hessian` on this checkpoint)");
    IlpLayer l;
    l.name = name;
    // A negative estimate is Hutchinson noise around a small trace (the loss is near a minimum):
    // it counts as 0, so that neither objective rewards a lower width for it.
    l.trace = std::max(0.0, it->second);
    const auto& w = q->weight_param();
    l.params = w.numel();
    l.macs = q->macs_per_sample();
    if (objective == Objective::kMinTraceError) {
      for (int b : p.bits) {
        quant::WeightQuantSpec spec{high, b, q->quant_options().rounding(), false};
        auto wq = quant::fake_quant_weight(w.detach(), q->weight_scale().detach(), spec);
        l.quant_error.push_back((wq - w.detach()).pow(2).sum().item<double>());
      }
    }
    p.layers.push_back(l);
  }
  BS_CHECK(trace_of.size() == layers.size(), "search: the traces file names ", trace_of.size(), " layers, the model has ",
           layers.size(), " quantized layers");
  // The parts that do not depend on the choice.
  for (const auto& item : model.named_modules("", false)) {
    auto q = std::dynamic_pointer_cast<nn::QuantLayer>(item.value());
    if (!q) continue;
    if (q->follows_config()) {
      p.fixed_bytes += 4.0 * double(q->weight_scale().numel());
      continue;
    }
    const int fb = q->quant_options().fixed_bits();
    p.fixed_bytes += double(layer_bytes(q->weight_param().numel(), fb));
    for (const auto& prm : item.value()->named_parameters(false))
      if (prm.key() == "bias") p.fixed_bytes += 4.0 * double(prm.value().numel());
    if (fb != nn::kFloatBits) p.fixed_bytes += 4.0 * double(q->weight_scale().numel());
  }
  return p;
}

namespace {

std::string widths_key(const std::vector<int>& w) {
  std::string s;
  for (int b : w) s += char('0' + b);
  return s;
}

double cost_of_kind(const ConfigCost& c, const std::string& kind) {
  if (kind == "bytes") return c.bytes;
  if (kind == "bitops") return c.bitops;
  return c.avg_bits;
}

std::string budget_label(const Budgets& b) {
  std::string s;
  auto add = [&](const std::string& t) { s += (s.empty() ? "" : ", ") + t; };
  if (b.avg_bits) add(fmt::format("avg-bits <= {:g}", *b.avg_bits));
  if (b.bytes) add(fmt::format("bytes <= {:.0f}", *b.bytes));
  if (b.bitops) add(fmt::format("bitops <= {:.4g}", *b.bitops));
  return s.empty() ? "none" : s;
}

void log(const std::string& s) { fmt::print(stderr, "[bitswitch] {}\n", s); }

}  // namespace

SearchResult run_search(models::ModelImpl& model, data::Loader& test, const TraceReport& traces,
                        const SearchOptions& o, const torch::Tensor& sample) {
  SearchResult r;
  r.problem = build_problem(model, traces, o.objective, sample);
  r.test_images = test.num_samples();
  auto& p = r.problem;

  // The ILP candidates.
  std::vector<Budgets> budgets;
  if (o.sweep.kind.empty()) {
    budgets.push_back(o.budgets);
  } else {
    for (double v : o.sweep.values()) {
      Budgets b = o.budgets;
      (o.sweep.kind == "avg-bits" ? b.avg_bits : o.sweep.kind == "bytes" ? b.bytes : b.bitops) = v;
      budgets.push_back(b);
    }
  }
  std::set<std::string> seen;
  std::string last_error;
  for (const auto& b : budgets) {
    p.budgets = b;
    IlpSolution s;
    try {
      s = solve_ilp(p);
    } catch (const Error& e) {
      if (budgets.size() == 1) throw;
      log(fmt::format("{}: skipped ({})", budget_label(b), e.what()));
      last_error = e.what();
      continue;
    }
    Candidate c;
    c.kind = "ilp";
    c.budget = budget_label(b);
    c.widths = s.widths;
    c.cost = s.cost;
    r.candidates.push_back(c);
  }
  BS_CHECK(!r.candidates.empty(), "search: no budget of the sweep is feasible (", last_error, ")");
  p.budgets = o.budgets;

  // Baselines: uniform widths and random placements of each ILP candidate's widths.
  const size_t n_ilp = r.candidates.size();
  if (o.uniform)
    for (int b : p.bits) {
      Candidate c;
      c.kind = "uniform";
      c.budget = fmt::format("w{}", b);
      c.widths.assign(p.layers.size(), b);
      r.candidates.push_back(c);
    }
  std::mt19937_64 rng(o.seed);
  for (size_t i = 0; i < n_ilp; ++i)
    for (int k = 0; k < o.random_configs; ++k) {
      Candidate c;
      c.kind = "random";
      c.source = int(i);
      c.budget = r.candidates[i].budget;
      c.widths = r.candidates[i].widths;
      std::shuffle(c.widths.begin(), c.widths.end(), rng);
      r.candidates.push_back(c);
    }

  // Evaluate each distinct configuration once.
  std::map<std::string, std::pair<double, double>> evaluated;
  const int high = p.bits.front();
  for (size_t i = 0; i < r.candidates.size(); ++i) {
    auto& c = r.candidates[i];
    c.cost = config_cost(p, c.widths);
    const auto key = widths_key(c.widths);
    auto it = evaluated.find(key);
    if (it == evaluated.end()) {
      std::map<std::string, int> m;
      for (size_t l = 0; l < p.layers.size(); ++l) m[p.layers[l].name] = c.widths[l];
      auto e = eval::evaluate(model, test, nn::layer_bits_config(m, high));
      it = evaluated.emplace(key, std::make_pair(e.accuracy, e.loss)).first;
    }
    c.accuracy = it->second.first;
    c.loss = it->second.second;
    log(fmt::format("candidate {}/{} {} ({}): avg bits {:.3f}, {:.0f} bytes, {:.4g} BitOPs, test accuracy {:.2f}%", i + 1,
                    r.candidates.size(), c.kind, c.budget, c.cost.avg_bits, c.cost.bytes, c.cost.bitops, c.accuracy));
  }

  // Pareto front in (cost of the swept kind, accuracy).
  const std::string kind = o.sweep.kind.empty() ? "avg-bits" : o.sweep.kind;
  for (auto& c : r.candidates) {
    c.pareto = true;
    for (const auto& d : r.candidates) {
      const double cc = cost_of_kind(c.cost, kind), dc = cost_of_kind(d.cost, kind);
      if (dc <= cc && d.accuracy >= c.accuracy && (dc < cc || d.accuracy > c.accuracy)) {
        c.pareto = false;
        break;
      }
    }
  }
  if (o.pick >= 0) {
    BS_CHECK(size_t(o.pick) < n_ilp, "--pick ", o.pick, ": there are ", n_ilp, " ILP candidates (0 to ", n_ilp - 1, ")");
    r.chosen = o.pick;
  } else {
    r.chosen = 0;
    for (size_t i = 1; i < n_ilp; ++i)
      if (r.candidates[i].accuracy > r.candidates[size_t(r.chosen)].accuracy) r.chosen = int(i);
  }
  return r;
}

json search_to_json(const SearchResult& r, const SearchOptions& o) {
  const auto& p = r.problem;
  json layers = json::array();
  for (const auto& l : p.layers) {
    json e{{"name", l.name}, {"params", l.params}, {"macs", l.macs}, {"trace", l.trace}};
    if (!l.quant_error.empty()) e["quant_error"] = l.quant_error;
    layers.push_back(e);
  }
  json cands = json::array();
  for (size_t i = 0; i < r.candidates.size(); ++i) {
    const auto& c = r.candidates[i];
    json lb = json::object();
    for (size_t l = 0; l < p.layers.size(); ++l) lb[p.layers[l].name] = c.widths[l];
    json e{{"index", i},           {"kind", c.kind},         {"budget", c.budget},   {"layer_bits", lb},
           {"avg_bits", c.cost.avg_bits}, {"bytes", c.cost.bytes}, {"bitops", c.cost.bitops},
           {"objective", c.cost.objective}, {"accuracy", c.accuracy}, {"loss", c.loss}, {"pareto", c.pareto}};
    if (c.source >= 0) e["source"] = c.source;
    cands.push_back(e);
  }
  json budgets = json::object();
  if (o.budgets.avg_bits) budgets["avg_bits"] = *o.budgets.avg_bits;
  if (o.budgets.bytes) budgets["bytes"] = *o.budgets.bytes;
  if (o.budgets.bitops) budgets["bitops"] = *o.budgets.bitops;
  json sweep = nullptr;
  if (!o.sweep.kind.empty())
    sweep = json{{"kind", o.sweep.kind}, {"from", o.sweep.from}, {"to", o.sweep.to}, {"steps", o.sweep.steps}};
  return json{{"format", "bitswitch-pareto"}, {"objective", objective_name(o.objective)}, {"bits", p.bits},
              {"budgets", budgets}, {"sweep", sweep}, {"fixed_bytes", p.fixed_bytes}, {"test_images", r.test_images},
              {"layers", layers}, {"candidates", cands}, {"chosen", r.chosen}};
}

}  // namespace bitswitch::mixed
