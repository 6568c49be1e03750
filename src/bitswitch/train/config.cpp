// Training configuration: defaults, JSON/YAML loading, strict validation.
#include "bitswitch/train/config.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "bitswitch/nn/bit_config.h"
#include "bitswitch/util/atomic_file.h"
#include "bitswitch/util/error.h"

namespace bitswitch::train {

using json = nlohmann::json;

namespace {

std::string type_name(const json& v) { return v.type_name(); }

template <typename T>
T get_as(const json& v, const std::string& key, const std::string& source) {
  auto bad = [&](const char* want) {
    fail(source, ": field '", key, "' must be ", want, ", got ", v.dump(), " (", type_name(v), ")");
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) bad("a boolean");
    return v.get<bool>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) bad("a string");
    return v.get<std::string>();
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) bad("a number");
    const T x = v.get<T>();
    if (!std::isfinite(x)) bad("a finite number");
    return x;
  } else {
    // Integers are range-checked as JSON before converting: no wrapped or truncated values.
    if (!v.is_number_integer()) bad(std::is_unsigned_v<T> ? "a non-negative integer" : "an integer");
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > uint64_t(std::numeric_limits<T>::max())) bad("an integer in range");
    } else {
      const int64_t i = v.get<int64_t>();
      if (std::is_unsigned_v<T> && i < 0) bad("a non-negative integer");
      if constexpr (!std::is_unsigned_v<T>)
        if (i < int64_t(std::numeric_limits<T>::min()) || i > int64_t(std::numeric_limits<T>::max()))
          bad("an integer in range");
    }
    return v.get<T>();
  }
}

// ---- YAML: each value decoded as its field's type (YAML 1.2 core schema) ----

// What a plain (unquoted) YAML 1.2 scalar resolves to under the core schema.
enum class YamlScalar { kNull, kBool, kInt, kFloat, kString };

YamlScalar core_schema_type(const std::string& s) {
  static const std::regex null_re("~|null|Null|NULL|");
  static const std::regex bool_re("true|True|TRUE|false|False|FALSE");
  static const std::regex int_re("[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+");
  static const std::regex float_re(
      "[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\\.(inf|Inf|INF)|\\.nan|\\.NaN|\\.NAN");
  if (std::regex_match(s, null_re)) return YamlScalar::kNull;
  if (std::regex_match(s, bool_re)) return YamlScalar::kBool;
  if (std::regex_match(s, int_re)) return YamlScalar::kInt;
  if (std::regex_match(s, float_re)) return YamlScalar::kFloat;
  return YamlScalar::kString;
}

const char* scalar_kind(YamlScalar k) {
  switch (k) {
    case YamlScalar::kNull: return "null";
    case YamlScalar::kBool: return "a boolean";
    case YamlScalar::kInt: return "an integer";
    case YamlScalar::kFloat: return "a number";
    default: return "a string";
  }
}

// Decodes `node` (the value of field `key`) as T, or fails naming the file, the field and the value.
template <typename T>
T yaml_as(const YAML::Node& node, const std::string& key, const std::string& source) {
  const bool scalar = node.IsScalar();
  const bool quoted = scalar && node.Tag() == "!";
  const std::string text = scalar ? node.Scalar() : std::string();
  const YamlScalar kind = !scalar ? YamlScalar::kNull : quoted ? YamlScalar::kString : core_schema_type(text);
  auto bad = [&](const std::string& want, const std::string& hint = "") {
    const std::string got = !scalar ? (node.IsSequence() ? "a list" : node.IsMap() ? "a mapping" : "nothing (null)")
                                    : "'" + text + "' (" + (quoted ? "a quoted string" : scalar_kind(kind)) + ")";
    fail(source, ": field '", key, "' must be ", want, ", got ", got, hint);
  };
  if (!scalar) bad(std::is_same_v<T, bool> ? "a boolean" : std::is_same_v<T, std::string> ? "a string" : "a number");
  if constexpr (std::is_same_v<T, bool>) {
    if (kind != YamlScalar::kBool) {
      static const std::regex yaml11("y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF");
      bad("a boolean (true or false)",
          !quoted && std::regex_match(text, yaml11) ? " (YAML 1.2 reads it as a string; write true or false)" : "");
    }
    return text[0] == 't' || text[0] == 'T';
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (kind != YamlScalar::kString) bad("a string", " (quote it to mean the text)");
    return text;
  } else if constexpr (std::is_floating_point_v<T>) {
    if (kind != YamlScalar::kInt && kind != YamlScalar::kFloat) bad("a number");
    if (kind == YamlScalar::kInt && (text.rfind("0x", 0) == 0 || text.rfind("0o", 0) == 0))
      return T(yaml_as<int64_t>(node, key, source));
    if (text.find_first_of("iInN") != std::string::npos) bad("a finite number");  // .inf, .nan
    return node.as<T>();  // 1e-3, .5, +2.
  } else {
    if (kind != YamlScalar::kInt) bad(std::is_unsigned_v<T> ? "a non-negative integer" : "an integer");
    // YAML 1.2: decimal (leading zeros are decimal), 0o octal, 0x hexadecimal.
    const int base = text.rfind("0x", 0) == 0 ? 16 : text.rfind("0o", 0) == 0 ? 8 : 10;
    const std::string digits = base == 10 ? text : text.substr(2);
    errno = 0;
    char* end = nullptr;
    const bool negative = !digits.empty() && digits[0] == '-';
    if (std::is_unsigned_v<T> && negative) bad("a non-negative integer");
    if (negative) {
      const long long v = std::strtoll(digits.c_str(), &end, base);
      if (errno == ERANGE || *end || v < (long long)std::numeric_limits<T>::min()) bad("an integer in range");
      return T(v);
    }
    const unsigned long long v = std::strtoull(digits.c_str(), &end, base);
    if (errno == ERANGE || *end || v > (unsigned long long)std::numeric_limits<T>::max()) bad("an integer in range");
    return T(v);
  }
}

struct Field {
  std::string help;
  std::function<void(TrainConfig&, const json&, const std::string&)> set;
  std::function<json(const TrainConfig&)> get;
  // The YAML value decoded as the field's type (yaml_as<T>), as JSON for `set`.
  std::function<json(const YAML::Node&, const std::string&)> from_yaml;
};

#define BS_FIELD(name, type, help)                                                                              \
  {                                                                                                             \
    #name, Field {                                                                                              \
      help, [](TrainConfig& c, const json& v, const std::string& src) { c.name = get_as<type>(v, #name, src); }, \
          [](const TrainConfig& c) { return json(c.name); },                                                    \
          [](const YAML::Node& n, const std::string& src) { return json(yaml_as<type>(n, #name, src)); }        \
    }                                                                                                           \
  }

const std::vector<std::pair<std::string, Field>>& fields() {
  static const std::vector<std::pair<std::string, Field>> f = {
      BS_FIELD(model, std::string, "architecture: resnet20, smallcnn, resnet18, resnet50 or mobilenetv2"),
      BS_FIELD(dataset, std::string,
               "fashion-mnist (default, from the Debian package), cifar10, cifar100 or imagefolder (data_dir/train/<class>/*.JPEG and data_dir/val/<class>/*.JPEG; with nproc > 1 each rank decodes only its shard)"),
      BS_FIELD(data_dir, std::string, "dataset directory (empty: the dataset's default location)"),
      BS_FIELD(workers, int, "imagefolder: JPEG decoding threads"),
      BS_FIELD(skip_corrupt, bool, "imagefolder: skip a corrupt image with a warning (false: stop with an error)"),
      BS_FIELD(image_size, int, "imagefolder: crop size (224; evaluation resizes the short side to image_size * 8 / 7 first)"),
      {"bits",
       Field{"bit-widths trained jointly, e.g. [8,6,4,2] or \"8,6,4,2\" (each in [2,8], no duplicates)",
             [](TrainConfig& c, const json& v, const std::string& src) {
               if (v.is_string()) {
                 c.bits = nn::parse_bit_list(v.get<std::string>(), src + ": field 'bits'");
               } else if (v.is_array()) {
                 std::vector<int> b;
                 for (const auto& x : v) b.push_back(get_as<int>(x, "bits", src));
                 c.bits = nn::check_bit_list(b, src + ": field 'bits'");
               } else {
                 fail(src, ": field 'bits' must be a list of integers, got ", v.dump());
               }
             },
             [](const TrainConfig& c) { return json(c.bits); },
             [](const YAML::Node& n, const std::string& src) {
               if (n.IsSequence()) {
                 json a = json::array();
                 for (const auto& x : n) a.push_back(yaml_as<int>(x, "bits", src));
                 return a;
               }
               return json(yaml_as<std::string>(n, "bits", src));  // "8,6,4,2"
             }}},
      BS_FIELD(first_last_bits, int, "width of the first conv and last linear: 32 (FP) or 8"),
      BS_FIELD(quantize_image, bool, "with first_last_bits 8, quantize the first conv's input (the image) too, signed 8-bit: an all-integer first layer"),
      BS_FIELD(second_rounding, std::string, "second rounding of Double Rounding: half-up or floor"),
      BS_FIELD(exact_scale_grad, bool, "multiply the weight-scale gradient by 2^(h-l)"),
      BS_FIELD(act_init, std::string, "activation-scale init at each width's first step: lsq (2 mean|x| / sqrt(Qp)) or mse"),
      BS_FIELD(fp_epochs, int, "FP32 pre-training epochs (skipped when `init` is given)"),
      BS_FIELD(epochs, int, "joint multi-precision training epochs"),
      BS_FIELD(batch, int, "global mini-batch size, split across nproc processes (refused unless divisible by nproc)"),
      BS_FIELD(train_limit, int64_t, "use only the first N training images (0: all; refused if it leaves no complete batch)"),
      BS_FIELD(test_limit, int64_t, "evaluate on the first N test images (0: all)"),
      BS_FIELD(augment_pad, int, "random-crop padding in pixels (0: no crop)"),
      BS_FIELD(hflip, bool, "random horizontal flip"),
      BS_FIELD(fp_optimizer, std::string, "FP32 phase optimizer: sgd or adam"),
      BS_FIELD(fp_lr, double, "FP32 phase learning rate"),
      BS_FIELD(fp_weight_decay, double, "FP32 phase weight decay (conv/linear weights)"),
      BS_FIELD(optimizer, std::string, "joint phase optimizer: adam or sgd"),
      BS_FIELD(lr, double, "joint phase base learning rate"),
      BS_FIELD(weight_decay, double, "joint phase weight decay (conv/linear weights only)"),
      BS_FIELD(momentum, double, "SGD momentum (Nesterov)"),
      BS_FIELD(warmup_epochs, int, "linear warm-up epochs before the cosine schedule"),
      BS_FIELD(alrs, bool, "adaptive learning-rate scaling of scales/BN per width"),
      BS_FIELD(joint_mode, std::string, "per-width (one step per width, highest first) or summed"),
      BS_FIELD(kd, bool, "progressive self-distillation from the highest width"),
      BS_FIELD(hasb, bool, "HASB SuperNet training from the multi-precision checkpoint `init` (SPEC Sec. 6.3); refused without `init`, from an FP32 `init`, and with roulette hessian but no `traces`"),
      BS_FIELD(traces, std::string, "Hessian traces file of `bitswitch hessian` (HASB with roulette hessian)"),
      BS_FIELD(roulette, std::string, "HASB width roulette: hessian (b / sum(B) for sensitive layers) or uniform"),
      BS_FIELD(hasb_sigma, double, "HASB switching probability sigma (sigma_e = sigma (e + 1) / E)"),
      BS_FIELD(hasb_warmup_epochs, int, "HASB epochs without switching at the start"),
      BS_FIELD(init, std::string, "checkpoint to start from (FP32 or multi-precision); refused together with `pretrained`"),
      BS_FIELD(pretrained, std::string,
               "FP32 weights to start from: .safetensors with torchvision names (scripts/export_torchvision.py); "
               "fp_epochs 0 skips FP training; refused together with `init`"),
      BS_FIELD(out, std::string, "run directory"),
      BS_FIELD(resume, bool, "continue the run in `out` from its checkpoint (refused if the checkpoint's model spec differs from this run's)"),
      BS_FIELD(stop_after, int, "stop after N epochs in this invocation (continue with resume)"),
      BS_FIELD(threads, int, "CPU threads (0: all cores)"),
      BS_FIELD(channels_last, bool, "train and evaluate with channels-last (NHWC) tensors: faster convolutions on CPUs"),
      BS_FIELD(seed, uint64_t, "random seed (weights, data order, augmentation)"),
      BS_FIELD(log_interval, double, "seconds between progress lines when not on a terminal"),
      BS_FIELD(device, std::string, "device: cpu, cuda (cuda:LOCAL_RANK) or cuda:N (refused without a CUDA LibTorch and a visible GPU N)"),
      BS_FIELD(nproc, int, "data-parallel processes on this machine; `batch` is the global batch, split across them (refused: batch not divisible by nproc)"),
      BS_FIELD(dist_timeout, double, "seconds a collective or the rendezvous waits for the other ranks before failing"),
      BS_FIELD(bucket_mb, double, "gradient all-reduce bucket size in MB (data-parallel training)"),
  };
  return f;
}
#undef BS_FIELD

const Field* find_field(const std::string& name) {
  for (const auto& [n, f] : fields())
    if (n == name) return &f;
  return nullptr;
}

const Field& field_or_fail(const std::string& key, const std::string& source) {
  if (const Field* f = find_field(key)) return *f;
  std::string known;
  for (const auto& [n, _] : fields()) known += (known.empty() ? "" : ", ") + n;
  fail(source, ": unknown field '", key, "' (known fields: ", known, ")");
}

// A YAML config: a mapping whose values are decoded by their fields' types.
json yaml_config_to_json(const YAML::Node& root, const std::string& path) {
  BS_CHECK(root.IsMap(), path, ": the configuration must be a mapping of field names to values");
  json o = json::object();
  for (const auto& kv : root) {
    BS_CHECK(kv.first.IsScalar(), path, ": field names must be plain text");
    const std::string key = kv.first.Scalar();
    BS_CHECK(!o.contains(key), path, ": field '", key, "' is given twice");
    o[key] = field_or_fail(key, path).from_yaml(kv.second, path);
  }
  return o;
}

// A YAML document decoded by the YAML 1.2 core schema alone (each scalar by its own form), for
// configs whose fields are checked by type after decoding (LmConfig::merge_json): the same
// rules as above (quoted text is a string; .inf and .nan are refused; 0x/0o integers), nested
// mappings and lists kept. `where` names the value in errors ("file: field 'arch.layers'").
json core_yaml_to_json(const YAML::Node& node, const std::string& key, const std::string& path) {
  if (node.IsMap()) {
    json o = json::object();
    for (const auto& kv : node) {
      BS_CHECK(kv.first.IsScalar(), path, ": field names must be plain text");
      const std::string k = kv.first.Scalar();
      BS_CHECK(!o.contains(k), path, ": field '", key.empty() ? k : key + "." + k, "' is given twice");
      o[k] = core_yaml_to_json(kv.second, key.empty() ? k : key + "." + k, path);
    }
    return o;
  }
  if (node.IsSequence()) {
    json a = json::array();
    for (const auto& v : node) a.push_back(core_yaml_to_json(v, key, path));
    return a;
  }
  if (!node.IsScalar()) return nullptr;
  if (node.Tag() == "!") return node.Scalar();
  switch (core_schema_type(node.Scalar())) {
    case YamlScalar::kNull: return nullptr;
    case YamlScalar::kBool: return yaml_as<bool>(node, key, path);
    case YamlScalar::kInt: return yaml_as<int64_t>(node, key, path);
    case YamlScalar::kFloat: return yaml_as<double>(node, key, path);
    default: return node.Scalar();
  }
}

}  // namespace

json TrainConfig::to_json() const {
  json j = json::object();
  for (const auto& [name, f] : fields()) j[name] = f.get(*this);
  return j;
}

void TrainConfig::merge_json(const json& j, const std::string& source) {
  BS_CHECK(j.is_object(), source, ": the configuration must be a mapping of field names to values");
  for (const auto& [key, value] : j.items()) field_or_fail(key, source).set(*this, value, source);
}

void TrainConfig::validate() const {
  nn::check_bit_list(bits, "bits");
  BS_CHECK(first_last_bits == 32 || first_last_bits == 8, "first_last_bits must be 32 or 8, got ", first_last_bits);
  BS_CHECK(!quantize_image || first_last_bits == 8, "quantize_image needs first_last_bits 8 (got ", first_last_bits, ")");
  BS_CHECK(second_rounding == "half-up" || second_rounding == "floor",
           "second_rounding must be half-up or floor, got '", second_rounding, "'");
  BS_CHECK(act_init == "lsq" || act_init == "mse", "act_init must be lsq or mse, got '", act_init, "'");
  BS_CHECK(fp_epochs >= 0, "fp_epochs must be >= 0, got ", fp_epochs);
  BS_CHECK(epochs >= 0, "epochs must be >= 0, got ", epochs);
  BS_CHECK(batch > 0, "batch must be > 0, got ", batch);
  BS_CHECK(train_limit >= 0 && test_limit >= 0, "train_limit/test_limit must be >= 0");
  BS_CHECK(augment_pad >= 0 && augment_pad <= 16, "augment_pad must be in [0, 16], got ", augment_pad);
  for (const auto* o : {&fp_optimizer, &optimizer})
    BS_CHECK(*o == "sgd" || *o == "adam", "optimizer must be sgd or adam, got '", *o, "'");
  BS_CHECK(lr > 0 && fp_lr > 0, "learning rates must be > 0");
  BS_CHECK(weight_decay >= 0 && fp_weight_decay >= 0, "weight decay must be >= 0");
  BS_CHECK(warmup_epochs >= 0, "warmup_epochs must be >= 0");
  BS_CHECK(joint_mode == "per-width" || joint_mode == "summed",
           "joint_mode must be per-width or summed, got '", joint_mode, "'");
  BS_CHECK(roulette == "hessian" || roulette == "uniform", "roulette must be hessian or uniform, got '", roulette, "'");
  BS_CHECK(hasb_sigma >= 0 && hasb_sigma <= 1, "hasb_sigma must be in [0, 1], got ", hasb_sigma);
  BS_CHECK(hasb_warmup_epochs >= 0, "hasb_warmup_epochs must be >= 0, got ", hasb_warmup_epochs);
  if (hasb) {
    BS_CHECK(!init.empty(), "hasb needs `init`: the multi-precision checkpoint to start from");
    BS_CHECK(roulette == "uniform" || !traces.empty(), "hasb with roulette hessian needs `traces` (write it with `bitswitch hessian`)");
  }
  BS_CHECK(!out.empty(), "out must name a run directory");
  BS_CHECK(stop_after >= 0, "stop_after must be >= 0");
  BS_CHECK(threads >= 0, "threads must be >= 0, got ", threads);
  BS_CHECK(log_interval > 0, "log_interval must be > 0");
  BS_CHECK(workers >= 1, "workers must be >= 1, got ", workers);
  BS_CHECK(image_size >= 16 && image_size <= 1024, "image_size must be in [16, 1024], got ", image_size);
  BS_CHECK(pretrained.empty() || init.empty(), "give either `init` (a checkpoint) or `pretrained` (FP32 weights), not both");
  BS_CHECK(device == "cpu" || device == "cuda" ||
               (device.rfind("cuda:", 0) == 0 && device.size() > 5 &&
                device.find_first_not_of("0123456789", 5) == std::string::npos),
           "device must be cpu, cuda or cuda:N, got '", device, "'");
  BS_CHECK(nproc >= 1 && nproc <= 256, "nproc must be in [1, 256], got ", nproc);
  BS_CHECK(dist_timeout > 0, "dist_timeout must be > 0 seconds, got ", dist_timeout);
  BS_CHECK(bucket_mb > 0, "bucket_mb must be > 0, got ", bucket_mb);
  BS_CHECK(batch % nproc == 0, "batch ", batch, " (the global batch) must be divisible by nproc ", nproc);
}

json load_config_file(const std::string& path, bool train_fields) {
  const std::string text = read_text_file(path);
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext == ".yaml" || ext == ".yml") {
    try {
      const YAML::Node root = YAML::Load(text);
      if (!train_fields) {
        BS_CHECK(root.IsMap(), path, ": the configuration must be a mapping of field names to values");
        return core_yaml_to_json(root, "", path);
      }
      return yaml_config_to_json(root, path);
    } catch (const YAML::Exception& e) {
      fail(path, ": invalid YAML: ", e.what());
    }
  }
  BS_CHECK(ext == ".json", path, ": config files must end in .json, .yaml or .yml");
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    fail(path, ": invalid JSON: ", e.what());
  }
}

const std::vector<FieldDoc>& config_fields() {
  static const std::vector<FieldDoc> docs = [] {
    std::vector<FieldDoc> d;
    for (const auto& [n, f] : fields()) d.push_back({n, f.help});
    return d;
  }();
  return docs;
}

}  // namespace bitswitch::train
