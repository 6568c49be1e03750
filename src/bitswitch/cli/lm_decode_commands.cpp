// `bitswitch generate` and `bitswitch perplexity`: a language-model artifact run by the integer
// decoder of the deployment library (deploy/lm_decoder.h; SPEC.md Sec. 9). Text is tokenized
// here with the artifact's own tokenizer (data/text.h); the decoder takes token ids.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <iterator>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bitswitch/cli/commands.h"
#include "bitswitch/cli/width_choice.h"
#include "bitswitch/data/text.h"
#include "bitswitch/deploy/lm_artifact.h"
#include "bitswitch/deploy/lm_decoder.h"
#include "bitswitch/deploy/lm_eval.h"
#include "bitswitch/util/error.h"

namespace bitswitch::cli {

using json = nlohmann::json;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The artifact at the widths asked for, checked to be a language model, with its tokenizer.
struct LoadedLmArtifact {
  Artifact artifact;
  std::unique_ptr<data::Tokenizer> tokenizer;
};

LoadedLmArtifact load_lm_artifact(const std::string& path, const WidthChoice& widths, int threads) {
  Artifact a = deploy::read_artifact(path);
  BS_CHECK(a.is_lm(), "'", path, "' is not a language-model artifact (`bitswitch infer` runs image models)");
  LoadedLmArtifact out;
  out.tokenizer = data::load_tokenizer(a.tokenizer_kind, a.tokenizer_model, path + ": tokenizer");
  BS_CHECK(out.tokenizer->vocab_size() == a.lm.vocab, path, ": the tokenizer has ", out.tokenizer->vocab_size(),
           " tokens, the model ", a.lm.vocab);
  out.artifact = widths.runnable(std::move(a), path, threads);
  return out;
}

struct GenerateCommand {
  std::string input, prompt;
  WidthChoice widths;
  int64_t max_tokens = 100;
  double temperature = 0.8, top_p = 1.0;
  int top_k = 40, threads = 0;
  uint64_t seed = 1;

  void add(CLI::App& app) {
    app.add_option("artifact", input, "language-model artifact (master or switched)")->required();
    app.add_option("--prompt", prompt, "text to continue")->required();
    widths.add(app, "to run a master artifact at, switched in memory (default: its highest width)");
    app.add_option("--max-tokens", max_tokens, "tokens to generate (default: 100; fewer if the context fills)")
        ->check(CLI::PositiveNumber);
    app.add_option("--temperature", temperature, "sampling temperature; 0: greedy (default: 0.8)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--top-k", top_k, "sample from the k likeliest tokens; 0: all (default: 40)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--top-p", top_p, "then from the smallest set of probability >= p (default: 1, all)")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--seed", seed, "sampling seed (default: 1)");
    app.add_option("--threads", threads, "decoder threads (0: all cores)");
  }

  int run() {
    auto lm = load_lm_artifact(input, widths, threads);
    const auto weights = deploy::lm_decoder_weights(lm.artifact);
    deploy::LmDecoderOptions opt;
    opt.threads = threads;
    deploy::LmDecoder dec(weights, opt);
    const int64_t context = dec.shape().context, vocab = dec.shape().vocab;
    const auto ids = lm.tokenizer->encode(prompt);
    BS_CHECK(!ids.empty(), "generate: the prompt is empty");
    BS_CHECK(int64_t(ids.size()) < context, "generate: the prompt has ", ids.size(), " tokens; the model's context is ",
             context);
    const int64_t n_new = std::min<int64_t>(max_tokens, context - int64_t(ids.size()));
    deploy::SamplerOptions so;
    so.temperature = temperature, so.top_k = top_k, so.top_p = top_p, so.seed = seed;
    deploy::Sampler sampler(so);
    std::vector<float> logits(static_cast<size_t>(vocab));
    std::cout << prompt << std::flush;
    const auto t0 = std::chrono::steady_clock::now();
    dec.forward(ids.data(), int(ids.size()), logits.data());
    const double prefill_s = seconds_since(t0);
    // Streaming: print the decoded continuation as it grows, holding back an incomplete UTF-8
    // character (a byte-fallback piece) until the rest of it arrives.
    std::vector<int32_t> out;
    size_t printed = 0;
    const auto t1 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < n_new; ++i) {
      const int32_t next = sampler.sample(logits.data(), vocab);
      out.push_back(next);
      const std::string text = lm.tokenizer->decode(out);
      if (text.size() > printed && data::is_valid_utf8(text)) {
        std::cout << text.substr(printed) << std::flush;
        printed = text.size();
      }
      if (i + 1 < n_new) dec.forward(&next, 1, logits.data());
    }
    const double decode_s = seconds_since(t1);
    const std::string text = lm.tokenizer->decode(out);
    if (text.size() > printed) std::cout << text.substr(printed);
    std::cout << std::endl;
    // n_new tokens were sampled after n_new - 1 decode steps (the first came from the prefill).
    fmt::print(stderr,
               "[bitswitch] {} {}: prompt {} tokens at {:.1f} tokens/s, decode {} tokens at {:.1f} tokens/s "
               "(threads: {})\n",
               input, lm.artifact.label(), ids.size(), prefill_s > 0 ? double(ids.size()) / prefill_s : 0.0, n_new,
               decode_s > 0 ? double(n_new - 1) / decode_s : 0.0,
               threads > 0 ? std::to_string(threads) : std::string("all cores"));
    if (n_new < max_tokens)
      fmt::print(stderr, "[bitswitch] stopped after {} tokens: the context of {} is full\n", n_new, context);
    return 0;
  }
};

struct PerplexityCommand {
  std::string input, text_file;
  WidthChoice widths;
  int threads = 0;
  int64_t windows = -1;

  void add(CLI::App& app) {
    app.add_option("artifact", input, "language-model artifact (master or switched)")->required();
    widths.add(app, "to run a master artifact at, switched in memory (default: its highest width)");
    app.add_option("--text", text_file,
                   "UTF-8 text file to score, all of it (default: the held-out split of the corpus the model was "
                   "trained on, rebuilt from the paths and held-out fraction the artifact records)");
    app.add_option("--windows", windows,
                   "score the first N windows of context length (default: as many as the trainer's evaluation "
                   "used, recorded in the artifact; 0: all)");
    app.add_option("--threads", threads, "decoder threads (0: all cores)");
  }

  int run() {
    auto lm = load_lm_artifact(input, widths, threads);
    const Artifact& a = lm.artifact;
    std::string text, source;
    if (!text_file.empty()) {
      std::ifstream in(text_file, std::ios::binary);
      BS_CHECK(in, "perplexity: cannot read '", text_file, "'");
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      BS_CHECK(data::is_valid_utf8(text), "perplexity: '", text_file, "' is not UTF-8 text");
      source = text_file;
    } else {
      const auto& p = a.provenance;
      BS_CHECK(p.contains("data") && p.contains("heldout_fraction"), "perplexity: '", input,
               "' does not record its training corpus (provenance 'data', 'heldout_fraction'); give --text FILE");
      const auto paths = p["data"].get<std::vector<std::string>>();
      text = data::read_text_split(paths, p["heldout_fraction"].get<double>()).heldout;
      source = "held-out split of " + p["data"].dump();
    }
    int64_t max_windows = windows;
    if (max_windows < 0) max_windows = text_file.empty() ? a.provenance.value("eval_windows", int64_t(0)) : 0;
    const auto tokens = lm.tokenizer->encode(text);
    std::vector<int64_t> token_bytes(size_t(a.lm.vocab));
    for (size_t i = 0; i < token_bytes.size(); ++i) token_bytes[i] = lm.tokenizer->token_bytes(int32_t(i));
    const auto weights = deploy::lm_decoder_weights(a);
    deploy::LmDecoderOptions opt;
    opt.threads = threads;
    deploy::LmDecoder dec(weights, opt);
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = deploy::lm_score(dec, tokens, token_bytes, max_windows);
    const double s = seconds_since(t0);
    std::cout << json{{"artifact", input},
                      {"width", a.label()},
                      {"text", source},
                      {"windows", r.windows},
                      {"tokens", r.tokens},
                      {"loss", r.loss},
                      {"perplexity", r.perplexity},
                      {"bits_per_byte", r.bits_per_byte},
                      {"tokens_per_s", s > 0 ? double(r.tokens) / s : 0.0},
                      {"threads", threads > 0 ? json(threads) : json("all cores")}}
                     .dump(2)
              << std::endl;
    return 0;
  }
};

}  // namespace

void add_lm_decode_commands(CLI::App& app, CommandTable& table) {
  table.add_command<GenerateCommand>(app, "generate",
                                     "continue a prompt with the integer decoder from a language-model artifact; "
                                     "streams the text, then prompt and decode tokens/s on stderr");
  table.add_command<PerplexityCommand>(app, "perplexity",
                                       "held-out perplexity and bits per byte of a language-model artifact, computed "
                                       "by the integer decoder (JSON)");
}

}  // namespace bitswitch::cli
