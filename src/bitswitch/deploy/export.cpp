// Checkpoint -> master artifact (SPEC.md Sec. 7; paper Sec. 3.1: the stored INT(h) model).
#include "bitswitch/deploy/export.h"

#include <torch/torch.h>

#include <filesystem>
#include <map>

#include "bitswitch/data/image_folder.h"
#include "bitswitch/deploy/lm_artifact.h"
#include "bitswitch/deploy/runtime.h"
#include "bitswitch/models/llama.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/train/checkpoint.h"
#include "bitswitch/train/lm_trainer.h"
#include "bitswitch/util/error.h"

namespace bitswitch::deploy {

using json = nlohmann::json;

namespace {

std::vector<float> to_floats(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

bool buffer_set(torch::nn::Module& m, const std::string& name) {
  for (const auto& b : m.named_buffers(false))
    if (b.key() == name) return b.value().item<float>() > 0;
  return false;
}

}  // namespace

Artifact export_model(models::ModelImpl& model, const models::ModelSpec& spec, json provenance) {
  torch::NoGradGuard ng;
  Artifact a;
  a.arch = spec.name;
  a.spec = train::spec_to_json(spec);
  a.in_channels = spec.in_channels;
  a.num_classes = spec.num_classes;
  a.bits = spec.bits;
  a.high_bits = spec.bits.front();
  a.rounding = spec.rounding;
  a.master = true;
  a.provenance = std::move(provenance);

  std::map<const nn::QuantLayer*, std::string> layer_names;
  for (const auto& item : model.named_modules("", false)) {
    auto q = std::dynamic_pointer_cast<nn::QuantLayer>(item.value());
    if (!q) continue;
    const std::string& name = item.key();
    layer_names[q.get()] = name;
    LayerRecord l;
    l.name = name;
    torch::Tensor bias;
    if (auto conv = std::dynamic_pointer_cast<nn::QConv2dImpl>(item.value())) {
      const auto& o = conv->options();
      l.kind = LayerKind::kConv;
      l.out = o.out_channels(), l.in = o.in_channels(), l.kernel = o.kernel_size();
      l.stride = o.stride(), l.padding = o.padding(), l.groups = o.groups();
      bias = conv->bias;
    } else if (auto lin = std::dynamic_pointer_cast<nn::QLinearImpl>(item.value())) {
      const auto& o = lin->options();
      l.kind = LayerKind::kLinear;
      l.out = o.out_features(), l.in = o.in_features();
      bias = lin->bias;
    } else if (auto emb = std::dynamic_pointer_cast<models::QEmbeddingImpl>(item.value())) {
      l.kind = LayerKind::kEmbedding;  // [vocab, dim]: one row (and scale) per token
      l.out = emb->weight.size(0), l.in = emb->weight.size(1);
    } else {
      fail("export: layer '", name, "' is a quantized layer of an unknown kind");
    }
    const auto& qo = q->quant_options();
    const torch::Tensor w = q->weight_param().detach().to(torch::kFloat32).contiguous().view({l.out, -1});
    l.quantized = qo.fixed_bits() != nn::kFloatBits;
    if (l.quantized) {
      l.switchable = q->follows_config();
      l.quantize_input = qo.quantize_input();
      l.signed_input = qo.quantize_input() && qo.signed_input();
      l.per_token_input = qo.quantize_input() && qo.per_token_input();
      l.group = qo.group_size();
      const int h = q->high_bits();
      l.bits = h;
      BS_CHECK(q->weight_scale_initialized(), "export: layer '", name,
               "' has never run quantized (its weight scale is not initialised): export a multi-precision checkpoint, not an FP32 one");
      // The first rounding, with the function training's quantizer uses (per channel or group).
      const auto [codes, scales] = q->integer_weight(h);
      l.scale = to_floats(scales);
      for (size_t c = 0; c < l.scale.size(); ++c)
        BS_CHECK(l.scale[c] != 0 && std::isfinite(l.scale[c]), "export: layer '", name, "' scale ", c, " is ",
                 l.scale[c]);
      l.codes.assign(codes.data_ptr<int8_t>(), codes.data_ptr<int8_t>() + codes.numel());
      if (l.quantize_input && !l.per_token_input) {
        for (int b : qo.bits()) {
          BS_CHECK(buffer_set(*item.value(), "act_scale_init_" + std::to_string(b)), "export: layer '", name,
                   "' has never run at ", b, " bits (activation scale not initialised)");
          l.act_scale[b] = q->act_scale(b).item<float>();
        }
      }
    } else {
      l.weight = to_floats(w);
    }
    if (bias.defined()) l.bias = to_floats(bias);
    a.layers.push_back(std::move(l));
  }

  for (const auto& item : model.named_modules("", false)) {
    auto bn = std::dynamic_pointer_cast<nn::SwitchableBatchNorm2dImpl>(item.value());
    if (!bn) continue;
    BnRecord r;
    r.name = item.key();
    auto src = layer_names.find(bn->source().get());
    BS_CHECK(src != layer_names.end(), "export: BatchNorm '", r.name, "' follows a layer outside the model");
    r.source = src->second;
    if (auto in = bn->input_source(); in && in->follows_config()) {
      auto it = layer_names.find(in.get());
      BS_CHECK(it != layer_names.end(), "export: BatchNorm '", r.name, "' is fed by a layer outside the model");
      r.input = it->second;
    }
    const bool quantized_source = a.layer(r.source).quantized;
    for (const auto& child : bn->named_children()) {
      auto b2 = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(child.value());
      if (!b2 || child.key().rfind("bn_", 0) != 0) continue;
      const std::string key = child.key().substr(3);
      if (quantized_source == (key == "fp")) continue;  // the FP BN only behind FP layers
      BnParams p;
      p.weight = to_floats(b2->weight);
      p.bias = to_floats(b2->bias);
      p.mean = to_floats(b2->running_mean);
      p.var = to_floats(b2->running_var);
      r.channels = b2->options.num_features();
      r.eps = b2->options.eps();
      r.by_key.emplace(key, std::move(p));
    }
    BS_CHECK(!r.by_key.empty(), "export: BatchNorm '", r.name, "' has no BN to export");
    a.bns.push_back(std::move(r));
  }
  if (auto* lm = dynamic_cast<models::LlamaImpl*>(&model)) {
    const auto& ar = lm->arch();
    a.lm.vocab = ar.vocab, a.lm.dim = ar.dim, a.lm.layers = ar.layers, a.lm.heads = ar.heads;
    a.lm.kv_heads = ar.kv_heads, a.lm.mlp = ar.mlp, a.lm.context = ar.context, a.lm.group_size = ar.group_size;
    a.lm.rope_theta = ar.rope_theta, a.lm.norm_eps = ar.norm_eps, a.lm.tied = ar.tied;
    for (const auto& item : model.named_modules("", false))
      if (auto n = std::dynamic_pointer_cast<models::RMSNormImpl>(item.value())) {
        NormRecord r;
        r.name = item.key();
        r.dim = n->weight.numel();
        r.eps = n->eps;
        r.weight = to_floats(n->weight);
        a.norms.push_back(std::move(r));
      }
    a.tokenizer_kind = "byte";  // export_checkpoint stores the run's tokenizer
  }
  // The computation, as the model describes it; refused here when the runtime cannot run it.
  a.graph = model.graph();
  check_graph(a, "export: graph of '" + spec.name + "'");
  try {
    if (a.is_lm()) check_lm_graph(a);
    else check_deployable(a);
  } catch (const Error& e) {
    fail("export: model '", spec.name, "' cannot be deployed: ", e.what());
  }
  return a;
}

Artifact export_checkpoint(const std::string& checkpoint_path) {
  train::Checkpoint ck(checkpoint_path);
  if (train::is_lm_checkpoint(ck.meta())) {
    auto lm = train::load_lm_checkpoint(checkpoint_path);
    const auto& cfg = lm.config;
    // What `bitswitch perplexity` needs to rebuild the held-out text: the corpus paths and the
    // split rule's fraction (data/text.h), plus the trainer's held-out figures.
    json prov = {{"checkpoint", checkpoint_path},
                 {"task", "lm"},
                 {"data", cfg.data},
                 {"heldout_fraction", cfg.heldout_fraction},
                 {"eval_windows", cfg.eval_windows}};
    if (ck.meta().contains("results")) prov["results"] = ck.meta()["results"];
    Artifact a = export_model(*lm.model, ck.spec(), prov);
    a.tokenizer_kind = lm.tokenizer->kind();
    a.tokenizer_model = lm.tokenizer->serialize();
    return a;
  }
  const auto spec = ck.spec();
  auto model = models::create_model(spec);
  ck.load_model(*model, /*strict=*/true);
  model->eval();
  json prov = {{"checkpoint", checkpoint_path}};
  const json cfg = ck.meta().value("config", json::object());
  if (cfg.contains("dataset")) prov["dataset"] = cfg["dataset"];
  if (cfg.contains("data_dir")) prov["data_dir"] = cfg["data_dir"];
  if (ck.meta().contains("accuracy")) prov["accuracy"] = ck.meta()["accuracy"];
  if (cfg.contains("image_size")) prov["image_size"] = cfg["image_size"];
  Artifact a = export_model(*model, spec, prov);
  // Class names of an image-folder run: its training folder's class directories (the labels).
  if (cfg.value("dataset", "") == "imagefolder" && cfg.contains("data_dir") && cfg["data_dir"].is_string()) {
    const auto train_dir = std::filesystem::path(cfg["data_dir"].get<std::string>()) / "train";
    if (std::filesystem::is_directory(train_dir)) {
      auto classes = data::scan_image_folder(train_dir.string()).classes;
      BS_CHECK(int64_t(classes.size()) == a.num_classes, "export: ", train_dir.string(), " has ", classes.size(),
               " classes, the model ", a.num_classes);
      a.classes = std::move(classes);
    }
  }
  return a;
}

}  // namespace bitswitch::deploy
