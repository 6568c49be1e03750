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
#include "bitswitch/cli/width_choice.h"
#include "bitswitch/data/datasets.h"
#include "bitswitch/data/image_folder.h"
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

struct ExportCommand {
  std::string checkpoint, output;
  void add(CLI::App& app) {
    app.add_option("--checkpoint", checkpoint, "multi-precision checkpoint (from `bitswitch train` or `bitswitch lm-train`)")->required();
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
  int threads = 0, batch = 64, tile = 0, image_size = 0, workers = 2;
  bool unpack_in_gemm = false, profile = false;
  int64_t test_limit = 0;
  void add(CLI::App& app) {
    app.add_option("artifact", input, "artifact (master or switched)")->required();
    app.add_flag("--profile", profile,
                 "time every step of the runtime's plan and report them (`profile` in the output: per step "
                 "ms per image, share of the time, GMAC/s of conv/linear steps)");
    widths.add(app, "to run a master artifact at (default: its highest width)");
    app.add_option("--batch", batch, "images per forward call")->check(CLI::PositiveNumber);
    app.add_option("--threads", threads, "threads (0: all cores)");
    app.add_option("--dataset", dataset, "dataset (default: the one the model was trained on)");
    app.add_option("--data-dir", data_dir, "dataset directory (default: the training run's)");
    app.add_option("--test-limit", test_limit, "use the first N test images (0: all)");
    app.add_option("--image-size", image_size,
                   "imagefolder: crop size of the evaluation transform (resize to size*8/7, center crop; default: "
                   "the training run's, else 224)");
    app.add_option("--workers", workers, "imagefolder: JPEG decoding threads")->check(CLI::PositiveNumber);
    app.add_option("--isa", isa, "GEMM path: auto, scalar, avx2, avx512vnni");
    app.add_option("--tile", tile, "images per working tile of one thread (0: up to 4, fewer for small batches)")
        ->check(CLI::NonNegativeNumber);
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
    ro.profile = profile;
    Artifact a = deploy::read_artifact(input);
    a = widths.runnable(std::move(a), input, threads);
    const deploy::Runtime rt(a, ro);
    const std::string ds = dataset.empty() ? a.provenance.value("dataset", std::string("fashion-mnist")) : dataset;
    const std::string dir = data_dir.empty() ? a.provenance.value("data_dir", std::string()) : data_dir;
    std::unique_ptr<data::BatchSource> source;
    data::DatasetPair memory;
    std::unique_ptr<data::Loader> mem_loader;
    if (ds == "imagefolder") {
      // The evaluation transform of training (train/data_sources.cpp): resize, center crop.
      BS_CHECK(!dir.empty(), "infer --dataset imagefolder: give --data-dir (a folder of <class>/*.jpg, or one with val/)");
      const auto val = std::filesystem::path(dir) / "val";
      auto folder = data::scan_image_folder(std::filesystem::is_directory(val) ? val.string() : dir);
      BS_CHECK(int64_t(folder.classes.size()) == a.num_classes, "artifact '", input, "' has ", a.num_classes,
               " classes; image folder '", folder.root, "' has ", folder.classes.size());
      BS_CHECK(a.classes.empty() || a.classes == folder.classes, "image folder '", folder.root,
               "': its class folders are not the artifact's classes (labels would not match)");
      data::ImageFolderOptions o;
      o.crop = image_size > 0 ? image_size : int(a.provenance.value("image_size", 224));
      o.resize = data::eval_resize(o.crop);
      o.batch_size = batch;
      o.threads = workers;
      o.prefetch = 2 * workers;
      o.limit = test_limit;
      BS_CHECK(a.in_channels == 3, "artifact '", input, "' expects ", a.in_channels, " channels; image folders are RGB");
      source = std::make_unique<data::ImageFolderLoader>(std::move(folder), o);
    } else {
      memory = data::load_dataset(ds, dir);
      BS_CHECK(memory.test.channels() == a.in_channels && memory.test.num_classes == a.num_classes, "artifact '", input,
               "' expects ", a.in_channels, " channels and ", a.num_classes, " classes; dataset ", ds, " has ",
               memory.test.channels(), " and ", memory.test.num_classes);
      data::LoaderOptions lo;
      lo.batch_size = batch;
      lo.limit = test_limit;
      source = std::make_unique<data::Loader>(memory.test, lo);
    }
    data::BatchSource& loader = *source;
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
      // Fixed-width (8-bit first/last) layers run quantized, as in the artifact.
      nn::apply_bits(*reference, nn::layer_bits_config(a.layer_bits(), a.bits.front()));
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
                      {"dataset", ds},
                      {"width", a.label()},
                      {"images", count},
                      {"accuracy", count ? 100.0 * double(correct) / double(count) : 0.0},
                      {"images_per_s", forward_ms > 0 ? 1000.0 * double(count) / forward_ms : 0.0},
                      {"ms_per_batch", count ? forward_ms / double((count + batch - 1) / batch) : 0.0},
                      {"batch", batch},
                      {"threads", rt.threads()},
                      {"isa", deploy::qgemm_isa_name(rt.isa())}};
    if (reference) out["verify"] = {{"checkpoint", verify}, {"top1_mismatches", mismatches}, {"max_abs_logit_diff", max_diff}};
    if (profile) {
      // Thread-milliseconds summed over the calls; shares of their total.
      const auto steps = rt.profile();
      double total = 0;
      for (const auto& p : steps) total += p.thread_ms;
      json rows = json::array();
      for (const auto& p : steps) {
        if (p.images == 0) continue;
        const double ms = p.thread_ms / double(p.images);
        json r{{"step", p.step}, {"ms_per_image", ms}, {"share", total > 0 ? p.thread_ms / total : 0.0}};
        if (p.macs > 0) r["gmac_per_s"] = double(p.macs) / ms / 1e6;
        rows.push_back(r);
      }
      out["profile"] = rows;
    }
    std::cout << out.dump(2) << std::endl;
    return 0;
  }
};

struct PredictCommand {
  std::string input, isa = "auto";
  std::vector<std::string> images;
  WidthChoice widths;
  int top = 5, threads = 0, image_size = 0;
  void add(CLI::App& app) {
    app.add_option("artifact", input, "artifact (master or switched) of an RGB image model")->required();
    app.add_option("images", images, "JPEG images")->required();
    widths.add(app, "to run a master artifact at (default: its highest width)");
    app.add_option("--top", top, "classes to print per image")->check(CLI::PositiveNumber);
    app.add_option("--threads", threads, "threads (0: all cores)");
    app.add_option("--image-size", image_size, "crop size of the evaluation transform (default: the training run's, else 224)");
    app.add_option("--isa", isa, "GEMM path: auto, scalar, avx2, avx512vnni");
  }
  int run() {
    Artifact a = deploy::read_artifact(input);
    BS_CHECK(a.in_channels == 3, "predict: artifact '", input, "' expects ", a.in_channels, " channels; JPEGs are RGB");
    a = widths.runnable(std::move(a), input, threads);
    deploy::RuntimeOptions ro;
    ro.threads = threads;
    ro.isa = parse_isa(isa);
    const deploy::Runtime rt(a, ro);
    // The images through the evaluation transform of training (one definition: the image-folder
    // loader), in the order given.
    data::ImageFolder folder;
    folder.root = "command line";
    folder.classes = {"?"};
    for (const auto& p : images) {
      BS_CHECK(std::filesystem::is_regular_file(p), "predict: '", p, "' is not a file");
      folder.paths.push_back(p);
      folder.labels.push_back(0);
    }
    data::ImageFolderOptions o;
    o.crop = image_size > 0 ? image_size : int(a.provenance.value("image_size", 224));
    o.resize = data::eval_resize(o.crop);
    o.batch_size = int64_t(images.size());
    o.skip_corrupt = false;
    data::ImageFolderLoader loader(std::move(folder), o);
    loader.start_epoch(0);
    data::Batch b;
    BS_CHECK(loader.next(b), "predict: no image decoded");
    const int n = int(b.images.size(0));
    const auto logits = rt.forward(b.images.data_ptr<float>(), n, int(b.images.size(2)), int(b.images.size(3)));
    const int k = std::min<int>(top, int(a.num_classes));
    for (int i = 0; i < n; ++i) {
      const float* row = logits.data() + size_t(i) * a.num_classes;
      // Softmax probabilities (max-subtracted) for display.
      const float mx = *std::max_element(row, row + a.num_classes);
      double z = 0;
      for (int64_t c = 0; c < a.num_classes; ++c) z += std::exp(double(row[c] - mx));
      std::vector<int> idx(size_t(a.num_classes));
      for (size_t c = 0; c < idx.size(); ++c) idx[c] = int(c);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int x, int y) { return row[x] > row[y]; });
      fmt::print("{}\n", images[size_t(i)]);
      for (int j = 0; j < k; ++j) {
        const int c = idx[size_t(j)];
        const std::string name = a.classes.empty() ? "class " + std::to_string(c) : a.classes[size_t(c)];
        fmt::print("  {:>2}. {:<32} {:6.2f}%  (logit {:.4f})\n", j + 1, name, 100.0 * std::exp(double(row[c] - mx)) / z,
                   row[c]);
      }
    }
    return 0;
  }
};

struct InspectCommand {
  std::string input;
  bool as_json = false, graph = false;
  void add(CLI::App& app) {
    app.add_option("artifact", input, "artifact to describe")->required();
    app.add_flag("--json", as_json, "print JSON instead of a table");
    app.add_flag("--graph", graph, "also print the op graph and the runtime's fused execution plan");
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
      const char* kind = l.kind == deploy::LayerKind::kConv     ? "conv"
                         : l.kind == deploy::LayerKind::kLinear ? "linear"
                                                                : "embedding";
      std::string width = l.quantized ? std::to_string(l.bits) : std::string("fp32");
      if (l.group > 0) width += " g" + std::to_string(l.group);
      if (l.quantized && a.master && l.switchable) width += " (master)";
      layers.push_back({{"name", l.name},
                        {"kind", kind},
                        {"width", width},
                        {"group", l.group},
                        {"input", !l.quantize_input ? "none" : l.per_token_input ? "per_token" : l.signed_input ? "signed" : "unsigned"},
                        {"shape", shape},
                        {"weight_bytes", bytes},
                        {"scale_bytes", l.scale.size() * sizeof(float)},
                        {"act_widths", act}});
    }
    const auto size = deploy::artifact_size(a);
    json out = {{"artifact", input},     {"arch", a.arch},           {"bits", nn::format_bit_list(a.bits)},
                {"kind", a.label()},     {"file_bytes", file_size(input)}, {"weight_bytes", total},
                {"tensor_bytes", size.total_tensor_bytes}, {"layers", layers}, {"provenance", a.provenance},
                {"classes", a.classes.size()}, {"graph_nodes", a.graph.nodes.size()}};
    if (a.is_lm()) {
      out["lm"] = a.lm.to_json();
      out["tokenizer"] = {{"kind", a.tokenizer_kind}, {"bytes", a.tokenizer_model.size()}};
      out["norms"] = a.norms.size();
    }
    std::vector<std::string> plan;
    if (graph) {
      out["graph"] = format::graph_to_json(a.graph);
    }
    if (graph && !a.is_lm()) {
      deploy::RuntimeOptions ro;
      ro.threads = 1;
      plan = deploy::Runtime(a.master ? deploy::switch_uniform(a, a.high_bits, 1) : a, ro).plan();
      out["plan"] = plan;
    }
    if (as_json) {
      std::cout << out.dump(2) << std::endl;
      return 0;
    }
    fmt::print("{}: {} {}, bits {}, {} bytes on disk ({} of weights)\n", input, a.arch, a.label(),
               nn::format_bit_list(a.bits), file_size(input), total);
    if (a.is_lm())
      fmt::print("language model: vocab {}, dim {}, {} layers, {} heads ({} key/value), head width {}, MLP {}, "
                 "context {}, rope theta {}, {}{}; {} RMSNorms; tokenizer {} ({} bytes)\n",
                 a.lm.vocab, a.lm.dim, a.lm.layers, a.lm.heads, a.lm.kv_heads, a.lm.head_dim(), a.lm.mlp, a.lm.context,
                 a.lm.rope_theta, a.lm.group_size > 0 ? fmt::format("weight scales per group of {}", a.lm.group_size)
                                                       : std::string("weight scales per output channel"),
                 a.lm.tied ? ", head tied to the embedding" : "", a.norms.size(), a.tokenizer_kind,
                 a.tokenizer_model.size());
    fmt::print("{:<32} {:<9} {:<14} {:<18} {:>10} {:>8}  {}\n", "layer", "kind", "width", "shape", "bytes",
               "scales", a.is_lm() ? "input" : "act widths");
    for (const auto& l : layers) {
      std::string shape;
      for (const auto& d : l["shape"]) shape += (shape.empty() ? "" : "x") + std::to_string(d.get<int64_t>());
      std::string act;
      for (const auto& b : l["act_widths"]) act += (act.empty() ? "" : ",") + std::to_string(b.get<int>());
      fmt::print("{:<32} {:<9} {:<14} {:<18} {:>10} {:>8}  {}\n", l["name"].get<std::string>(),
                 l["kind"].get<std::string>(), l["width"].get<std::string>(), shape, l["weight_bytes"].get<size_t>(),
                 l["scale_bytes"].get<size_t>(),
                 a.is_lm() ? l["input"].get<std::string>() : (act.empty() ? "-" : act));
    }
    if (graph) {
      fmt::print("\ngraph: {} nodes, output '{}'\n", a.graph.nodes.size(), a.graph.output);
      for (const auto& n : a.graph.nodes) {
        std::string ins;
        for (const auto& i : n.inputs) ins += (ins.empty() ? "" : ", ") + i;
        std::string attrs;
        if (n.op == format::OpKind::kConv)
          attrs = fmt::format("{}->{} k{} s{} p{}{} in:{}", n.in, n.out, n.kernel, n.stride, n.padding,
                              n.groups > 1 ? fmt::format(" g{}", n.groups) : "", format::input_quant_name(n.quant));
        else if (n.op == format::OpKind::kLinear)
          attrs = fmt::format("{}->{} in:{}", n.in, n.out, format::input_quant_name(n.quant));
        else if (n.op == format::OpKind::kMaxPool)
          attrs = fmt::format("k{} s{} p{}", n.kernel, n.stride, n.padding);
        else if (n.op == format::OpKind::kInput || n.op == format::OpKind::kBatchNorm)
          attrs = fmt::format("{} channels", n.out);
        else if (n.op == format::OpKind::kTokens)
          attrs = fmt::format("vocab {}", n.out);
        else if (n.op == format::OpKind::kEmbedding || n.op == format::OpKind::kHead)
          attrs = fmt::format("{}->{}{}", n.in, n.out,
                              n.op == format::OpKind::kHead ? fmt::format(" in:{}", format::input_quant_name(n.quant)) : "");
        else if (n.op == format::OpKind::kRmsNorm)
          attrs = fmt::format("dim {} eps {}", n.out, n.eps);
        else if (n.op == format::OpKind::kAttention)
          attrs = fmt::format("{} heads / {} kv x {} theta {}", n.heads, n.kv_heads, n.head_dim, n.rope_theta);
        fmt::print("  {:<36} {:<15} {:<24} ({})\n", n.name, format::op_name(n.op), attrs, ins);
      }
      if (!a.is_lm()) {
        fmt::print("\nexecution plan ({} steps):\n", plan.size());
        for (const auto& p : plan) fmt::print("  {}\n", p);
      }
    }
    return 0;
  }
};

}  // namespace

void add_deploy_commands(CLI::App& app, CommandTable& table) {
  table.add_command<ExportCommand>(app, "export", "write the INT8 master artifact (safetensors) of a checkpoint");
  table.add_command<SwitchCommand>(app, "switch", "derive a lower-width (or per-layer) artifact with integer operations");
  table.add_command<InferCommand>(app, "infer", "test accuracy and throughput of the integer runtime (JSON)");
  table.add_command<PredictCommand>(app, "predict", "top classes of JPEG images with the integer runtime");
  table.add_command<InspectCommand>(app, "inspect", "list an artifact's layers, widths, shapes and bytes (--graph: its op graph)");
}

}  // namespace bitswitch::cli
