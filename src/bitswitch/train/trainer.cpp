// FP32 pre-training and one-shot joint multi-precision training.
// Paper "Nearly Lossless Adaptive Bit Switching" Sec. 3.2-3.3 and App. A; SPEC.md Sec. 4-5:
// every iteration runs all widths highest first, each with its own forward, backward and
// optimizer step (Alg. A.2); two parameter groups (conv/linear weights with weight decay; the
// rest without, under ALRS); optional progressive self-distillation; cosine schedule.
#include "bitswitch/train/trainer.h"

#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include "bitswitch/data/datasets.h"
#include "bitswitch/eval/evaluate.h"
#include "bitswitch/models/pretrained.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/train/alrs.h"
#include "bitswitch/train/checkpoint.h"
#include "bitswitch/train/data_sources.h"
#include "bitswitch/train/distributed.h"
#include "bitswitch/train/layout.h"
#include "bitswitch/train/progress.h"
#include "bitswitch/train/step.h"
#include "bitswitch/train/width_schedule.h"
#include "bitswitch/util/atomic_file.h"
#include "bitswitch/util/error.h"

namespace bitswitch::train {

using json = nlohmann::json;
namespace fs = std::filesystem;

int configure_threads(int threads, int processes) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int n = threads > 0 ? threads : std::max(1, cores / std::max(1, processes));
  torch::set_num_threads(n);
  return n;
}

models::ModelSpec spec_from_config(const TrainConfig& c, int64_t in_channels, int64_t num_classes) {
  models::ModelSpec s;
  s.name = c.model;
  s.in_channels = in_channels;
  s.num_classes = num_classes;
  s.bits = nn::check_bit_list(c.bits, "bits");
  s.first_last_bits = c.first_last_bits;
  s.quantize_image = c.quantize_image;
  s.rounding = c.second_rounding == "floor" ? quant::SecondRounding::kFloor : quant::SecondRounding::kHalfUp;
  s.exact_scale_grad = c.exact_scale_grad;
  s.act_init_mse = c.act_init == "mse";
  return s;
}

void to_channels_last(torch::nn::Module& model) {
  torch::NoGradGuard ng;
  for (auto& p : model.parameters())
    if (p.dim() == 4) p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
}

void clear_grads(const std::vector<torch::Tensor>& params) {
  for (const auto& p : params)
    if (p.grad().defined()) const_cast<torch::Tensor&>(p).mutable_grad().reset();
}

void backward_scaled(const torch::Tensor& loss, const std::vector<torch::Tensor>& scaled, double eta) {
  std::vector<torch::Tensor> before;
  for (const auto& p : scaled) before.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
  loss.backward();
  torch::NoGradGuard ng;
  for (size_t j = 0; j < scaled.size(); ++j) {
    auto g = scaled[j].grad();
    if (!g.defined()) continue;
    if (before[j].defined()) g.sub_(before[j]).mul_(eta).add_(before[j]);
    else g.mul_(eta);
  }
}

using eval::in_layout;

namespace {

using torch::optim::Adam;
using torch::optim::AdamOptions;
using torch::optim::OptimizerParamGroup;
using torch::optim::SGD;
using torch::optim::SGDOptions;

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::string& kind, const nn::ParamGroups& g,
                                                        double lr, double wd, double momentum) {
  std::vector<OptimizerParamGroup> groups;
  if (kind == "adam") {
    groups.emplace_back(g.weights, std::make_unique<AdamOptions>(AdamOptions(lr).weight_decay(wd)));
    groups.emplace_back(g.others, std::make_unique<AdamOptions>(AdamOptions(lr).weight_decay(0)));
    return std::make_unique<Adam>(std::move(groups), AdamOptions(lr));
  }
  auto sgd = [&](double decay) { return SGDOptions(lr).momentum(momentum).nesterov(momentum > 0).weight_decay(decay); };
  groups.emplace_back(g.weights, std::make_unique<SGDOptions>(sgd(wd)));
  groups.emplace_back(g.others, std::make_unique<SGDOptions>(sgd(0)));
  return std::make_unique<SGD>(std::move(groups), sgd(wd));
}

torch::Tensor soft_cross_entropy(const torch::Tensor& logits, const torch::Tensor& target) {
  return -(target * torch::log_softmax(logits, 1)).sum(1).mean();
}

class Trainer {
 public:
  Trainer(TrainConfig cfg, WidthSchedule* schedule) : cfg_(std::move(cfg)), schedule_(schedule) {}

  TrainResult run() {
    cfg_.validate();
    BS_CHECK(!cfg_.hasb || schedule_, "hasb: the trainer needs HASB's width schedule (mixed::hasb_schedule(config), "
                                      "which `bitswitch train` passes to it)");
    setup_distributed();
    const int threads = configure_threads(cfg_.threads, dist_->options().local_world_size);
    if (is_main()) fs::create_directories(cfg_.out);
    ckpt_path_ = (fs::path(cfg_.out) / "checkpoint.pt").string();
    metrics_path_ = (fs::path(cfg_.out) / "metrics.jsonl").string();

    data_ = open_data(cfg_, 0, dist_->rank(), dist_->world_size());
    train_loader_ = std::move(data_.train);
    test_loader_ = std::move(data_.test);
    spec_ = spec_from_config(cfg_, data_.channels, data_.num_classes);
    torch::manual_seed(cfg_.seed);
    model_ = models::create_model(spec_);
    model_->to(device_);
    if (cfg_.channels_last) to_channels_last(*model_);
    model_->train();
    params_ = model_->parameters();
    bucketer_ = std::make_unique<GradBucketer>(*dist_, params_, static_cast<int64_t>(cfg_.bucket_mb * (1 << 20)));

    BS_CHECK(train_loader_->num_batches() > 0, "train_limit ", cfg_.train_limit, " with batch ", cfg_.batch,
             " leaves no complete training batch");

    log(fmt::format("model {} ({} parameters), data {} ({} train / {} test), bits {}, threads {}, out {}", spec_.name,
                    count_params(), data_.name, train_loader_->num_samples(), test_loader_->num_samples(),
                    nn::format_bit_list(spec_.bits), threads, cfg_.out));
    if (dist_->active())
      log(fmt::format("data parallel: {} processes ({}), global batch {} = {} per process, device {}",
                      dist_->world_size(), dist_->backend(), cfg_.batch, cfg_.batch / dist_->world_size(), device_.str()));

    if (schedule_) log(schedule_->attach(*model_, spec_.bits));
    std::string phase = "fp";
    int epoch = 0;  // epochs completed in `phase`
    if (cfg_.resume) {
      std::tie(phase, epoch) = restore();
    } else {
      if (is_main()) std::remove(metrics_path_.c_str());
      if (!cfg_.init.empty()) {
        Checkpoint init(cfg_.init);
        init.load_model(*model_, /*strict=*/false);
        const bool from_fp = init.meta().value("phase", "fp") == "fp";
        if (from_fp) nn::init_widths_from_fp(*model_);
        if (schedule_) schedule_->start_from(*model_, cfg_.init, from_fp);
        log(fmt::format("initialised from {} ({} checkpoint)", cfg_.init, from_fp ? "FP32" : "multi-precision"));
        phase = "joint";
        auto r = evaluate(nn::BitConfig::fp32());
        fp_baseline_ = r.accuracy;
        log(fmt::format("starting FP32 model: test accuracy {:.2f}%", r.accuracy));
      } else if (!cfg_.pretrained.empty()) {
        load_pretrained();
      }
    }
    if (is_main()) write_text_atomically((fs::path(cfg_.out) / "config.json").string(), cfg_.to_json().dump(2) + "\n");
    // Every replica starts from rank 0's weights (identical anyway when seeded alike).
    dist_->broadcast_module(*model_);
    ActInitAveraging act_init_averaging(*dist_);

    int ran = 0;
    auto budget_left = [&] { return cfg_.stop_after == 0 || ran < cfg_.stop_after; };
    if (phase == "fp") {
      if (!optimizer_) make_phase_optimizer(true);
      while (epoch < cfg_.fp_epochs && budget_left()) {
        train_epoch_fp(epoch);
        ++epoch;
        ++ran;
        end_epoch("fp", epoch);
      }
      if (epoch >= cfg_.fp_epochs) {
        if (cfg_.fp_epochs > 0) {
          fp_baseline_ = last_accuracy_.value("fp32", 0.0);
          save_fp32();
        }
        phase = "joint";
        epoch = 0;
        nn::init_widths_from_fp(*model_);
        optimizer_.reset();
      }
    }
    if (phase == "joint" && budget_left()) {
      if (!optimizer_) make_phase_optimizer(false);
      while (epoch < cfg_.epochs && budget_left()) {
        train_epoch_joint(epoch);
        ++epoch;
        ++ran;
        end_epoch("joint", epoch);
      }
    }
    TrainResult result;
    result.finished = (phase == "joint" && epoch >= cfg_.epochs);
    result.seconds = seconds_;
    result.accuracy = last_accuracy_;
    result.checkpoint = ckpt_path_;
    result.main_process = is_main();
    if (!is_main()) return result;
    if (result.finished) {
      // The FP32 reference is the model the joint phase started from; the FP path of the
      // jointly trained weights (with pre-training BN statistics) is kept in metrics.jsonl.
      if (phase == "joint" && cfg_.epochs > 0) result.accuracy["fp32"] = fp_baseline_;
      print_table(result.accuracy);
      json summary{{"accuracy", result.accuracy}, {"seconds", seconds_}, {"model", spec_.name},
                   {"dataset", data_.name}, {"bits", spec_.bits}, {"seed", cfg_.seed},
                   {"checkpoint", "checkpoint.pt"}};
      write_text_atomically((fs::path(cfg_.out) / "summary.json").string(), summary.dump(2) + "\n");
      log(fmt::format("done in {}; run directory {}", format_duration(seconds_), cfg_.out));
    } else {
      log(fmt::format("stopped after {} epoch(s) as asked; continue with --resume --out {}", ran, cfg_.out));
    }
    return result;
  }

 private:
  void log(const std::string& s) {
    if (is_main()) fmt::print(stderr, "[bitswitch] {}\n", s);
  }

  // ---- data parallelism (train/distributed.h); one process: every call below is a no-op ----
  bool is_main() const { return !dist_ || dist_->is_main(); }
  std::FILE* progress_out() const { return is_main() ? stderr : nullptr; }

  void setup_distributed() {
    auto opt = dist_options_from_env(cfg_.dist_timeout, cfg_.device);
    device_ = resolve_device(cfg_.device, opt.local_rank);
    BS_CHECK(cfg_.batch % opt.world_size == 0, "batch ", cfg_.batch, " (the global batch) must be divisible by the ",
             opt.world_size, " processes");
    dist_ = std::make_unique<Distributed>(opt);
  }

  // The test set at `bits`, each rank on its shard, the sums reduced over the ranks.
  eval::EvalResult evaluate(const nn::BitConfig& bits) {
    eval::SumReduce reduce;
    if (dist_->active()) reduce = [this](torch::Tensor& t) { dist_->all_reduce_sum(t, "evaluation"); };
    return eval::evaluate(*model_, *test_loader_, bits, reduce);
  }

  // backward() with gradients averaged over the ranks, all-reduced in buckets as they are ready.
  void backward(const torch::Tensor& loss) {
    bucketer_->prepare(loss);
    loss.backward();
    bucketer_->finish();
  }

  // Called before each epoch's evaluation: one set of BN statistics for all replicas (each rank's
  // BN normalised with its local batch, as in plain DDP), the train losses averaged over ranks,
  // and a check that the replicas still hold identical weights.
  void sync_epoch_end(const std::string& phase, int epoch) {
    if (!dist_->active()) return;
    dist_->average_buffers(*model_);
    for (auto& [k, v] : epoch_train_loss_.items()) {
      auto t = torch::tensor({v.get<double>()}, torch::kFloat64);
      dist_->all_reduce_sum(t, "train loss");
      v = t.item<double>() / dist_->world_size();
    }
    dist_->check_replicas_equal(*model_, fmt::format("after {} epoch {}", phase, epoch));
  }

  json comm_metrics(int64_t steps_in_epoch, double epoch_seconds) {
    json m{{"world_size", dist_->world_size()},
           {"train_images_per_s", epoch_seconds > 0 ? double(steps_in_epoch) * cfg_.batch / epoch_seconds : 0.0},
           {"allreduce_wait_ms_per_step", bucketer_->steps() ? 1000.0 * bucketer_->wait_seconds() / bucketer_->steps() : 0.0}};
    bucketer_->reset_timing();
    return m;
  }

  void print_table(const json& acc) {
    const double fp = acc.value("fp32", 0.0);
    fmt::print(stderr, "\n| width | test accuracy (%) | vs FP32 |\n|---|---|---|\n| fp32 | {:.2f} | |\n", fp);
    for (int w : spec_.bits) {
      const auto key = nn::width_label(w);
      if (acc.contains(key))
        fmt::print(stderr, "| {} | {:.2f} | {:+.2f} |\n", key, acc[key].get<double>(), acc[key].get<double>() - fp);
    }
    fmt::print(stderr, "\n");
  }

  int64_t count_params() {
    int64_t n = 0;
    for (const auto& p : params_) n += p.numel();
    return n;
  }

  void make_phase_optimizer(bool fp) {
    auto groups = nn::split_params(*model_);
    optimizer_ = fp ? make_optimizer(cfg_.fp_optimizer, groups, cfg_.fp_lr, cfg_.fp_weight_decay, cfg_.momentum)
                    : make_optimizer(cfg_.optimizer, groups, cfg_.lr, cfg_.weight_decay, cfg_.momentum);
    others_ = groups.others;
  }

  void set_lrs(double weights_lr, double others_lr) {
    optimizer_->param_groups()[0].options().set_lr(weights_lr);
    optimizer_->param_groups()[1].options().set_lr(others_lr);
  }

  double phase_lr(bool fp, int epoch, int64_t i) {
    const int64_t per = train_loader_->num_batches();
    const int epochs = fp ? cfg_.fp_epochs : cfg_.epochs;
    return cosine_lr(fp ? cfg_.fp_lr : cfg_.lr, epoch * per + i, epochs * per, int64_t(cfg_.warmup_epochs) * per);
  }

  void train_epoch_fp(int epoch) {
    nn::apply_bits(*model_, nn::BitConfig::fp32());
    model_->train();
    train_loader_->start_epoch(epoch);
    Progress bar(fmt::format("fp32 epoch {}/{}", epoch + 1, cfg_.fp_epochs), train_loader_->num_batches(),
                 cfg_.log_interval, progress_out());
    data::Batch b;
    int64_t i = 0;
    double loss_sum = 0;
    const auto t0 = std::chrono::steady_clock::now();
    while (train_loader_->next(b)) {
      const double lr = phase_lr(true, epoch, i);
      set_lrs(lr, lr);
      clear_grads(params_);
      auto loss = torch::cross_entropy_loss(model_->forward(in_layout(b.images.to(device_), cfg_.channels_last)), b.labels.to(device_));
      backward(loss);
      optimizer_->step();
      loss_sum += loss.item<double>();
      ++i;
      bar.update(i, fmt::format("loss {:.4f} lr {:.4g}", loss_sum / i, lr));
    }
    bar.finish(fmt::format("loss {:.4f}", loss_sum / std::max<int64_t>(i, 1)));
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    seconds_ += secs;
    epoch_train_loss_ = json{{"fp32", loss_sum / std::max<int64_t>(i, 1)}};
    epoch_comm_ = comm_metrics(i, secs);
  }

  void train_epoch_joint(int epoch) {
    model_->train();
    train_loader_->start_epoch(epoch);
    const auto& bits = spec_.bits;
    const int high = bits.front();
    const bool summed = cfg_.joint_mode == "summed";
    const double alpha = 0.7 * double(epoch + 1) / double(std::max(cfg_.epochs, 1));
    const int64_t n_train = train_loader_->num_samples();
    torch::Tensor kd_next;
    if (cfg_.kd) kd_next = torch::zeros({n_train, spec_.num_classes}, device_);

    Progress bar(fmt::format("joint epoch {}/{}", epoch + 1, cfg_.epochs), train_loader_->num_batches(),
                 cfg_.log_interval, progress_out());
    std::vector<double> loss_sum(bits.size(), 0.0);
    data::Batch b;
    int64_t i = 0;
    auto loss_status = [&] {
      std::string status;
      for (size_t k = 0; k < bits.size(); ++k)
        status += fmt::format("w{} {:.3f} ", bits[k], loss_sum[k] / std::max<int64_t>(i, 1));
      return status;
    };
    const auto t0 = std::chrono::steady_clock::now();
    while (train_loader_->next(b)) {
      const double lr = phase_lr(false, epoch, i);
      b.images = in_layout(b.images.to(device_), cfg_.channels_last);
      b.labels = b.labels.to(device_);
      b.indices = b.indices.to(device_);
      torch::Tensor onehot, teacher;
      if (cfg_.kd) onehot = torch::one_hot(b.labels, spec_.num_classes).to(torch::kFloat32);
      if (summed) {
        set_lrs(lr, lr);
        clear_grads(params_);
      }
      for (size_t k = 0; k < bits.size(); ++k) {
        const int w = bits[k];
        const double eta = cfg_.alrs ? alrs_eta(high, w) : 1.0;
        nn::apply_bits(*model_, step_bits(epoch, i, k, w));
        if (!summed) {
          set_lrs(lr, eta * lr);
          clear_grads(params_);
        }
        auto logits = model_->forward(b.images);
        torch::Tensor loss;
        if (cfg_.kd) {
          torch::Tensor target = onehot;
          if (k == 0) {
            // The highest width learns from its own predictions of the previous epoch.
            if (kd_prev_.defined()) target = (1 - alpha) * onehot + alpha * kd_prev_.index_select(0, b.indices);
            auto p = torch::softmax(logits.detach(), 1);
            kd_next.index_copy_(0, b.indices, p);
            teacher = p;
          } else {
            target = (1 - alpha) * onehot + alpha * teacher;
          }
          loss = soft_cross_entropy(logits, target);
        } else {
          loss = torch::cross_entropy_loss(logits, b.labels);
        }
        if (summed && cfg_.alrs && eta != 1.0) {
          // One step for all widths: ALRS scales this width's contribution to the scale/BN group.
          backward_scaled(loss, others_, eta);
        } else if (summed) {
          loss.backward();
        } else {
          backward(loss);
        }
        if (!summed) optimizer_->step();
        loss_sum[k] += loss.item<double>();
      }
      if (summed) {
        bucketer_->reduce_grads();
        optimizer_->step();
      }
      ++i;
      bar.update(i, loss_status() + fmt::format("lr {:.3g}", lr));
    }
    bar.finish(loss_status());
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    seconds_ += secs;
    epoch_train_loss_ = json::object();
    for (size_t k = 0; k < bits.size(); ++k)
      epoch_train_loss_[nn::width_label(bits[k])] = loss_sum[k] / std::max<int64_t>(i, 1);
    epoch_comm_ = comm_metrics(i, secs);
    if (cfg_.kd) {
      // Each rank filled the rows of its own samples; the next epoch's shards differ.
      dist_->all_reduce_sum(kd_next, "distillation targets");
      kd_prev_ = kd_next;
    }
  }

  // The widths of one step at width `w`: uniform, or as the width schedule (HASB) chooses.
  nn::BitConfig step_bits(int epoch, int64_t i, size_t k, int w) {
    return schedule_ ? schedule_->step_bits(epoch, i, k, w) : nn::BitConfig::uniform(w);
  }

  void end_epoch(const std::string& phase, int epoch) {
    sync_epoch_end(phase, epoch);
    json acc = json::object(), loss = json::object();
    std::vector<int> widths{nn::kFloatBits};
    if (phase == "joint") widths.insert(widths.end(), spec_.bits.begin(), spec_.bits.end());
    std::string line;
    for (int w : widths) {
      auto r = evaluate(nn::BitConfig::uniform(w));
      acc[nn::width_label(w)] = r.accuracy;
      loss[nn::width_label(w)] = r.loss;
      line += fmt::format(" {} {:.2f}%", nn::width_label(w), r.accuracy);
    }
    last_accuracy_ = acc;
    log(fmt::format("{} epoch {} test accuracy:{}", phase, epoch, line));
    json m{{"phase", phase}, {"epoch", epoch}, {"train_loss", epoch_train_loss_}, {"test_accuracy", acc},
           {"test_loss", loss}, {"seconds", seconds_}};
    m.update(epoch_comm_);
    ++metrics_lines_;
    if (!is_main()) return;
    {
      std::ofstream out(metrics_path_, std::ios::app);
      BS_CHECK(out, "cannot append to '", metrics_path_, "'");
      out << m.dump() << "\n";
    }
    save(phase, epoch);
  }

  json meta(const std::string& phase, int epoch) {
    return json{{"spec", spec_to_json(spec_)}, {"config", cfg_.to_json()}, {"phase", phase}, {"epoch", epoch},
                {"seconds", seconds_}, {"metrics_lines", metrics_lines_}, {"fp_baseline", fp_baseline_}, {"accuracy", last_accuracy_},
                {"dataset", data_.name}};
  }

  void save(const std::string& phase, int epoch) {
    // Until HASB trains them, transitional BNs mirror the uniform width's BN, so mixed configs of
    // a jointly trained model (search candidates, --layer-bits) use the statistics of their width.
    // Computed into the saved state: saving never changes the model being trained (on rank 0 alone).
    CheckpointData d;
    if (phase == "joint" && !cfg_.hasb) d.model_overrides = nn::transitional_mirror_state(*model_);
    d.meta = meta(phase, epoch);
    d.model = model_.get();
    d.optimizer = optimizer_.get();
    if (kd_prev_.defined()) d.extra["kd_prev"] = kd_prev_;
    save_checkpoint(ckpt_path_, d);
  }

  void save_fp32() {
    if (!is_main()) return;
    CheckpointData d;
    d.meta = meta("fp", cfg_.fp_epochs);
    d.model = model_.get();
    save_checkpoint((fs::path(cfg_.out) / "fp32.pt").string(), d);
    // The same FP32 weights with torchvision names (models/pretrained.h), for PyTorch or --pretrained.
    models::save_fp_safetensors(*model_, (fs::path(cfg_.out) / "fp32.safetensors").string(),
                                {{"model", spec_.name}, {"dataset", data_.name}});
  }

  // FP32 weights from a .safetensors file (torchvision names) before the FP phase.
  void load_pretrained() {
    models::load_fp_safetensors(*model_, cfg_.pretrained);
    auto r = evaluate(nn::BitConfig::fp32());
    fp_baseline_ = r.accuracy;
    log(fmt::format("loaded FP32 weights from {}: test accuracy {:.2f}%", cfg_.pretrained, r.accuracy));
  }

  std::pair<std::string, int> restore() {
    Checkpoint ck(ckpt_path_, device_);
    const auto stored = ck.spec();
    BS_CHECK(spec_to_json(stored) == spec_to_json(spec_), "checkpoint '", ckpt_path_,
             "' was written for model spec ", spec_to_json(stored).dump(), ", this run builds ", spec_to_json(spec_).dump());
    ck.load_model(*model_, /*strict=*/true);
    std::string phase = ck.meta().at("phase").get<std::string>();
    int epoch = ck.meta().at("epoch").get<int>();
    seconds_ = ck.meta().value("seconds", 0.0);
    fp_baseline_ = ck.meta().value("fp_baseline", 0.0);
    last_accuracy_ = ck.meta().value("accuracy", json::object());
    metrics_lines_ = ck.meta().value("metrics_lines", int64_t(0));
    kd_prev_ = ck.extra("kd_prev");
    // Keep exactly the metrics lines that the checkpoint had seen.
    if (is_main()) keep_first_lines(metrics_path_, metrics_lines_);
    if (phase == "fp" && epoch >= cfg_.fp_epochs) {
      // The FP phase had just ended: the joint phase starts fresh.
      return {"fp", epoch};
    }
    make_phase_optimizer(phase == "fp");
    if (ck.has_optimizer()) ck.load_optimizer(*optimizer_);
    log(fmt::format("resumed from {}: {} phase, {} epoch(s) done", ckpt_path_, phase, epoch));
    return {phase, epoch};
  }

  TrainConfig cfg_;
  WidthSchedule* schedule_ = nullptr;  // HASB (mixed/hasb.h); null: uniform widths
  std::unique_ptr<Distributed> dist_;
  std::unique_ptr<GradBucketer> bucketer_;
  torch::Device device_{torch::kCPU};
  json epoch_comm_ = json::object();
  DataSources data_;
  models::ModelSpec spec_;
  models::Model model_;
  std::vector<torch::Tensor> params_, others_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<data::BatchSource> train_loader_, test_loader_;
  std::string ckpt_path_, metrics_path_;
  torch::Tensor kd_prev_;
  json last_accuracy_ = json::object();
  json epoch_train_loss_ = json::object();
  double seconds_ = 0;
  double fp_baseline_ = 0;  // test accuracy of the FP32 model the joint phase starts from
  int64_t metrics_lines_ = 0;
};

}  // namespace

TrainResult run_training(TrainConfig config, WidthSchedule* schedule) {
  return Trainer(std::move(config), schedule).run();
}

}  // namespace bitswitch::train
