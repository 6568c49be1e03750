// `bitswitch train` and `bitswitch eval`. Every training option is a config field
// (train/config.h) and also a flag of the same name with dashes; precedence:
// defaults < --config FILE (or the run's config.json with --resume) < flags.
#include "bitswitch/cli/commands.h"

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "bitswitch/data/datasets.h"
#include "bitswitch/data/loader.h"
#include "bitswitch/eval/evaluate.h"
#include "bitswitch/mixed/hasb.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/train/bn_calibration.h"
#include "bitswitch/train/checkpoint.h"
#include "bitswitch/train/config.h"
#include "bitswitch/train/data_sources.h"
#include "bitswitch/train/distributed.h"
#include "bitswitch/train/trainer.h"
#include "bitswitch/util/error.h"

namespace bitswitch::cli {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string dashed(std::string s) {
  for (auto& c : s)
    if (c == '_') c = '-';
  return s;
}

// Converts a flag's text to the JSON type of the field's default value.
json flag_value(const std::string& flag, const std::string& text, const json& like) {
  try {
    size_t used = 0;
    if (like.is_number_integer() || like.is_number_unsigned()) {
      long long v = std::stoll(text, &used);
      if (used == text.size()) return v;
    } else if (like.is_number_float()) {
      double v = std::stod(text, &used);
      if (used == text.size()) return v;
    } else {
      return text;
    }
  } catch (const std::exception&) {
  }
  fail(flag, ": '", text, "' is not ", like.is_number_float() ? "a number" : "an integer");
}

struct TrainCommand {
  std::string config_file;
  bool dump_config = false;
  std::map<std::string, std::string> values;
  std::map<std::string, bool> flags;
  std::map<std::string, CLI::Option*> options;

  void add(CLI::App& app) {
    app.add_option("--config", config_file, "JSON or YAML config file (flags override it)");
    app.add_flag("--dump-config", dump_config, "print the resolved config as JSON and exit");
    const json defaults = train::TrainConfig{}.to_json();
    for (const auto& f : train::config_fields()) {
      const std::string name = "--" + dashed(f.name);
      const json& d = defaults.at(f.name);
      std::string help = f.help;
      if (d.is_boolean()) {
        flags[f.name] = d.get<bool>();
        options[f.name] = app.add_flag(name + ",!--no-" + dashed(f.name), flags[f.name], help + " (default: " + d.dump() + ")");
      } else {
        const char* type = d.is_number_integer() ? "INT" : d.is_number() ? "FLOAT" : d.is_array() ? "LIST" : "TEXT";
        options[f.name] = app.add_option(name, values[f.name], help + " (default: " + d.dump() + ")")->type_name(type);
      }
    }
  }

  train::TrainConfig resolve() {
    train::TrainConfig cfg;
    const json defaults = cfg.to_json();
    json overrides = json::object();
    for (const auto& [name, opt] : options) {
      if (opt->count() == 0) continue;
      const json& d = defaults.at(name);
      overrides[name] = d.is_boolean() ? json(flags[name]) : flag_value("--" + dashed(name), values[name], d);
    }
    std::string file = config_file;
    const bool resume = overrides.value("resume", false);
    if (file.empty() && resume) {
      const std::string out = overrides.value("out", cfg.out);
      const auto run_cfg = fs::path(out) / "config.json";
      BS_CHECK(fs::exists(run_cfg), "--resume: '", run_cfg.string(), "' does not exist (is --out the run directory?)");
      file = run_cfg.string();
    }
    if (!file.empty()) {
      json j = train::load_config_file(file);
      if (resume && j.is_object()) j.erase("resume");
      cfg.merge_json(j, file);
    }
    cfg.merge_json(overrides, "command line");
    cfg.validate();
    return cfg;
  }
};

// This process's arguments after the executable, as the kernel recorded them.
std::vector<std::string> own_arguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string a;
  while (std::getline(in, a, '\0')) args.push_back(a);
  BS_CHECK(!args.empty(), "--nproc: cannot read /proc/self/cmdline");
  args.erase(args.begin());
  return args;
}

// `--nproc N`: this process becomes a launcher of N ranks running the same command without
// --nproc (when RANK is already set, it is a rank itself: of --nproc's launcher or of torchrun).
bool launch_ranks_if_asked(const train::TrainConfig& cfg) {
  if (cfg.nproc <= 1 || std::getenv("RANK")) return false;
  std::vector<std::string> args;
  const auto own = own_arguments();
  for (size_t i = 0; i < own.size(); ++i) {
    if (own[i] == "--nproc") {
      ++i;
      continue;
    }
    if (own[i].rfind("--nproc=", 0) == 0) continue;
    args.push_back(own[i]);
  }
  train::launch_local_ranks(cfg.nproc, "/proc/self/exe", args);
  return true;
}

int cmd_train(TrainCommand& cmd) {
  auto cfg = cmd.resolve();
  if (cmd.dump_config) {
    std::cout << cfg.to_json().dump(2) << std::endl;
    return 0;
  }
  if (launch_ranks_if_asked(cfg)) return 0;
  // HASB SuperNet training: the trainer takes the per-step widths from mixed's schedule.
  const auto schedule = cfg.hasb ? mixed::hasb_schedule(cfg) : nullptr;
  auto r = train::run_training(cfg, schedule.get());
  if (!r.main_process) return 0;
  std::cout << json{{"accuracy", r.accuracy}, {"seconds", r.seconds}, {"finished", r.finished},
                    {"checkpoint", r.checkpoint}}.dump(2)
            << std::endl;
  return 0;
}

struct EvalCommand {
  std::string checkpoint, bits, data_dir;
  int threads = 0, batch = 500;
  int64_t test_limit = 0, bn_calib = 0;

  void add(CLI::App& app) {
    app.add_option("--checkpoint", checkpoint, "checkpoint to evaluate")->required();
    app.add_option("--bits", bits, "widths to evaluate, e.g. 4 or 8,4 or fp32 (default: fp32 and every trained width)");
    app.add_option("--data-dir", data_dir, "dataset directory (default: the one the run used)");
    app.add_option("--threads", threads, "CPU threads (0: all cores)");
    app.add_option("--batch", batch, "evaluation batch size")->check(CLI::PositiveNumber);
    app.add_option("--test-limit", test_limit, "evaluate on the first N test images (0: all)");
    app.add_option("--bn-calib", bn_calib,
                   "first re-estimate each evaluated width's BN statistics from N batches of training images "
                   "(no augmentation; in memory only, the checkpoint is not changed)")
        ->check(CLI::NonNegativeNumber);
  }

  int run() {
    train::configure_threads(threads);
    train::Checkpoint ck(checkpoint);
    if (ck.meta().value("task", std::string()) == "lm") return run_lm_eval(checkpoint, bits, threads);
    const auto spec = ck.spec();
    auto model = models::create_model(spec);
    ck.load_model(*model, /*strict=*/true);
    const json run_cfg = ck.meta().value("config", json::object());
    // The run's own data settings (dataset, image size, workers), with this command's overrides.
    train::TrainConfig cfg;
    cfg.merge_json(run_cfg, checkpoint + " (stored config)");
    if (!data_dir.empty()) cfg.data_dir = data_dir;
    cfg.test_limit = test_limit;
    auto data = train::open_data(cfg, batch);
    BS_CHECK(data.channels == spec.in_channels && data.num_classes == spec.num_classes,
             "checkpoint '", checkpoint, "' expects ", spec.in_channels, " channels and ", spec.num_classes,
             " classes; dataset ", cfg.dataset, " has ", data.channels, " and ", data.num_classes);
    std::vector<int> widths;
    if (bits.empty()) {
      widths.push_back(nn::kFloatBits);
      widths.insert(widths.end(), spec.bits.begin(), spec.bits.end());
    } else {
      std::stringstream ss(bits);
      std::string item;
      while (std::getline(ss, item, ',')) {
        if (item == "fp32" || item == "32") {
          widths.push_back(nn::kFloatBits);
          continue;
        }
        auto one = nn::parse_bit_list(item, "--bits");
        BS_CHECK(std::find(spec.bits.begin(), spec.bits.end(), one[0]) != spec.bits.end(), "--bits: width ", one[0],
                 " was not trained in '", checkpoint, "' (trained: ", nn::format_bit_list(spec.bits), ")");
        widths.push_back(one[0]);
      }
    }
    auto& loader = *data.test;
    json acc = json::object(), loss = json::object();
    auto calib_owned = bn_calib > 0 ? train::open_calibration_data(cfg, data) : nullptr;
    data::BatchSource* calib = calib_owned ? calib_owned.get() : data.train.get();
    for (int w : widths) {
      if (bn_calib > 0) train::recalibrate_bn(*model, *calib, {nn::BitConfig::uniform(w)}, bn_calib);
      auto r = eval::evaluate(*model, loader, nn::BitConfig::uniform(w));
      acc[nn::width_label(w)] = r.accuracy;
      loss[nn::width_label(w)] = r.loss;
    }
    std::cout << json{{"checkpoint", checkpoint}, {"images", loader.num_samples()}, {"accuracy", acc}, {"loss", loss}}.dump(2)
              << std::endl;
    return 0;
  }
};

}  // namespace

void add_train_commands(CLI::App& app, CommandTable& table) {
  auto train_cmd = std::make_shared<TrainCommand>();
  auto* train_app = app.add_subcommand("train", "FP32 training, then one-shot joint training of all widths");
  train_cmd->add(*train_app);
  table.add(train_app, [train_cmd] { return cmd_train(*train_cmd); });
  table.add_command<EvalCommand>(app, "eval", "test accuracy of a checkpoint at one or more widths");
}

}  // namespace bitswitch::cli
