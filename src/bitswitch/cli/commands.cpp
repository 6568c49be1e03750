// Command-line entry: builds the subcommand table, parses, dispatches, reports errors.
#include "bitswitch/cli/commands.h"

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include <iostream>

#include "bitswitch/util/error.h"

namespace bitswitch::cli {

int run(int argc, char** argv) {
  CLI::App app{"bitswitch: train once, deploy at any bit-width (Double Rounding, ALRS, HASB)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "bitswitch 0.1.0");
  CommandTable table;
  add_train_commands(app, table);
  add_deploy_commands(app, table);
  add_mixed_commands(app, table);
  add_lm_commands(app, table);
  add_lm_decode_commands(app, table);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (const auto& [sub, runner] : table.entries())
      if (sub->parsed()) return runner();
  } catch (const Error& e) {
    std::cerr << "bitswitch: error: " << e.what() << std::endl;
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "bitswitch: error: " << e.what_without_backtrace() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "bitswitch: error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}

}  // namespace bitswitch::cli
