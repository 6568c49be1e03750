// Language-model trainer (SPEC.md Sec. 4, 5, 9; paper Sec. 3.2-3.3 and 4.3, Alg. A.2 with the
// summed Alg. A.1 as an option). The pieces shared with the CNN trainer are reused: the ALRS
// rule and cosine schedule (alrs.h), gradient clearing (step.h), the parameter groups
// (nn::split_params), checkpoints, progress bars and atomic files.
//
// Self-distillation for LMs: the CNN recipe's highest-width target of the previous epoch would be
// a [tokens, vocab] table here; the highest width trains on the data alone and every lower width
// on (1 - alpha_t) * onehot + alpha_t * P_high of this step, alpha_t = 0.7 * (step + 1) / steps.
#include "bitswitch/train/lm_trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/optim/adamw.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>

#include <fmt/format.h>

#include "bitswitch/nn/layers.h"
#include "bitswitch/train/alrs.h"
#include "bitswitch/train/checkpoint.h"
#include "bitswitch/train/progress.h"
#include "bitswitch/train/step.h"
#include "bitswitch/train/trainer.h"
#include "bitswitch/util/atomic_file.h"
#include "bitswitch/util/error.h"

namespace bitswitch::train {

using json = nlohmann::json;
namespace fs = std::filesystem;

LmEval evaluate_lm(models::LlamaImpl& model, const data::TokenWindows& windows, const data::Tokenizer& tokenizer,
                   const nn::BitConfig& bits, int64_t max_windows, int64_t batch) {
  torch::NoGradGuard ng;
  const bool was_training = model.is_training();
  model.eval();
  nn::apply_bits(model, bits);
  const int64_t n = max_windows > 0 ? std::min(max_windows, windows.size()) : windows.size();
  BS_CHECK(n > 0, "evaluation: the held-out text has no complete window of ", windows.length(), " tokens");
  // Byte count of every vocabulary entry, looked up per target token in one gather.
  std::vector<int64_t> table(size_t(tokenizer.vocab_size()));
  for (size_t i = 0; i < table.size(); ++i) table[i] = tokenizer.token_bytes(int32_t(i));
  auto bytes_of = torch::tensor(table, torch::kInt64);
  double loss_sum = 0;
  int64_t tokens = 0, bytes = 0;
  for (int64_t start = 0; start < n; start += batch) {
    auto w = windows.gather(torch::arange(start, std::min(n, start + batch), torch::kInt64));
    auto x = w.narrow(1, 0, windows.length()), y = w.narrow(1, 1, windows.length());
    auto logits = model.forward(x);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits.reshape({-1, logits.size(-1)}), y.reshape({-1}),
                    torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    tokens += y.numel();
    bytes += bytes_of.index({y.reshape({-1})}).sum().item<int64_t>();
  }
  model.train(was_training);
  return LmScore::from_sums(loss_sum, tokens, bytes, n);
}

bool is_lm_checkpoint(const json& meta) { return meta.value("task", std::string()) == "lm"; }

namespace {

models::ModelSpec lm_spec(const LmConfig& c, int64_t vocab) {
  models::ModelSpec s;
  s.name = c.model;
  s.in_channels = 1;
  s.num_classes = vocab;  // the classes of a language model are its tokens
  s.bits = nn::check_bit_list(c.bits, "bits");
  s.first_last_bits = c.first_last_bits;
  s.rounding = c.second_rounding == "floor" ? quant::SecondRounding::kFloor : quant::SecondRounding::kHalfUp;
  s.exact_scale_grad = c.exact_scale_grad;
  s.arch = models::resolve_llama_arch(c.arch, "`arch`");
  return s;
}

std::shared_ptr<models::LlamaImpl> build(const models::ModelSpec& spec) {
  auto m = std::dynamic_pointer_cast<models::LlamaImpl>(models::create_model(spec));
  BS_CHECK(m != nullptr, "model '", spec.name, "' is not a language model");
  return m;
}

torch::Tensor tokenizer_tensor(const data::Tokenizer& t) {
  const auto bytes = t.serialize();
  auto out = torch::empty({int64_t(bytes.size())}, torch::kUInt8);
  if (!bytes.empty()) std::memcpy(out.data_ptr(), bytes.data(), bytes.size());
  return out;
}

std::shared_ptr<data::Tokenizer> tokenizer_from(const Checkpoint& ck) {
  const auto kind = ck.meta().value("tokenizer", std::string("byte"));
  auto t = ck.extra("tokenizer");
  std::string bytes;
  if (t.defined() && t.numel() > 0) bytes.assign(reinterpret_cast<const char*>(t.contiguous().data_ptr()), t.numel());
  return data::load_tokenizer(kind, bytes, ck.path());
}

json eval_json(const std::map<std::string, LmEval>& r, double LmEval::*field) {
  json j = json::object();
  for (const auto& [k, v] : r) j[k] = v.*field;
  return j;
}

class LmTrainer {
 public:
  explicit LmTrainer(LmConfig cfg) : cfg_(std::move(cfg)) {}

  LmResult run() {
    cfg_.validate();
    const int threads = configure_threads(cfg_.threads);
    fs::create_directories(cfg_.out);
    ckpt_path_ = (fs::path(cfg_.out) / "checkpoint.pt").string();
    metrics_path_ = (fs::path(cfg_.out) / "metrics.jsonl").string();

    // Data and tokenizer: a resumed or initialised run keeps the tokenizer it was trained with.
    const auto split = data::read_text_split(cfg_.data, cfg_.heldout_fraction);
    std::unique_ptr<Checkpoint> resume_ck;
    std::shared_ptr<data::Tokenizer> tokenizer;
    if (cfg_.resume) {
      resume_ck = std::make_unique<Checkpoint>(ckpt_path_);
      BS_CHECK(is_lm_checkpoint(resume_ck->meta()), "'", ckpt_path_, "' is not a language-model checkpoint");
      tokenizer = tokenizer_from(*resume_ck);
    } else if (!cfg_.init.empty()) {
      Checkpoint init(cfg_.init);
      BS_CHECK(is_lm_checkpoint(init.meta()), "`init`: '", cfg_.init, "' is not a language-model checkpoint");
      tokenizer = tokenizer_from(init);
    } else if (cfg_.tokenizer == "byte") {
      tokenizer = data::byte_tokenizer();
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      tokenizer = data::train_sentencepiece(split.train, cfg_.vocab, cfg_.spm_model_type, cfg_.seed);
      log(fmt::format("trained a {} sentencepiece tokenizer of {} pieces on the training text in {:.1f} s",
                      cfg_.spm_model_type, tokenizer->vocab_size(),
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()));
    }
    if (tokenizer->kind() == "sentencepiece") {
      const auto bytes = tokenizer->serialize();
      write_atomically((fs::path(cfg_.out) / "tokenizer.model").string(), [&](const std::string& tmp) {
        std::ofstream o(tmp, std::ios::binary);
        o.write(bytes.data(), std::streamsize(bytes.size()));
        BS_CHECK(o, "cannot write '", tmp, "'");
      });
    }
    corpus_ = data::tokenize_corpus(split, tokenizer);
    spec_ = lm_spec(cfg_, tokenizer->vocab_size());
    torch::manual_seed(cfg_.seed);
    model_ = build(spec_);
    model_->train();
    params_ = model_->parameters();
    const int64_t ctx = model_->arch().context;
    train_windows_ = std::make_unique<data::TokenWindows>(corpus_.train_tokens, ctx);
    heldout_windows_ = std::make_unique<data::TokenWindows>(corpus_.heldout_tokens, ctx);
    BS_CHECK(train_windows_->size() >= 1, "the training text has no window of ", ctx + 1, " tokens");
    int64_t n_params = 0;
    for (const auto& p : params_) n_params += p.numel();
    log(fmt::format("llama {} ({} parameters), {} text files ({} skipped): {} train / {} held-out tokens "
                    "({:.2f} / {:.2f} MB), {} train windows of {}, bits {}, threads {}, out {}",
                    spec_.arch.dump(), n_params, corpus_.files.size(), corpus_.skipped, corpus_.train_tokens.numel(),
                    corpus_.heldout_tokens.numel(), corpus_.train_bytes / 1e6, corpus_.heldout_bytes / 1e6,
                    train_windows_->size(), ctx, nn::format_bit_list(spec_.bits), threads, cfg_.out));

    std::string phase = "fp";
    int64_t step = 0;  // steps completed in `phase`
    if (resume_ck) {
      std::tie(phase, step) = restore(*resume_ck);
    } else {
      std::remove(metrics_path_.c_str());
      if (!cfg_.init.empty()) {
        Checkpoint init(cfg_.init);
        BS_CHECK(spec_to_json(init.spec()) == spec_to_json(spec_) || init.meta().value("phase", "") == "fp",
                 "`init`: '", cfg_.init, "' was written for model spec ", spec_to_json(init.spec()).dump());
        if (init.meta().value("phase", "") == "fp") {
          // An FP32 start: only the FP weights carry over (the quantizer state of this run may
          // differ in shape, e.g. group-wise scales, and is initialised on first use).
          auto source = build(init.spec());
          init.load_model(*source, /*strict=*/true);
          torch::NoGradGuard ng;
          auto src = source->named_parameters();
          for (auto& p : model_->named_parameters()) {
            const auto& name = p.key();
            if (name.size() < 7 || name.compare(name.size() - 7, 7, ".weight") != 0) continue;
            BS_CHECK(src.contains(name) && src[name].sizes() == p.value().sizes(), "`init`: '", cfg_.init,
                     "' has no FP tensor '", name, "' of this model's shape");
            p.value().copy_(src[name]);
          }
        } else {
          init.load_model(*model_, /*strict=*/false);
        }
        phase = "joint";
        fp_baseline_ = evaluate_lm(*model_, *heldout_windows_, *tokenizer, nn::BitConfig::fp32(), cfg_.eval_windows);
        log(fmt::format("initialised from {}: FP32 held-out perplexity {:.3f}", cfg_.init, fp_baseline_.perplexity));
      }
    }
    write_text_atomically((fs::path(cfg_.out) / "config.json").string(), cfg_.to_json().dump(2) + "\n");

    int64_t ran = 0;
    auto budget_left = [&] { return cfg_.stop_after == 0 || ran < cfg_.stop_after; };
    if (phase == "fp") {
      if (!optimizer_) make_optimizer(true);
      train_phase(true, step, ran, budget_left);
      if (step >= cfg_.fp_steps) {
        if (cfg_.fp_steps > 0) {
          fp_baseline_ = last_.at("fp32");
          save("fp", step, (fs::path(cfg_.out) / "fp32.pt").string(), /*with_optimizer=*/false);
        }
        phase = "joint";
        step = 0;
        optimizer_.reset();
      }
    }
    if (phase == "joint" && budget_left()) {
      if (!optimizer_) make_optimizer(false);
      train_phase(false, step, ran, budget_left);
    }
    LmResult r;
    r.finished = phase == "joint" && step >= cfg_.steps;
    r.seconds = seconds_;
    r.checkpoint = ckpt_path_;
    auto results = last_;
    if (phase == "joint" && (cfg_.fp_steps > 0 || !cfg_.init.empty())) results["fp32"] = fp_baseline_;
    r.perplexity = eval_json(results, &LmEval::perplexity);
    r.bits_per_byte = eval_json(results, &LmEval::bits_per_byte);
    r.loss = eval_json(results, &LmEval::loss);
    if (r.finished) {
      print_table(results);
      json summary{{"perplexity", r.perplexity}, {"bits_per_byte", r.bits_per_byte}, {"loss", r.loss},
                   {"seconds", seconds_},        {"model", spec_.name},               {"arch", spec_.arch},
                   {"bits", spec_.bits},         {"tokenizer", tokenizer->kind()},    {"vocab", tokenizer->vocab_size()},
                   {"seed", cfg_.seed},          {"checkpoint", "checkpoint.pt"}};
      write_text_atomically((fs::path(cfg_.out) / "summary.json").string(), summary.dump(2) + "\n");
      log(fmt::format("done in {}; run directory {}", format_duration(seconds_), cfg_.out));
    } else {
      log(fmt::format("stopped after {} step(s) as asked; continue with --resume --out {}", ran, cfg_.out));
    }
    return r;
  }

 private:
  void log(const std::string& s) { fmt::print(stderr, "[bitswitch] {}\n", s); }

  void make_optimizer(bool fp) {
    auto g = nn::split_params(*model_);
    const double lr = fp ? cfg_.fp_lr : cfg_.lr, wd = fp ? cfg_.fp_weight_decay : cfg_.weight_decay;
    using torch::optim::AdamW;
    using torch::optim::AdamWOptions;
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(g.weights, std::make_unique<AdamWOptions>(AdamWOptions(lr).weight_decay(wd)));
    groups.emplace_back(g.others, std::make_unique<AdamWOptions>(AdamWOptions(lr).weight_decay(0)));
    optimizer_ = std::make_unique<AdamW>(std::move(groups), AdamWOptions(lr));
    others_ = g.others;
  }

  void set_lrs(double weights_lr, double others_lr) {
    optimizer_->param_groups()[0].options().set_lr(weights_lr);
    optimizer_->param_groups()[1].options().set_lr(others_lr);
  }

  // The windows of global sample positions [step * batch, (step + 1) * batch) of a phase's
  // stream: epoch e = position / windows, in that epoch's seeded order (another for each phase).
  torch::Tensor batch_windows(bool fp, int64_t step) {
    const int64_t n = train_windows_->size();
    std::vector<int64_t> ids;
    ids.reserve(size_t(cfg_.batch));
    for (int64_t k = step * cfg_.batch; k < (step + 1) * cfg_.batch; ++k) {
      const int64_t epoch = k / n;
      if (epoch != order_epoch_ || fp != order_fp_) {
        order_ = train_windows_->order(cfg_.seed * 2 + (fp ? 0 : 1), epoch);
        order_epoch_ = epoch;
        order_fp_ = fp;
      }
      ids.push_back(order_.data_ptr<int64_t>()[k % n]);
    }
    return train_windows_->gather(torch::tensor(ids, torch::kInt64));
  }

  torch::Tensor lm_loss(const torch::Tensor& logits, const torch::Tensor& y, const torch::Tensor& teacher, double alpha) {
    auto flat = logits.reshape({-1, logits.size(-1)});
    auto ce = torch::nn::functional::cross_entropy(flat, y.reshape({-1}));
    if (!teacher.defined()) return ce;
    // (1 - alpha) * CE(onehot) + alpha * CE(P_high): the soft cross-entropy of the mixed target.
    auto soft = -(teacher * torch::log_softmax(flat, 1)).sum(1).mean();
    return (1 - alpha) * ce + alpha * soft;
  }

  template <typename Budget>
  void train_phase(bool fp, int64_t& step, int64_t& ran, const Budget& budget_left) {
    const int64_t total = fp ? cfg_.fp_steps : cfg_.steps;
    if (step >= total) return;
    const auto& bits = spec_.bits;
    const int high = bits.front();
    const bool summed = cfg_.joint_mode == "summed";
    const int64_t ctx = model_->arch().context;
    Progress bar(fmt::format("{} steps", fp ? "fp32" : "joint"), total, cfg_.log_interval);
    std::vector<int> widths = fp ? std::vector<int>{nn::kFloatBits} : bits;
    // Train losses since the last evaluation (kept in checkpoints, so a resumed run logs the same).
    auto& loss_sum = pending_loss_;
    auto& in_window = pending_steps_;
    loss_sum.resize(widths.size(), 0.0);
    auto status = [&] {
      std::string s;
      for (size_t k = 0; k < widths.size(); ++k)
        s += fmt::format("{} {:.3f} ", nn::width_label(widths[k]), loss_sum[k] / std::max<int64_t>(in_window, 1));
      return s;
    };
    auto t0 = std::chrono::steady_clock::now();
    model_->train();
    while (step < total && budget_left()) {
      const double lr = cosine_lr(fp ? cfg_.fp_lr : cfg_.lr, step, total, cfg_.warmup_steps);
      auto w = batch_windows(fp, step);
      auto x = w.narrow(1, 0, ctx), y = w.narrow(1, 1, ctx);
      const double alpha = 0.7 * double(step + 1) / double(std::max<int64_t>(total, 1));
      torch::Tensor teacher;
      if (summed && !fp) {
        set_lrs(lr, lr);
        clear_grads(params_);
      }
      for (size_t k = 0; k < widths.size(); ++k) {
        const int b = widths[k];
        nn::apply_bits(*model_, nn::BitConfig::uniform(b));
        const double eta = (!fp && cfg_.alrs) ? alrs_eta(high, b) : 1.0;
        if (!summed || fp) {
          set_lrs(lr, eta * lr);
          clear_grads(params_);
        }
        auto logits = model_->forward(x);
        auto loss = lm_loss(logits, y, (cfg_.kd && k > 0) ? teacher : torch::Tensor(), alpha);
        if (cfg_.kd && k == 0 && !fp) teacher = torch::softmax(logits.detach().reshape({-1, logits.size(-1)}), 1);
        if (summed && !fp && cfg_.alrs && eta != 1.0) {
          // One step for all widths: ALRS scales this width's contribution to the scale/norm group.
          backward_scaled(loss, others_, eta);
        } else {
          loss.backward();
        }
        if (!summed || fp) optimizer_->step();
        loss_sum[k] += loss.item<double>();
      }
      if (summed && !fp) optimizer_->step();
      ++step;
      ++ran;
      ++in_window;
      bar.update(step, status() + fmt::format("lr {:.3g}", lr));
      const bool eval_now = step == total || (cfg_.eval_interval > 0 && step % cfg_.eval_interval == 0);
      if (eval_now || !budget_left()) {
        seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (eval_now) {
          json train_loss = json::object();
          for (size_t k = 0; k < widths.size(); ++k)
            train_loss[nn::width_label(widths[k])] = loss_sum[k] / std::max<int64_t>(in_window, 1);
          std::fill(loss_sum.begin(), loss_sum.end(), 0.0);
          in_window = 0;
          end_interval(fp ? "fp" : "joint", step, train_loss);
        } else {
          save(fp ? "fp" : "joint", step, ckpt_path_, true);  // stopped between evaluations
        }
        t0 = std::chrono::steady_clock::now();
      }
    }
    bar.finish(status());
  }

  void end_interval(const std::string& phase, int64_t step, const json& train_loss) {
    std::vector<int> widths{nn::kFloatBits};
    if (phase == "joint") widths.insert(widths.end(), spec_.bits.begin(), spec_.bits.end());
    std::map<std::string, LmEval> r;
    std::string line;
    for (int w : widths) {
      const auto key = nn::width_label(w);
      r[key] = evaluate_lm(*model_, *heldout_windows_, *corpus_.tokenizer, nn::BitConfig::uniform(w), cfg_.eval_windows);
      line += fmt::format(" {} {:.3f}", key, r[key].perplexity);
    }
    last_ = r;
    log(fmt::format("{} step {}: held-out perplexity{}", phase, step, line));
    json m{{"phase", phase},
           {"step", step},
           {"train_loss", train_loss},
           {"heldout_loss", eval_json(r, &LmEval::loss)},
           {"perplexity", eval_json(r, &LmEval::perplexity)},
           {"bits_per_byte", eval_json(r, &LmEval::bits_per_byte)},
           {"heldout_tokens", r.begin()->second.tokens},
           {"seconds", seconds_}};
    {
      std::ofstream out(metrics_path_, std::ios::app);
      BS_CHECK(out, "cannot append to '", metrics_path_, "'");
      out << m.dump() << "\n";
    }
    ++metrics_lines_;
    save(phase, step, ckpt_path_, true);
  }

  static json eval_to_json(const LmEval& e) {
    return json{{"loss", e.loss}, {"perplexity", e.perplexity}, {"bits_per_byte", e.bits_per_byte},
                {"tokens", e.tokens}, {"bytes", e.bytes}};
  }
  static LmEval eval_from_json(const json& j) {
    LmEval e;
    e.loss = j.value("loss", 0.0);
    e.perplexity = j.value("perplexity", 0.0);
    e.bits_per_byte = j.value("bits_per_byte", 0.0);
    e.tokens = j.value("tokens", int64_t(0));
    e.bytes = j.value("bytes", int64_t(0));
    return e;
  }

  void save(const std::string& phase, int64_t step, const std::string& path, bool with_optimizer) {
    json last = json::object();
    for (const auto& [k, v] : last_) last[k] = eval_to_json(v);
    CheckpointData d;
    d.meta = json{{"pending_loss", pending_loss_}, {"pending_steps", pending_steps_}, {"task", "lm"},           {"spec", spec_to_json(spec_)},  {"config", cfg_.to_json()},
                  {"phase", phase},         {"step", step},                 {"seconds", seconds_},
                  {"metrics_lines", metrics_lines_}, {"fp_baseline", eval_to_json(fp_baseline_)},
                  {"results", last},        {"tokenizer", corpus_.tokenizer->kind()}};
    d.model = model_.get();
    d.optimizer = with_optimizer ? optimizer_.get() : nullptr;
    d.extra["tokenizer"] = tokenizer_tensor(*corpus_.tokenizer);
    save_checkpoint(path, d);
  }

  std::pair<std::string, int64_t> restore(const Checkpoint& ck) {
    BS_CHECK(spec_to_json(ck.spec()) == spec_to_json(spec_), "checkpoint '", ckpt_path_, "' was written for model spec ",
             spec_to_json(ck.spec()).dump(), ", this run builds ", spec_to_json(spec_).dump());
    ck.load_model(*model_, /*strict=*/true);
    const auto phase = ck.meta().at("phase").get<std::string>();
    const int64_t step = ck.meta().at("step").get<int64_t>();
    seconds_ = ck.meta().value("seconds", 0.0);
    metrics_lines_ = ck.meta().value("metrics_lines", int64_t(0));
    pending_loss_ = ck.meta().value("pending_loss", std::vector<double>());
    pending_steps_ = ck.meta().value("pending_steps", int64_t(0));
    fp_baseline_ = eval_from_json(ck.meta().value("fp_baseline", json::object()));
    const json results = ck.meta().value("results", json::object());
    for (const auto& [k, v] : results.items()) last_[k] = eval_from_json(v);
    // Keep exactly the metrics lines the checkpoint had seen.
    keep_first_lines(metrics_path_, metrics_lines_);
    if (phase == "fp" && step >= cfg_.fp_steps) return {"fp", step};  // the joint phase starts fresh
    make_optimizer(phase == "fp");
    if (ck.has_optimizer()) ck.load_optimizer(*optimizer_);
    log(fmt::format("resumed from {}: {} phase, {} step(s) done", ckpt_path_, phase, step));
    return {phase, step};
  }

  void print_table(const std::map<std::string, LmEval>& r) {
    const double fp = r.count("fp32") ? r.at("fp32").perplexity : 0;
    fmt::print(stderr, "\n| width | held-out perplexity | vs FP32 | bits per byte |\n|---|---|---|---|\n");
    std::vector<int> widths{nn::kFloatBits};
    widths.insert(widths.end(), spec_.bits.begin(), spec_.bits.end());
    for (int w : widths) {
      const auto key = nn::width_label(w);
      if (!r.count(key)) continue;
      const auto& e = r.at(key);
      fmt::print(stderr, "| {} | {:.3f} | {} | {:.4f} |\n", key, e.perplexity,
                 w == nn::kFloatBits || fp == 0 ? std::string() : fmt::format("{:+.2f}%", 100.0 * (e.perplexity / fp - 1)),
                 e.bits_per_byte);
    }
    fmt::print(stderr, "\n");
  }

  LmConfig cfg_;
  data::TextCorpus corpus_;
  models::ModelSpec spec_;
  std::shared_ptr<models::LlamaImpl> model_;
  std::vector<torch::Tensor> params_, others_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<data::TokenWindows> train_windows_, heldout_windows_;
  torch::Tensor order_;
  int64_t order_epoch_ = -1;
  bool order_fp_ = true;
  std::string ckpt_path_, metrics_path_;
  std::map<std::string, LmEval> last_;
  LmEval fp_baseline_;
  double seconds_ = 0;
  int64_t metrics_lines_ = 0;
  std::vector<double> pending_loss_;
  int64_t pending_steps_ = 0;
};

}  // namespace

LmResult run_lm_training(LmConfig config) { return LmTrainer(std::move(config)).run(); }

LoadedLm load_lm_checkpoint(const std::string& path) {
  Checkpoint ck(path);
  BS_CHECK(is_lm_checkpoint(ck.meta()), "'", path, "' is not a language-model checkpoint");
  LoadedLm out;
  out.model = build(ck.spec());
  ck.load_model(*out.model, /*strict=*/true);
  out.model->eval();
  out.tokenizer = tokenizer_from(ck);
  out.config.merge_json(ck.meta().value("config", json::object()), path + " (stored config)");
  return out;
}

std::string lm_generate(models::LlamaImpl& model, const data::Tokenizer& tokenizer, const std::string& prompt,
                        const nn::BitConfig& bits, int64_t tokens, double temperature, int64_t top_k, uint64_t seed) {
  torch::NoGradGuard ng;
  model.eval();
  nn::apply_bits(model, bits);
  auto ids32 = tokenizer.encode(prompt);
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  BS_CHECK(!ids.empty(), "sample: the prompt is empty");
  auto gen = at::detail::createCPUGenerator(seed);
  const int64_t ctx = model.arch().context;
  std::vector<int32_t> out;
  for (int64_t i = 0; i < tokens; ++i) {
    const int64_t start = std::max<int64_t>(0, int64_t(ids.size()) - ctx);
    auto x = torch::tensor(std::vector<int64_t>(ids.begin() + start, ids.end()), torch::kInt64).unsqueeze(0);
    auto logits = model.forward(x).select(1, x.size(1) - 1).squeeze(0);
    int64_t next;
    if (temperature <= 0) {
      next = logits.argmax().item<int64_t>();
    } else {
      auto scaled = logits / temperature;
      if (top_k > 0 && top_k < scaled.size(0)) {
        auto kth = std::get<0>(scaled.topk(top_k)).min();
        scaled = scaled.masked_fill(scaled < kth, -std::numeric_limits<float>::infinity());
      }
      next = torch::multinomial(torch::softmax(scaled, 0), 1, false, gen).item<int64_t>();
    }
    ids.push_back(next);
    out.push_back(int32_t(next));
  }
  return tokenizer.decode(out);
}

}  // namespace bitswitch::train
