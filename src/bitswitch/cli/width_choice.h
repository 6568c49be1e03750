// The widths a deployment command runs an artifact at (--bits B or --layer-bits FILE), shared by
// the image commands (deploy_commands.cpp) and the language-model ones (lm_decode_commands.cpp).
#pragma once
#include <CLI/CLI.hpp>

#include <string>

#include "bitswitch/deploy/artifact.h"
#include "bitswitch/nn/bit_config.h"
#include "bitswitch/util/error.h"

namespace bitswitch::cli {

using deploy::Artifact;

inline int parse_width(const std::string& text) {
  return nn::parse_bit_list(text, "--bits").front();
}

// The widths a command asks for: --bits B or --layer-bits FILE (or neither).
struct WidthChoice {
  std::string bits, layer_bits;

  void add(CLI::App& app, const std::string& what) {
    auto* b = app.add_option("--bits", bits, "uniform width " + what);
    auto* l = app.add_option("--layer-bits", layer_bits, "JSON file of per-layer widths " + what +
                                                             " ({\"layer\": bits, ...}, e.g. from `bitswitch search`)");
    b->excludes(l);
  }
  bool given() const { return !bits.empty() || !layer_bits.empty(); }
  // The artifact to run: a master switched to the widths asked for (default: its highest);
  // a switched one as it is (asking for widths is then an error).
  Artifact runnable(Artifact a, const std::string& path, int threads) const {
    if (given()) {
      BS_CHECK(a.master, "'", path, "' is already switched to ", a.label(), "; --bits/--layer-bits need a master artifact");
      return apply(a, threads);
    }
    return a.master ? deploy::switch_uniform(a, a.high_bits, threads) : a;
  }
  Artifact apply(const Artifact& master, int threads) const {
    if (!layer_bits.empty()) return deploy::switch_widths(master, nn::read_layer_bits(layer_bits, master.bits), threads);
    return deploy::switch_uniform(master, parse_width(bits), threads);
  }
};

}  // namespace bitswitch::cli
