// `bitswitch lm-train`, `bitswitch sample`, and `bitswitch eval` of language-model checkpoints.
// Every lm-train option is a field of train::LmConfig; precedence: defaults < --config FILE (or
// the run's config.json with --resume) < --set FIELD=VALUE and the named flags.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bitswitch/cli/commands.h"
#include "bitswitch/train/config.h"
#include "bitswitch/train/lm_trainer.h"
#include "bitswitch/train/trainer.h"
#include "bitswitch/util/error.h"

namespace bitswitch::cli {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct LmTrainCommand {
  std::string config_file, out;
  std::vector<std::string> sets;
  bool dump_config = false, resume = false, no_alrs = false;
  int64_t stop_after = -1;

  void add(CLI::App& app) {
    app.add_option("--config", config_file, "JSON or YAML LM config (configs/lm-*.yaml; flags override it)");
    app.add_option("--out", out, "run directory (default: runs/lm)");
    app.add_flag("--resume", resume, "continue the run in --out from its checkpoint");
    app.add_flag("--no-alrs", no_alrs, "joint training without ALRS (the paper's LLM setting)");
    app.add_option("--stop-after", stop_after, "stop after N steps in this invocation (0: run all)");
    app.add_option("--set", sets,
                   "FIELD=VALUE, any config field, VALUE as JSON or else as text "
                   "(e.g. --set steps=200 --set arch='{\"preset\":\"small\"}' --set bits=[8,4,3,2])");
    app.add_flag("--dump-config", dump_config, "print the resolved config as JSON and exit");
  }

  train::LmConfig resolve() const {
    train::LmConfig cfg;
    json overrides = json::object();
    for (const auto& s : sets) {
      const auto eq = s.find('=');
      BS_CHECK(eq != std::string::npos && eq > 0, "--set: expected FIELD=VALUE, got '", s, "'");
      const auto key = s.substr(0, eq), text = s.substr(eq + 1);
      json v;
      try {
        v = json::parse(text);
      } catch (const json::exception&) {
        v = text;
      }
      overrides[key] = v;
    }
    if (!out.empty()) overrides["out"] = out;
    if (resume) overrides["resume"] = true;
    if (no_alrs) overrides["alrs"] = false;
    if (stop_after >= 0) overrides["stop_after"] = stop_after;
    std::string file = config_file;
    if (file.empty() && resume) {
      const auto run_cfg = fs::path(overrides.value("out", cfg.out)) / "config.json";
      BS_CHECK(fs::exists(run_cfg), "--resume: '", run_cfg.string(), "' does not exist (is --out the run directory?)");
      file = run_cfg.string();
    }
    if (!file.empty()) {
      json j = train::load_config_file(file, /*train_fields=*/false);
      if (resume && j.is_object()) j.erase("resume");
      cfg.merge_json(j, file);
    }
    cfg.merge_json(overrides, "command line");
    cfg.validate();
    return cfg;
  }

  int run() {
    auto cfg = resolve();
    if (dump_config) {
      std::cout << cfg.to_json().dump(2) << std::endl;
      return 0;
    }
    auto r = train::run_lm_training(cfg);
    std::cout << json{{"perplexity", r.perplexity}, {"bits_per_byte", r.bits_per_byte}, {"seconds", r.seconds},
                      {"finished", r.finished}, {"checkpoint", r.checkpoint}}
                     .dump(2)
              << std::endl;
    return 0;
  }
};

nn::BitConfig width_config(const std::string& text, const std::vector<int>& trained, const std::string& checkpoint) {
  if (text == "fp32" || text == "32") return nn::BitConfig::fp32();
  const int b = nn::parse_bit_list(text, "--bits")[0];
  BS_CHECK(std::find(trained.begin(), trained.end(), b) != trained.end(), "--bits: width ", b, " was not trained in '",
           checkpoint, "' (trained: ", nn::format_bit_list(trained), ")");
  return nn::BitConfig::uniform(b);
}

struct SampleCommand {
  std::string checkpoint, bits = "fp32", prompt;
  int64_t tokens = 100, top_k = 40;
  double temperature = 0.8;
  uint64_t seed = 1;
  int threads = 0;

  void add(CLI::App& app) {
    app.add_option("--checkpoint", checkpoint, "language-model checkpoint")->required();
    app.add_option("--bits", bits, "width to run at: fp32 or a trained width (default: fp32)");
    app.add_option("--prompt", prompt, "text to continue")->required();
    app.add_option("--tokens", tokens, "tokens to generate (default: 100)")->check(CLI::PositiveNumber);
    app.add_option("--temperature", temperature, "sampling temperature; 0: greedy (default: 0.8)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--top-k", top_k, "sample from the k likeliest tokens; 0: all (default: 40)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--seed", seed, "sampling seed (default: 1)");
    app.add_option("--threads", threads, "CPU threads (0: all cores)");
  }

  int run() {
    train::configure_threads(threads);
    auto lm = train::load_lm_checkpoint(checkpoint);
    const auto config = width_config(bits, lm.config.bits, checkpoint);
    const auto text = train::lm_generate(*lm.model, *lm.tokenizer, prompt, config, tokens, temperature, top_k, seed);
    std::cout << prompt << text << std::endl;
    return 0;
  }
};

}  // namespace

int run_lm_eval(const std::string& checkpoint, const std::string& bits, int threads) {
  train::configure_threads(threads);
  auto lm = train::load_lm_checkpoint(checkpoint);
  const auto& cfg = lm.config;
  const auto split = data::read_text_split(cfg.data, cfg.heldout_fraction);
  auto corpus = data::tokenize_corpus(split, lm.tokenizer);
  data::TokenWindows windows(corpus.heldout_tokens, lm.model->arch().context);
  std::vector<std::string> widths;
  if (bits.empty()) {
    widths.push_back("fp32");
    for (int b : cfg.bits) widths.push_back(std::to_string(b));
  } else {
    std::stringstream ss(bits);
    std::string item;
    while (std::getline(ss, item, ',')) widths.push_back(item);
  }
  json ppl = json::object(), bpb = json::object(), loss = json::object();
  int64_t tokens = 0;
  for (const auto& w : widths) {
    const auto config = width_config(w, cfg.bits, checkpoint);
    const auto r = train::evaluate_lm(*lm.model, windows, *lm.tokenizer, config, cfg.eval_windows);
    ppl[config.label()] = r.perplexity;
    bpb[config.label()] = r.bits_per_byte;
    loss[config.label()] = r.loss;
    tokens = r.tokens;
  }
  std::cout << json{{"checkpoint", checkpoint}, {"heldout_tokens", tokens}, {"perplexity", ppl},
                    {"bits_per_byte", bpb}, {"loss", loss}}
                   .dump(2)
            << std::endl;
  return 0;
}

void add_lm_commands(CLI::App& app, CommandTable& table) {
  table.add_command<LmTrainCommand>(app, "lm-train",
                                    "language model: FP32 pre-training, then one-shot joint training of all widths");
  table.add_command<SampleCommand>(app, "sample", "continue a prompt with a language-model checkpoint at one width");
}

}  // namespace bitswitch::cli
