// Tests of configuration files: JSON and YAML, unknown and mistyped fields, validation.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "bitswitch/train/config.h"
#include "bitswitch/train/lm_config.h"
#include "bitswitch/util/error.h"
#include "test_util.h"

using namespace bitswitch;
using nlohmann::json;

namespace {
std::string write(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string p = dir + "/" + name;
  std::ofstream(p) << text;
  return p;
}
}  // namespace

TEST(Config, YamlAndJsonFilesMerge) {
  const auto dir = bitswitch::testing::temp_dir("config_merge");
  train::TrainConfig c;
  c.merge_json(train::load_config_file(write(dir, "a.yaml", "model: smallcnn\nbits: [4, 2, 3]\nlr: 0.001\nkd: true\nout: 'x'\n")), "a.yaml");
  EXPECT_EQ(c.model, "smallcnn");
  EXPECT_EQ(c.bits, (std::vector<int>{4, 3, 2}));
  EXPECT_DOUBLE_EQ(c.lr, 0.001);
  EXPECT_TRUE(c.kd);
  c.merge_json(train::load_config_file(write(dir, "b.json", R"({"bits": "8,6", "epochs": 3})")), "b.json");
  EXPECT_EQ(c.bits, (std::vector<int>{8, 6}));
  EXPECT_EQ(c.epochs, 3);
  c.validate();
  // The dump reads back to the same config.
  train::TrainConfig d;
  d.merge_json(c.to_json(), "dump");
  EXPECT_EQ(d.to_json(), c.to_json());
}

TEST(Config, UnknownAndMistypedFieldsNameTheField) {
  const auto dir = bitswitch::testing::temp_dir("config_errors");
  train::TrainConfig c;
  const auto f1 = write(dir, "typo.yaml", "epochs: 3\nlerning_rate: 0.1\n");
  EXPECT_ERROR_CONTAINS(c.merge_json(train::load_config_file(f1), f1), "typo.yaml: unknown field 'lerning_rate'");
  const auto f2 = write(dir, "type.json", R"({"epochs": "three"})");
  EXPECT_ERROR_CONTAINS(c.merge_json(train::load_config_file(f2), f2), "type.json: field 'epochs' must be an integer, got \"three\"");
  const auto f3 = write(dir, "bits.json", R"({"bits": [8, 9]})");
  EXPECT_ERROR_CONTAINS(c.merge_json(train::load_config_file(f3), f3), "bit-width 9 is outside [2, 8]");
  const auto f4 = write(dir, "bad.json", "{\"epochs\": 3,");
  EXPECT_ERROR_CONTAINS(train::load_config_file(f4), "bad.json: invalid JSON");
  const auto f5 = write(dir, "bad.yaml", "epochs: [3\n");
  EXPECT_ERROR_CONTAINS(train::load_config_file(f5), "bad.yaml: invalid YAML");
  const auto f6 = write(dir, "list.yaml", "- 1\n- 2\n");
  EXPECT_ERROR_CONTAINS(c.merge_json(train::load_config_file(f6), f6), "list.yaml: the configuration must be a mapping");
  EXPECT_ERROR_CONTAINS(train::load_config_file(dir + "/missing.yaml"), "missing.yaml");
  EXPECT_ERROR_CONTAINS(train::load_config_file(write(dir, "c.txt", "x")), "must end in .json, .yaml or .yml");
}

TEST(Config, ValidateNamesTheField) {
  train::TrainConfig c;
  c.optimizer = "rmsprop";
  EXPECT_ERROR_CONTAINS(c.validate(), "optimizer must be sgd or adam, got 'rmsprop'");
  c = {};
  c.joint_mode = "sum";
  EXPECT_ERROR_CONTAINS(c.validate(), "joint_mode must be per-width or summed");
  c = {};
  c.batch = 0;
  EXPECT_ERROR_CONTAINS(c.validate(), "batch must be > 0");
  c = {};
  c.first_last_bits = 4;
  EXPECT_ERROR_CONTAINS(c.validate(), "first_last_bits must be 32 or 8");
  c = {};
  c.second_rounding = "nearest";
  EXPECT_ERROR_CONTAINS(c.validate(), "second_rounding must be half-up or floor");
}

TEST(Config, CoreSchemaYamlForOtherConfigs) {
  const std::string path = std::string(BITSWITCH_TEST_TMP) + "/core.yaml";
  std::filesystem::create_directories(BITSWITCH_TEST_TMP);
  std::ofstream(path) << "a: 0x10\nb: 1e-3\nc: yes\nd: '12'\ne: true\nf: {g: [1, 2.5]}\n";
  const auto j = bitswitch::train::load_config_file(path, false);
  EXPECT_EQ(j["a"], 16);
  EXPECT_DOUBLE_EQ(j["b"].get<double>(), 1e-3);
  EXPECT_EQ(j["c"], "yes");  // YAML 1.2: a string
  EXPECT_EQ(j["d"], "12");
  EXPECT_EQ(j["e"], true);
  EXPECT_EQ(j["f"]["g"][1], 2.5);
  std::ofstream(path) << "x: .inf\n";
  EXPECT_THROW(bitswitch::train::load_config_file(path, false), bitswitch::Error);
}

TEST(Config, EveryRecipeInConfigsParsesAndValidates) {
  namespace fs = std::filesystem;
  int count = 0;
  for (const auto& e : fs::directory_iterator(fs::path(BITSWITCH_SOURCE_DIR) / "configs")) {
    const auto ext = e.path().extension();
    if (ext != ".yaml" && ext != ".yml" && ext != ".json") continue;
    const bool lm = e.path().filename().string().rfind("lm-", 0) == 0;  // language-model recipes (lm-train)
    const auto j = bitswitch::train::load_config_file(e.path().string(), !lm);
    if (lm) {
      bitswitch::train::LmConfig c;
      c.merge_json(j, e.path().string());
      EXPECT_NO_THROW(c.validate()) << e.path();
    } else {
      bitswitch::train::TrainConfig c;
      c.merge_json(j, e.path().string());
      EXPECT_NO_THROW(c.validate()) << e.path();
      ++count;
    }
  }
  EXPECT_GE(count, 9);  // the Fashion-MNIST, CIFAR-10 and ImageNet recipes
  // The ImageNet recipes follow the paper: Adam 5e-4, wd 5e-5, 90 epochs, batch 256, from FP32 weights.
  for (const char* name : {"imagenet-resnet18-8642", "imagenet-resnet18-432", "imagenet-resnet50-8642",
                           "imagenet-mobilenetv2-864", "imagenet-mobilenetv2-432"}) {
    bitswitch::train::TrainConfig c;
    const auto path = std::string(BITSWITCH_SOURCE_DIR) + "/configs/" + name + ".yaml";
    c.merge_json(bitswitch::train::load_config_file(path), path);
    EXPECT_EQ(c.dataset, "imagefolder") << name;
    EXPECT_EQ(c.optimizer, "adam") << name;
    EXPECT_DOUBLE_EQ(c.lr, 5e-4) << name;
    EXPECT_DOUBLE_EQ(c.weight_decay, 5e-5) << name;
    EXPECT_EQ(c.epochs, 90) << name;
    EXPECT_EQ(c.batch, 256) << name;
    EXPECT_EQ(c.fp_epochs, 0) << name;
    EXPECT_FALSE(c.pretrained.empty()) << name;
  }
  bitswitch::train::TrainConfig bad;
  bad.init = "a.pt";
  bad.pretrained = "b.safetensors";
  EXPECT_ERROR_CONTAINS(bad.validate(), "either `init` (a checkpoint) or `pretrained`");
}

// YAML values are decoded as their field's type under YAML 1.2's core schema: its forms of
// integers (0x, 0o, leading zeros are decimal), floats (1e-3, .5) and booleans are read; anything
// else (yes/on, .inf, a quoted number for a number field, a number for a string field, null, lists)
// is an error naming the file, the field and the value.
TEST(Config, YamlValuesAreReadAsTheFieldsTypeOrRejectedByName) {
  const auto dir = bitswitch::testing::temp_dir("config_yaml_types");
  auto load = [&](const std::string& text) {
    train::TrainConfig c;
    const auto p = write(dir, "t.yaml", text);
    c.merge_json(train::load_config_file(p), "t.yaml");
    return c;
  };
  const auto c = load(
      "batch: 0x10\nepochs: 0o7\nfp_epochs: 010\nlr: 1e-3\nmomentum: .5\nfp_lr: 2\nkd: True\nalrs: FALSE\n"
      "seed: 0xFFFFFFFF\ntrain_limit: +12\nout: '123'\ndata_dir: \"yes\"\nbits: 8,4\n");
  EXPECT_EQ(c.batch, 16);
  EXPECT_EQ(c.epochs, 7);
  EXPECT_EQ(c.fp_epochs, 10);
  EXPECT_DOUBLE_EQ(c.lr, 1e-3);
  EXPECT_DOUBLE_EQ(c.momentum, 0.5);
  EXPECT_DOUBLE_EQ(c.fp_lr, 2.0);
  EXPECT_TRUE(c.kd);
  EXPECT_FALSE(c.alrs);
  EXPECT_EQ(c.seed, 0xFFFFFFFFull);
  EXPECT_EQ(c.train_limit, 12);
  EXPECT_EQ(c.out, "123");
  EXPECT_EQ(c.data_dir, "yes");
  EXPECT_EQ(c.bits, (std::vector<int>{8, 4}));
  EXPECT_EQ(load("bits: [0x8, 0o4]\n").bits, (std::vector<int>{8, 4}));

  EXPECT_ERROR_CONTAINS(load("kd: yes\n"),
                        "t.yaml: field 'kd' must be a boolean (true or false), got 'yes' (a string) (YAML 1.2 reads it "
                        "as a string; write true or false)");
  EXPECT_ERROR_CONTAINS(load("hflip: on\n"), "field 'hflip' must be a boolean (true or false), got 'on'");
  EXPECT_ERROR_CONTAINS(load("alrs: 1\n"), "field 'alrs' must be a boolean (true or false), got '1' (an integer)");
  EXPECT_ERROR_CONTAINS(load("kd: 'true'\n"), "field 'kd' must be a boolean (true or false), got 'true' (a quoted string)");
  EXPECT_ERROR_CONTAINS(load("lr: .inf\n"), "t.yaml: field 'lr' must be a finite number, got '.inf' (a number)");
  EXPECT_ERROR_CONTAINS(load("lr: -.Inf\n"), "field 'lr' must be a finite number, got '-.Inf'");
  EXPECT_ERROR_CONTAINS(load("momentum: .nan\n"), "field 'momentum' must be a finite number, got '.nan'");
  EXPECT_ERROR_CONTAINS(load("lr: fast\n"), "field 'lr' must be a number, got 'fast' (a string)");
  EXPECT_ERROR_CONTAINS(load("batch: 1e3\n"), "field 'batch' must be an integer, got '1e3' (a number)");
  EXPECT_ERROR_CONTAINS(load("batch: 64.0\n"), "field 'batch' must be an integer, got '64.0' (a number)");
  EXPECT_ERROR_CONTAINS(load("batch: '64'\n"), "field 'batch' must be an integer, got '64' (a quoted string)");
  EXPECT_ERROR_CONTAINS(load("batch: 0x1FFFFFFFF\n"), "field 'batch' must be an integer in range, got '0x1FFFFFFFF'");
  EXPECT_ERROR_CONTAINS(load("epochs: -3000000000\n"), "field 'epochs' must be an integer in range");
  EXPECT_ERROR_CONTAINS(load("seed: -1\n"), "field 'seed' must be a non-negative integer, got '-1'");
  EXPECT_ERROR_CONTAINS(load("seed: 0x10000000000000000\n"), "field 'seed' must be an integer in range");
  EXPECT_ERROR_CONTAINS(load("out: 123\n"), "field 'out' must be a string, got '123' (an integer) (quote it to mean the text)");
  EXPECT_ERROR_CONTAINS(load("model: true\n"), "field 'model' must be a string, got 'true' (a boolean)");
  EXPECT_ERROR_CONTAINS(load("init:\n"), "field 'init' must be a string, got nothing (null)");
  EXPECT_ERROR_CONTAINS(load("init: ~\n"), "field 'init' must be a string, got nothing (null)");
  EXPECT_ERROR_CONTAINS(load("lr: [1]\n"), "field 'lr' must be a number, got a list");
  EXPECT_ERROR_CONTAINS(load("bits: [8, yes]\n"), "field 'bits' must be an integer, got 'yes' (a string)");
  EXPECT_ERROR_CONTAINS(load("bits: {a: 1}\n"), "field 'bits' must be a string, got a mapping");
  EXPECT_ERROR_CONTAINS(load("epochs: 2\nepochs: 3\n"), "t.yaml: field 'epochs' is given twice");
  EXPECT_ERROR_CONTAINS(load("lerning_rate: 1\n"), "unknown field 'lerning_rate'");
}

// JSON numbers are range-checked before conversion too, and floats must be finite.
TEST(Config, JsonIntegersAreRangeChecked) {
  train::TrainConfig c;
  EXPECT_ERROR_CONTAINS(c.merge_json(json{{"batch", 4294967296LL}}, "c.json"),
                        "c.json: field 'batch' must be an integer in range, got 4294967296");
  EXPECT_ERROR_CONTAINS(c.merge_json(json{{"epochs", 18446744073709551615ull}}, "c.json"), "field 'epochs' must be an integer in range");
  EXPECT_ERROR_CONTAINS(c.merge_json(json{{"seed", -1}}, "c.json"), "field 'seed' must be a non-negative integer");
  EXPECT_ERROR_CONTAINS(c.merge_json(json{{"lr", std::numeric_limits<double>::infinity()}}, "c.json"),
                        "field 'lr' must be a finite number");
  c.merge_json(json{{"seed", 18446744073709551615ull}, {"batch", 32}}, "c.json");
  EXPECT_EQ(c.seed, 18446744073709551615ull);
  EXPECT_EQ(c.batch, 32);
}
