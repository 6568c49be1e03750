// `bitswitch export | switch | infer | inspect`: the deployment half (SPEC.md Sec. 7).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bitswitch/cli/commands.h"
#include "bitswitch/data/datasets.h"
#include "bitswitch/data/loader.h"
#include "bitswitch/deploy/artifact.h"
#include "bitswitch/deploy/export.h"
#include "bitswitch/deploy/packing.h"
#include "bitswitch/deploy/runtime.h"
#include "bitswitch/nn/bit_config.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/train/checkpoint.h"
#include "bitswitch/util/error.h"

namespace bitswitch::cli {

using json = nlohmann::json;
using deploy::Artifact;

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

size_t file_size(const std::string& path) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : size_t(n);
}

int parse_width(const std::string& text) {
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
  Artifact apply(const Artifact& master, int threads) const {
    if (!layer_bits.empty()) return deploy::switch_widths(master, nn::read_layer_bits(layer_bits, master.bits), threads);
    return deploy::switch_uniform(master, parse_width(bits), threads);
  }
};

struct ExportCommand {
  std::string checkpoint, output;
  void add(CLI::App& app) {
    app.add_option("--checkpoint", checkpoint, "multi-precision checkpoint (from `bitswitch train`)")->required();
    app.add_option("-o,--output", output, "artifact to write (.safetensors)")->required();
  }
  int run() {
    const auto t0 = std::chrono::steady_clock::now();
    const Artifact a = deploy::export_checkpoint(checkpoint);
    deploy::write_artifact(output, a);
    std::cout << json{{"artifact", output}, {"arch", a.arch}, {"bits", nn::format_bit_list(a.bits)},
                      {"layers", a.layers.size()}, {"bytes", file_size(output)}, {"ms", ms_since(t0)}}
                     .dump(2)
              << std::endl;
    return 0;
  }
};

struct SwitchCommand {
  std::string input, output;
  WidthChoice widths;
  int threads = 0;
  void add(CLI::App& app) {
    app.add_option("artifact", input, "master artifact (from `bitswitch export`)")->required();
    widths.add(app, "to switch to");
    app.add_option("-o,--output", output, "switched artifact to write")->required();
    app.add_option("--threads", threads, "threads for the code derivation (0: all cores)");
  }
  int run() {
    BS_CHECK(widths.given(), "switch: give --bits B or --layer-bits FILE");
    const Artifact master = deploy::read_artifact(input);
    const auto t0 = std::chrono::steady_clock::now();
    const Artifact s = widths.apply(master, threads);
    const double switch_ms = ms_since(t0);
    deploy::write_artifact(output, s);
    std::cout << json{{"artifact", output}, {"width", s.label()}, {"layer_bits", s.layer_bits()},
                      {"bytes", file_size(output)}, {"input_bytes", file_size(input)}, {"switch_ms", switch_ms}}
                     .dump(2)
              << std::endl;
    return 0;
  }
};

deploy::QgemmIsa parse_isa(const std::string& s) {
  if (s == "auto") return deploy::QgemmIsa::kAuto;
  if (s == "scalar") return deploy::QgemmIsa::kScalar;
  if (s == "avx2") return deploy::QgemmIsa::kAvx2;
  if (s == "avx512vnni") return deploy::QgemmIsa::kAvx512Vnni;
  fail("--isa: '", s, "' is not one of auto, scalar, avx2, avx512vnni");
}

struct InferCommand {
  std::string input, data_dir, dataset, isa = "auto", verify;
  WidthChoice widths;
  int threads = 0, batch = 64, tile = 4;
  bool unpack_in_gemm = false;
  int64_t test_limit = 0;
  void add(CLI::App& app) {
    app.add_option("artifact", input, "artifact (master or switched)")->required();
    widths.add(app, "to run a master artifact at (default: its highest width)");
    app.add_option("--batch", batch, "images per forward call")->check(CLI::PositiveNumber);
    app.add_option("--threads", threads, "threads (0: all cores)");
    app.add_option("--dataset", dataset, "dataset (default: the one the model was trained on)");
    app.add_option("--data-dir", data_dir, "dataset directory (default: the training run's)");
    app.add_option("--test-limit", test_limit, "use the first N test images (0: all)");
    app.add_option("--isa", isa, "GEMM path: auto, scalar, avx2, avx512vnni");
    app.add_option("--tile", tile, "images per working tile of one thread")->check(CLI::PositiveNumber);
    app.add_flag("--unpack-in-gemm", unpack_in_gemm, "unpack low-bit weights inside the GEMM loop (needs AVX-512 VBMI)");
    app.add_option("--verify", verify,
                   "checkpoint the artifact was exported from: also run its LibTorch model (integer-exact "
                   "evaluation) at the same widths and report top-1 mismatches and the largest logit difference");
  }
  int run() {
    deploy::RuntimeOptions ro;
    ro.threads = threads;
    ro.isa = parse_isa(isa);
    ro.tile = tile;
    ro.unpack_in_gemm = unpack_in_gemm;
    Artifact a = deploy::read_artifact(input);
    if (widths.given()) {
      BS_CHECK(a.master, "'", input, "' is already switched to ", a.label(), "; --bits/--layer-bits need a master artifact");
      a = widths.apply(a, threads);
    } else if (a.master) {
      a = deploy::switch_uniform(a, a.high_bits, threads);
    }
    const deploy::Runtime rt(a, ro);
    const std::string ds = dataset.empty() ? a.provenance.value("dataset", std::string("fashion-mnist")) : dataset;
    const std::string dir = data_dir.empty() ? a.provenance.value("data_dir", std::string()) : data_dir;
    auto data = data::load_dataset(ds, dir);
    BS_CHECK(data.test.channels() == a.in_channels && data.test.num_classes == a.num_classes, "artifact '", input,
             "' expects ", a.in_channels, " channels and ", a.num_classes, " classes; dataset ", ds, " has ",
             data.test.channels(), " and ", data.test.num_classes);
    data::LoaderOptions lo;
    lo.batch_size = batch;
    lo.limit = test_limit;
    data::Loader loader(data.test, lo);
    loader.start_epoch(0);
    data::Batch b;
    int64_t correct = 0, count = 0, mismatches = 0;
    double forward_ms = 0, max_diff = 0;
    std::vector<float> logits;
    models::Model reference;
    if (!verify.empty()) {
      train::Checkpoint ck(verify);
      reference = models::create_model(ck.spec());
      ck.load_model(*reference, /*strict=*/true);
      reference->eval();
      nn::set_integer_eval(*reference, true);
      nn::apply_bits(*reference, nn::layer_bits_config(a.layer_bits()));
    }
    while (loader.next(b)) {
      const int n = int(b.images.size(0));
      logits.resize(size_t(n) * size_t(a.num_classes));
      const auto t0 = std::chrono::steady_clock::now();
      rt.forward(b.images.data_ptr<float>(), n, int(b.images.size(2)), int(b.images.size(3)), logits.data());
      forward_ms += ms_since(t0);
      const int64_t* labels = b.labels.data_ptr<int64_t>();
      for (int i = 0; i < n; ++i) {
        const float* row = logits.data() + size_t(i) * a.num_classes;
        correct += (std::max_element(row, row + a.num_classes) - row) == labels[i];
      }
      count += n;
      if (reference) {
        torch::NoGradGuard ng;
        auto ref = reference->forward(b.images).contiguous();
        auto got = torch::from_blob(logits.data(), {n, a.num_classes}, torch::kFloat32);
        max_diff = std::max(max_diff, (ref - got).abs().max().item<double>());
        mismatches += ref.argmax(1).ne(got.argmax(1)).sum().item<int64_t>();
      }
    }
    json out{{"artifact", input},
                      {"width", a.label()},
                      {"images", count},
                      {"accuracy", count ? 100.0 * double(correct) / double(count) : 0.0},
                      {"images_per_s", forward_ms > 0 ? 1000.0 * double(count) / forward_ms : 0.0},
                      {"ms_per_batch", count ? forward_ms / double((count + batch - 1) / batch) : 0.0},
                      {"batch", batch},
                      {"threads", rt.threads()},
                      {"isa", deploy::qgemm_isa_name(rt.isa())}};
    if (reference) out["verify"] = {{"checkpoint", verify}, {"top1_mismatches", mismatches}, {"max_abs_logit_diff", max_diff}};
    std::cout << out.dump(2) << std::endl;
    return 0;
  }
};

struct InspectCommand {
  std::string input;
  bool as_json = false;
  void add(CLI::App& app) {
    app.add_option("artifact", input, "artifact to describe")->required();
    app.add_flag("--json", as_json, "print JSON instead of a table");
  }
  int run() {
    const Artifact a = deploy::read_artifact(input);
    json layers = json::array();
    size_t total = 0;
    for (const auto& l : a.layers) {
      std::vector<int64_t> shape = l.weight_shape();
      const bool packed = l.quantized && !a.master && l.bits < 8;
      const size_t bytes = packed ? size_t(l.out) * deploy::packed_bytes(size_t(l.row_elems()), l.bits)
                           : l.quantized ? l.codes.size()
                                         : l.weight.size() * sizeof(float);
      total += bytes;
      json act = json::array();
      for (const auto& [b, _] : l.act_scale) act.push_back(b);
      layers.push_back({{"name", l.name},
                        {"kind", l.kind == deploy::LayerKind::kConv ? "conv" : "linear"},
                        {"width", l.quantized ? std::to_string(l.bits) + (a.master && l.switchable ? " (master)" : "")
                                              : std::string("fp32")},
                        {"shape", shape},
                        {"weight_bytes", bytes},
                        {"act_widths", act}});
    }
    const auto size = deploy::artifact_size(a);
    json out = {{"artifact", input},     {"arch", a.arch},           {"bits", nn::format_bit_list(a.bits)},
                {"kind", a.label()},     {"file_bytes", file_size(input)}, {"weight_bytes", total},
                {"tensor_bytes", size.total_tensor_bytes}, {"layers", layers}, {"provenance", a.provenance}};
    if (as_json) {
      std::cout << out.dump(2) << std::endl;
      return 0;
    }
    fmt::print("{}: {} {}, bits {}, {} bytes on disk ({} of weights)\n", input, a.arch, a.label(),
               nn::format_bit_list(a.bits), file_size(input), total);
    fmt::print("{:<24} {:<7} {:<12} {:<18} {:>10}  {}\n", "layer", "kind", "width", "shape", "bytes", "act widths");
    for (const auto& l : layers) {
      std::string shape;
      for (const auto& d : l["shape"]) shape += (shape.empty() ? "" : "x") + std::to_string(d.get<int64_t>());
      std::string act;
      for (const auto& b : l["act_widths"]) act += (act.empty() ? "" : ",") + std::to_string(b.get<int>());
      fmt::print("{:<24} {:<7} {:<12} {:<18} {:>10}  {}\n", l["name"].get<std::string>(), l["kind"].get<std::string>(),
                 l["width"].get<std::string>(), shape, l["weight_bytes"].get<size_t>(), act.empty() ? "-" : act);
    }
    return 0;
  }
};

}  // namespace

void add_deploy_commands(CLI::App& app, CommandTable& table) {
  table.add_command<ExportCommand>(app, "export", "write the INT8 master artifact (safetensors) of a checkpoint");
  table.add_command<SwitchCommand>(app, "switch", "derive a lower-width (or per-layer) artifact with integer operations");
  table.add_command<InferCommand>(app, "infer", "test accuracy and throughput of the integer runtime (JSON; resnet20 and smallcnn artifacts)");
  table.add_command<InspectCommand>(app, "inspect", "list an artifact's layers, widths, shapes and bytes");
}

}  // namespace bitswitch::cli
