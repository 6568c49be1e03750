// Tests of configuration files: JSON and YAML, unknown and mistyped fields, validation.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bitswitch/train/config.h"
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

TEST(Config, EveryRecipeInConfigsParsesAndValidates) {
  namespace fs = std::filesystem;
  int count = 0;
  for (const auto& e : fs::directory_iterator(fs::path(BITSWITCH_SOURCE_DIR) / "configs")) {
    const auto ext = e.path().extension();
    if (ext != ".yaml" && ext != ".yml" && ext != ".json") continue;
    bitswitch::train::TrainConfig c;
    c.merge_json(bitswitch::train::load_config_file(e.path().string()), e.path().string());
    EXPECT_NO_THROW(c.validate()) << e.path();
    ++count;
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
