// The training configuration: every option of `bitswitch train`, with defaults, a JSON/YAML
// file form and strict validation (unknown or mistyped fields are errors naming the field).
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

namespace bitswitch::train {

struct TrainConfig {
  // model and data
  std::string model = "resnet20";
  std::string dataset = "fashion-mnist";
  std::string data_dir;          // empty: the dataset's default location
  int workers = 2;               // imagefolder: JPEG decoding threads
  bool skip_corrupt = true;      // imagefolder: skip (warn) or fail on a corrupt image
  int image_size = 224;          // imagefolder: crop size (eval resizes to image_size * 8 / 7 first)
  std::vector<int> bits = {8, 6, 4, 2};
  int first_last_bits = 32;      // 32: FP first conv / last linear; 8: at 8 bits
  bool quantize_image = false;   // with first_last_bits 8: the first conv's image input quantized too
  std::string second_rounding = "half-up";  // or "floor" (plain shift)
  bool exact_scale_grad = false;
  std::string act_init = "lsq";  // activation-scale init: lsq (SPEC) or mse
  // schedule
  int fp_epochs = 5;             // FP32 pre-training (skipped with `init`)
  int epochs = 1;                // one-shot joint training of all widths
  int batch = 128;
  int64_t train_limit = 0;       // use only the first N training images (0: all)
  int64_t test_limit = 0;        // evaluate on the first N test images (0: all)
  int augment_pad = 2;
  bool hflip = true;
  // FP32 phase optimiser
  std::string fp_optimizer = "sgd";
  double fp_lr = 0.1;
  double fp_weight_decay = 5e-4;
  // joint phase optimiser (paper: Adam, lr 5e-4, wd 5e-5, cosine)
  std::string optimizer = "adam";
  double lr = 5e-4;
  double weight_decay = 5e-5;
  double momentum = 0.9;         // SGD only
  int warmup_epochs = 0;
  bool alrs = true;              // SPEC Sec. 5
  std::string joint_mode = "per-width";  // or "summed" (Alg. A.1 baseline)
  bool kd = false;               // progressive self-distillation (SPEC Sec. 4)
  // HASB SuperNet training (SPEC Sec. 6.3): from the multi-precision checkpoint `init`, each
  // layer switches to a width drawn by the roulette with probability sigma_e
  bool hasb = false;
  std::string traces;            // traces.json of `bitswitch hessian` (roulette: hessian)
  std::string roulette = "hessian";  // or "uniform" (the ablation)
  double hasb_sigma = 0.5;
  int hasb_warmup_epochs = 0;
  // run
  std::string init;              // FP32 or multi-precision checkpoint to start from
  std::string pretrained;        // FP32 weights (.safetensors, torchvision names) before the FP phase
  std::string out = "runs/default";
  bool resume = false;
  int stop_after = 0;            // stop after this many epochs in this invocation (0: run all)
  int threads = 0;               // 0: all cores
  bool channels_last = true;     // train and evaluate in the NHWC layout (faster CPU convolutions)
  uint64_t seed = 1;
  double log_interval = 10.0;    // seconds between plain progress lines (non-terminal)
  // devices and data parallelism (docs/distributed.md, docs/cuda.md)
  std::string device = "cpu";    // cpu, cuda (= cuda:LOCAL_RANK) or cuda:N
  int nproc = 1;                 // processes on this machine (data parallel); batch is the global batch
  double dist_timeout = 300;     // seconds before a collective or the rendezvous gives up
  double bucket_mb = 25;         // gradient all-reduce bucket size

  nlohmann::json to_json() const;
  // Reads fields from `j`; unknown fields and wrong types are errors naming `source`.
  void merge_json(const nlohmann::json& j, const std::string& source);
  // Cross-field checks; throws bitswitch::Error naming the field.
  void validate() const;
};

// Loads a .json, .yaml or .yml file into JSON (errors name the file and line). YAML values are
// decoded as their TrainConfig field's type; with `train_fields` false (other configs, e.g.
// LmConfig, which check types on merge) by the YAML 1.2 core schema alone.
nlohmann::json load_config_file(const std::string& path, bool train_fields = true);

// Field names and help text, for documentation and `--help`.
struct FieldDoc {
  std::string name;
  std::string help;
};
const std::vector<FieldDoc>& config_fields();

}  // namespace bitswitch::train
