// `bitswitch hessian`, `bitswitch search`, `bitswitch report`: the mixed-precision path
// (SPEC.md Sec. 6). Thin wrappers over bitswitch/mixed.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "bitswitch/cli/commands.h"
#include "bitswitch/data/datasets.h"
#include "bitswitch/data/loader.h"
#include "bitswitch/mixed/hessian.h"
#include "bitswitch/mixed/report.h"
#include "bitswitch/mixed/search.h"
#include "bitswitch/train/checkpoint.h"
#include "bitswitch/train/trainer.h"
#include "bitswitch/util/atomic_file.h"
#include "bitswitch/util/error.h"

namespace bitswitch::cli {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

void log(const std::string& s) { fmt::print(stderr, "[bitswitch] {}\n", s); }

// A checkpoint's model (strictly loaded) and the dataset its run used.
struct LoadedModel {
  models::Model model;
  data::DatasetPair data;
};

LoadedModel load_model_and_data(const std::string& checkpoint, const std::string& data_dir, int threads) {
  train::configure_threads(threads);
  train::Checkpoint ck(checkpoint);
  LoadedModel m;
  const auto spec = ck.spec();
  m.model = models::create_model(spec);
  ck.load_model(*m.model, /*strict=*/true);
  const json cfg = ck.meta().value("config", json::object());
  const std::string dataset = cfg.value("dataset", std::string("fashion-mnist"));
  m.data = data::load_dataset(dataset, data_dir.empty() ? cfg.value("data_dir", std::string()) : data_dir);
  BS_CHECK(m.data.test.channels() == spec.in_channels && m.data.test.num_classes == spec.num_classes, "checkpoint '",
           checkpoint, "' expects ", spec.in_channels, " channels and ", spec.num_classes, " classes; dataset ", dataset,
           " has ", m.data.test.channels(), " and ", m.data.test.num_classes);
  return m;
}

// The first `limit` images of `ds` (0: all) in order, without augmentation.
data::Loader plain_loader(const data::Dataset& ds, int64_t batch, int64_t limit) {
  data::LoaderOptions lo;
  lo.batch_size = batch;
  lo.limit = limit;
  return data::Loader(ds, lo);
}

void ensure_parent(const std::string& path) {
  const auto parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
}

struct HessianCommand {
  std::string checkpoint, out, data_dir;
  int64_t images = 1000;
  int batch = 200, threads = 0;
  mixed::HutchinsonOptions opt;

  void add(CLI::App& app) {
    app.add_option("--checkpoint", checkpoint, "multi-precision checkpoint")->required();
    app.add_option("-o,--out", out, "traces file to write (JSON)")->required();
    app.add_option("--images", images, "training images the loss is averaged over (the first N)")
        ->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--batch", batch, "images per forward/backward")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--max-probes", opt.max_probes, "probe limit (the reference uses 7)")
        ->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--min-probes", opt.min_probes, "probes before the tolerance may stop")
        ->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--tolerance", opt.tolerance, "stop when the total trace's running mean changes by less (relative)")
        ->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--seed", opt.seed, "seed of the Rademacher probes")->capture_default_str();
    app.add_flag("--per-layer", opt.per_block,
                 "probe each layer on its own: no cross-layer noise, one Hessian-vector product per layer and probe");
    app.add_option("--data-dir", data_dir, "dataset directory (default: the one the run used)");
    app.add_option("--threads", threads, "CPU threads (0: all cores)");
  }

  int run() {
    auto m = load_model_and_data(checkpoint, data_dir, threads);
    auto loader = plain_loader(m.data.train, batch, images);
    opt.on_probe = [&](int k, double total) {
      log(fmt::format("probe {}/{}: running mean of the total trace {:.6g}", k, opt.max_probes, total));
    };
    auto rep = mixed::layer_traces(*m.model, loader, opt);
    rep.checkpoint = checkpoint;
    ensure_parent(out);
    write_text_atomically(out, mixed::traces_to_json(rep).dump(2) + "\n");
    for (const auto& l : rep.layers)
      fmt::print("{:<24} {:>8} params  trace {:.5g} (std. error {:.2g})\n", l.name, l.params, l.trace, l.stderr_);
    log(fmt::format("{} probes on {} images{}; wrote {}", rep.probes, rep.images,
                    rep.converged ? " (converged)" : " (probe limit reached)", out));
    return 0;
  }
};

struct SearchCommand {
  std::string checkpoint, traces, out = "pareto.json", layer_bits_out, data_dir, objective = "reference", sweep;
  double avg_bits = 0, max_bytes = 0, max_bitops = 0;
  int random = 0, pick = -1, threads = 0, batch = 500;
  bool no_uniform = false;
  int64_t test_limit = 0;
  uint64_t seed = 1;

  void add(CLI::App& app) {
    app.add_option("--checkpoint", checkpoint, "multi-precision (HASB) checkpoint")->required();
    app.add_option("--traces", traces, "traces file of `bitswitch hessian`")->required();
    app.add_option("-o,--out", out, "Pareto file to write (JSON)")->capture_default_str();
    app.add_option("--layer-bits-out", layer_bits_out, "write the chosen candidate's per-layer widths (--layer-bits file)");
    app.add_option("--objective", objective, "reference (max sum trace x bits) or hawq (min sum trace x ||Q_b(W)-W||^2)")
        ->capture_default_str();
    app.add_option("--avg-bits", avg_bits, "budget: average bits per layer <= this");
    app.add_option("--max-bytes", max_bytes, "budget: model bytes <= this");
    app.add_option("--max-bitops", max_bitops, "budget: BitOPs per image (MACs x b_w x b_a) <= this");
    app.add_option("--sweep", sweep, "sweep one budget, KIND:FROM:TO:STEPS with KIND avg-bits, bytes or bitops");
    app.add_option("--random", random, "per ILP candidate, evaluate N random placements of its widths")
        ->check(CLI::NonNegativeNumber);
    app.add_flag("--no-uniform", no_uniform, "do not evaluate the uniform widths");
    app.add_option("--pick", pick, "index of the ILP candidate to choose (default: the most accurate)");
    app.add_option("--seed", seed, "seed of the random placements")->capture_default_str();
    app.add_option("--test-limit", test_limit, "evaluate on the first N test images (0: all)");
    app.add_option("--batch", batch, "evaluation batch size")->check(CLI::PositiveNumber);
    app.add_option("--data-dir", data_dir, "dataset directory (default: the one the run used)");
    app.add_option("--threads", threads, "CPU threads (0: all cores)");
    budget_opts = {app.get_option("--avg-bits"), app.get_option("--max-bytes"), app.get_option("--max-bitops")};
  }
  std::vector<CLI::Option*> budget_opts;

  int run() {
    mixed::SearchOptions o;
    o.objective = mixed::parse_objective(objective);
    if (budget_opts[0]->count()) o.budgets.avg_bits = avg_bits;
    if (budget_opts[1]->count()) o.budgets.bytes = max_bytes;
    if (budget_opts[2]->count()) o.budgets.bitops = max_bitops;
    if (!sweep.empty()) o.sweep = mixed::parse_sweep(sweep);
    BS_CHECK(!sweep.empty() || o.budgets.avg_bits || o.budgets.bytes || o.budgets.bitops,
             "search: give a budget (--avg-bits, --max-bytes, --max-bitops) or a --sweep");
    o.random_configs = random;
    o.uniform = !no_uniform;
    o.seed = seed;
    o.pick = pick;
    const auto tr = mixed::read_traces(traces);
    auto m = load_model_and_data(checkpoint, data_dir, threads);
    auto test = plain_loader(m.data.test, batch, test_limit);
    data::Batch sample;
    test.start_epoch(0);
    BS_CHECK(test.next(sample), "search: no test images");
    auto r = mixed::run_search(*m.model, test, tr, o, sample.images);
    json j = mixed::search_to_json(r, o);
    j["checkpoint"] = checkpoint;
    j["traces"] = traces;
    ensure_parent(out);
    write_text_atomically(out, j.dump(2) + "\n");
    const auto& c = r.candidates[size_t(r.chosen)];
    log(fmt::format("chosen candidate {} ({}): average {:.3f} bits, {:.0f} bytes, {:.4g} BitOPs, {:.2f}% test accuracy",
                    r.chosen, c.budget, c.cost.avg_bits, c.cost.bytes, c.cost.bitops, c.accuracy));
    if (!layer_bits_out.empty()) {
      ensure_parent(layer_bits_out);
      write_text_atomically(layer_bits_out, nn::layer_bits_to_json(r.chosen_layer_bits()));
      log("wrote " + layer_bits_out);
    }
    log("wrote " + out);
    return 0;
  }
};

struct ReportCommand {
  mixed::ReportInputs in;
  std::string out;

  void add(CLI::App& app) {
    app.add_option("run_dir", in.run_dir, "run directory (metrics.jsonl, traces.json, pareto.json)")->required();
    app.add_option("-o,--out", out, "HTML file to write (default: RUN_DIR/report.html)");
    app.add_option("--metrics", in.metrics, "metrics file (default: RUN_DIR/metrics.jsonl)");
    app.add_option("--traces", in.traces, "traces file (default: RUN_DIR/traces.json)");
    app.add_option("--pareto", in.pareto, "Pareto file (default: RUN_DIR/pareto.json)");
  }

  int run() {
    auto r = mixed::build_report(in);
    if (out.empty()) out = (fs::path(in.run_dir) / "report.html").string();
    ensure_parent(out);
    write_text_atomically(out, r.html);
    for (const auto& m : r.missing) log("missing " + m + " (its section says so)");
    log("wrote " + out);
    return 0;
  }
};

}  // namespace

void add_mixed_commands(CLI::App& app, CommandTable& table) {
  table.add_command<HessianCommand>(app, "hessian", "average Hessian trace of every quantized layer (Hutchinson)");
  table.add_command<SearchCommand>(app, "search", "per-layer widths by ILP under budgets; Pareto sweep; evaluation");
  table.add_command<ReportCommand>(app, "report", "one self-contained HTML page of a run (inline SVG)");
}

}  // namespace bitswitch::cli
