// The `bitswitch` command line: thin wrappers over the library. Each area registers its
// subcommands in its own file (train_commands.cpp, ...); run() parses and dispatches.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace bitswitch::cli {

// Subcommands and what runs when one of them was given. Runners return the exit status and
// may throw; run() turns exceptions into "bitswitch: error: ..." and exit status 1.
class CommandTable {
 public:
  void add(CLI::App* subcommand, std::function<int()> runner) { entries_.emplace_back(subcommand, std::move(runner)); }
  // Subcommand `name` backed by a Cmd with `void add(CLI::App&)` (its options) and `int run()`.
  template <typename Cmd>
  void add_command(CLI::App& app, const std::string& name, const std::string& help) {
    auto cmd = std::make_shared<Cmd>();
    auto* sub = app.add_subcommand(name, help);
    cmd->add(*sub);
    add(sub, [cmd] { return cmd->run(); });
  }
  const std::vector<std::pair<CLI::App*, std::function<int()>>>& entries() const { return entries_; }

 private:
  std::vector<std::pair<CLI::App*, std::function<int()>>> entries_;
};

// train, eval (train_commands.cpp).
void add_train_commands(CLI::App& app, CommandTable& table);
// export, switch, infer, inspect (deploy_commands.cpp).
void add_deploy_commands(CLI::App& app, CommandTable& table);
// hessian, search, report (mixed_commands.cpp).
void add_mixed_commands(CLI::App& app, CommandTable& table);

// lm-train, sample (lm_commands.cpp).
void add_lm_commands(CLI::App& app, CommandTable& table);
// `bitswitch eval` of a language-model checkpoint: held-out perplexity and bits per byte per width.
// generate, perplexity: language-model artifacts on the integer decoder (lm_decode_commands.cpp).
void add_lm_decode_commands(CLI::App& app, CommandTable& table);
int run_lm_eval(const std::string& checkpoint, const std::string& bits, int threads);

int run(int argc, char** argv);

}  // namespace bitswitch::cli
