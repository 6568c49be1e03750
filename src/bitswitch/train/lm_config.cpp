// LM run configuration: defaults, strict JSON merge, validation.
#include "bitswitch/train/lm_config.h"

#include "bitswitch/models/llama.h"
#include "bitswitch/nn/bit_config.h"
#include "bitswitch/util/error.h"

namespace bitswitch::train {

using json = nlohmann::json;

json LmConfig::to_json() const {
  return json{{"model", model},
              {"arch", arch},
              {"bits", bits},
              {"first_last_bits", first_last_bits},
              {"second_rounding", second_rounding},
              {"exact_scale_grad", exact_scale_grad},
              {"data", data},
              {"heldout_fraction", heldout_fraction},
              {"tokenizer", tokenizer},
              {"vocab", vocab},
              {"spm_model_type", spm_model_type},
              {"fp_steps", fp_steps},
              {"steps", steps},
              {"batch", batch},
              {"warmup_steps", warmup_steps},
              {"eval_interval", eval_interval},
              {"eval_windows", eval_windows},
              {"fp_lr", fp_lr},
              {"fp_weight_decay", fp_weight_decay},
              {"lr", lr},
              {"weight_decay", weight_decay},
              {"alrs", alrs},
              {"joint_mode", joint_mode},
              {"kd", kd},
              {"init", init},
              {"out", out},
              {"resume", resume},
              {"stop_after", stop_after},
              {"threads", threads},
              {"seed", seed},
              {"log_interval", log_interval}};
}

namespace {
// Whether `v` may stand for a field whose default is `like` (an integer may stand for a float).
bool same_kind(const json& v, const json& like) {
  if (like.is_number_float()) return v.is_number();
  if (like.is_number_unsigned()) return v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
  if (like.is_number_integer()) return v.is_number_integer();
  if (like.is_array()) {
    if (!v.is_array()) return false;
    for (const auto& e : v)
      if (!like.empty() && !same_kind(e, like.front())) return false;
    return true;
  }
  return v.type() == like.type();
}
}  // namespace

void LmConfig::merge_json(const json& j, const std::string& source) {
  BS_CHECK(j.is_object(), source, ": an LM config must be an object");
  json merged = to_json();
  for (const auto& [k, v] : j.items()) {
    BS_CHECK(merged.contains(k), source, ": unknown field '", k, "'");
    BS_CHECK(same_kind(v, merged[k]), source, ": field `", k, "` must be like ", merged[k].dump(), ", got ", v.dump());
    merged[k] = v;
  }
  model = merged["model"];
  arch = merged["arch"];
  bits = merged["bits"].get<std::vector<int>>();
  first_last_bits = merged["first_last_bits"];
  second_rounding = merged["second_rounding"];
  exact_scale_grad = merged["exact_scale_grad"];
  data = merged["data"].get<std::vector<std::string>>();
  heldout_fraction = merged["heldout_fraction"];
  tokenizer = merged["tokenizer"];
  vocab = merged["vocab"];
  spm_model_type = merged["spm_model_type"];
  fp_steps = merged["fp_steps"];
  steps = merged["steps"];
  batch = merged["batch"];
  warmup_steps = merged["warmup_steps"];
  eval_interval = merged["eval_interval"];
  eval_windows = merged["eval_windows"];
  fp_lr = merged["fp_lr"];
  fp_weight_decay = merged["fp_weight_decay"];
  lr = merged["lr"];
  weight_decay = merged["weight_decay"];
  alrs = merged["alrs"];
  joint_mode = merged["joint_mode"];
  kd = merged["kd"];
  init = merged["init"];
  out = merged["out"];
  resume = merged["resume"];
  stop_after = merged["stop_after"];
  threads = merged["threads"];
  seed = merged["seed"];
  log_interval = merged["log_interval"];
}

void LmConfig::validate() const {
  BS_CHECK(model == "llama", "`model` must be llama for an LM run, got '", model, "'");
  models::resolve_llama_arch(arch, "`arch`");
  nn::check_bit_list(bits, "`bits`");
  BS_CHECK(first_last_bits == 32 || first_last_bits == 8, "`first_last_bits` must be 32 or 8, got ", first_last_bits);
  BS_CHECK(second_rounding == "half-up" || second_rounding == "floor", "`second_rounding` must be half-up or floor, got '",
           second_rounding, "'");
  BS_CHECK(!data.empty(), "`data` must name at least one file or directory");
  BS_CHECK(heldout_fraction > 0 && heldout_fraction < 1, "`heldout_fraction` must be in (0, 1), got ", heldout_fraction);
  BS_CHECK(tokenizer == "sentencepiece" || tokenizer == "byte", "`tokenizer` must be sentencepiece or byte, got '",
           tokenizer, "'");
  BS_CHECK(spm_model_type == "bpe" || spm_model_type == "unigram", "`spm_model_type` must be bpe or unigram, got '",
           spm_model_type, "'");
  BS_CHECK(tokenizer == "byte" || vocab > 257, "`vocab` must exceed 257 (byte pieces and unknown), got ", vocab);
  BS_CHECK(fp_steps >= 0 && steps >= 0, "`fp_steps` and `steps` must be >= 0");
  BS_CHECK(batch >= 1, "`batch` must be >= 1, got ", batch);
  BS_CHECK(warmup_steps >= 0 && eval_interval >= 0 && eval_windows >= 0 && stop_after >= 0,
           "`warmup_steps`, `eval_interval`, `eval_windows` and `stop_after` must be >= 0");
  BS_CHECK(fp_lr > 0 && lr > 0, "`fp_lr` and `lr` must be > 0");
  BS_CHECK(fp_weight_decay >= 0 && weight_decay >= 0, "weight decays must be >= 0");
  BS_CHECK(joint_mode == "per-width" || joint_mode == "summed", "`joint_mode` must be per-width or summed, got '",
           joint_mode, "'");
  BS_CHECK(!out.empty(), "`out` must not be empty");
  BS_CHECK(threads >= 0, "`threads` must be >= 0");
}

}  // namespace bitswitch::train
