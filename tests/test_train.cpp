// Tests of the trainer: exact resume, checkpoint validation and atomic writes, training modes.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sys/resource.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bitswitch/models/model.h"
#include "bitswitch/train/checkpoint.h"
#include "bitswitch/train/trainer.h"
#include "bitswitch/util/allocator.h"
#include "bitswitch/util/atomic_file.h"
#include "bitswitch/util/error.h"
#include "test_util.h"

using namespace bitswitch;
namespace fs = std::filesystem;

namespace {
train::TrainConfig tiny(const std::string& out) { return bitswitch::testing::tiny_config(out); }

std::map<std::string, torch::Tensor> state(const std::string& ckpt) {
  train::Checkpoint ck(ckpt);
  auto m = models::create_model(ck.spec());
  ck.load_model(*m, true);
  std::map<std::string, torch::Tensor> s;
  for (const auto& p : m->named_parameters()) s[p.key()] = p.value().detach().clone();
  for (const auto& b : m->named_buffers()) s[b.key()] = b.value().clone();
  return s;
}

void expect_same_state(const std::string& a, const std::string& b) {
  auto sa = state(a), sb = state(b);
  ASSERT_EQ(sa.size(), sb.size());
  for (const auto& [k, v] : sa) EXPECT_TRUE(torch::equal(v, sb.at(k))) << k;
}

int count_lines(const std::string& path) {
  std::ifstream in(path);
  std::string l;
  int n = 0;
  while (std::getline(in, l)) ++n;
  return n;
}
}  // namespace

TEST(Resume, StopAndResumeEqualsUninterruptedRun) {
  for (bool kd : {false, true}) {
    const auto dir = bitswitch::testing::temp_dir(kd ? "resume_kd" : "resume");
    auto full = tiny(dir + "/full");
    full.kd = kd;
    auto r = train::run_training(full);
    EXPECT_TRUE(r.finished);

    auto part = tiny(dir + "/part");
    part.kd = kd;
    part.stop_after = 2;  // FP epoch + first joint epoch
    EXPECT_FALSE(train::run_training(part).finished);
    EXPECT_FALSE(fs::exists(dir + "/part/summary.json"));
    part.stop_after = 0;
    part.resume = true;
    auto r2 = train::run_training(part);
    EXPECT_TRUE(r2.finished);
    expect_same_state(dir + "/full/checkpoint.pt", dir + "/part/checkpoint.pt");
    EXPECT_EQ(r.accuracy, r2.accuracy);
    EXPECT_EQ(count_lines(dir + "/part/metrics.jsonl"), 3);  // fp 1 + joint 2
    EXPECT_TRUE(fs::exists(dir + "/part/fp32.pt"));
  }
}

TEST(Resume, ResumeAtThePhaseBoundary) {
  const auto dir = bitswitch::testing::temp_dir("resume_boundary");
  auto full = tiny(dir + "/full");
  full.epochs = 1;
  train::run_training(full);
  auto part = tiny(dir + "/part");
  part.epochs = 1;
  part.stop_after = 1;
  train::run_training(part);
  part.stop_after = 0;
  part.resume = true;
  train::run_training(part);
  expect_same_state(dir + "/full/checkpoint.pt", dir + "/part/checkpoint.pt");
}

TEST(Training, SummaryMetricsAndModes) {
  const auto dir = bitswitch::testing::temp_dir("modes");
  auto c = tiny(dir + "/summed");
  c.epochs = 1;
  c.joint_mode = "summed";
  c.optimizer = "sgd";
  c.lr = 0.01;
  auto r = train::run_training(c);
  ASSERT_TRUE(r.finished);
  for (const char* k : {"fp32", "w8", "w6", "w4", "w2"}) {
    ASSERT_TRUE(r.accuracy.contains(k)) << k;
    EXPECT_GT(r.accuracy[k].get<double>(), 10.0) << k;  // above chance after training
  }
  auto summary = nlohmann::json::parse(read_text_file(dir + "/summed/summary.json"));
  EXPECT_EQ(summary["accuracy"], r.accuracy);
  EXPECT_TRUE(summary.contains("seconds"));
  auto config = nlohmann::json::parse(read_text_file(dir + "/summed/config.json"));
  EXPECT_EQ(config["joint_mode"], "summed");
  auto first = nlohmann::json::parse(read_text_file(dir + "/summed/metrics.jsonl").substr(0, read_text_file(dir + "/summed/metrics.jsonl").find('\n')));
  EXPECT_EQ(first["phase"], "fp");

  // Start a {4,3,2} run from the FP32 checkpoint of another run (init, no FP phase).
  auto c2 = tiny(dir + "/from_init");
  c2.init = dir + "/summed/fp32.pt";
  c2.bits = {4, 3, 2};
  c2.epochs = 1;
  c2.alrs = false;
  auto r2 = train::run_training(c2);
  EXPECT_TRUE(r2.accuracy.contains("w3"));
  EXPECT_EQ(count_lines(dir + "/from_init/metrics.jsonl"), 1);
}

TEST(Checkpoint, CorruptTruncatedAndMismatched) {
  const auto dir = bitswitch::testing::temp_dir("ckpt_errors");
  EXPECT_ERROR_CONTAINS(train::Checkpoint(dir + "/none.pt"), "none.pt' does not exist");
  std::ofstream(dir + "/garbage.pt") << "this is not a checkpoint";
  EXPECT_ERROR_CONTAINS(train::Checkpoint(dir + "/garbage.pt"), "garbage.pt' is corrupt or not a bitswitch checkpoint");

  models::ModelSpec spec;
  spec.name = "smallcnn";
  auto m = models::create_model(spec);
  train::CheckpointData d;
  d.meta = {{"spec", train::spec_to_json(spec)}, {"phase", "fp"}};
  d.model = m.get();
  train::save_checkpoint(dir + "/good.pt", d);
  const auto bytes = read_text_file(dir + "/good.pt");
  std::ofstream(dir + "/cut.pt", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  EXPECT_ERROR_CONTAINS(train::Checkpoint(dir + "/cut.pt"), "cut.pt' is corrupt");

  spec.name = "resnet20";
  auto other = models::create_model(spec);
  train::Checkpoint ck(dir + "/good.pt");
  EXPECT_ERROR_CONTAINS(ck.load_model(*other, true), "good.pt' does not match the model");
  spec.name = "smallcnn";
  spec.bits = {4, 2};
  auto fewer = models::create_model(spec);
  EXPECT_ERROR_CONTAINS(ck.load_model(*fewer, true), "does not match the model");
  EXPECT_NO_THROW(ck.load_model(*fewer, false));  // starting a new bit list from old weights
}

TEST(Checkpoint, FailedWriteKeepsThePreviousFile) {
  const auto dir = bitswitch::testing::temp_dir("atomic");
  const std::string path = dir + "/file.txt";
  write_text_atomically(path, "old");
  EXPECT_THROW(write_atomically(path, [](const std::string& tmp) {
                 std::ofstream(tmp) << "half";
                 throw Error("disk full");
               }),
               Error);
  EXPECT_EQ(read_text_file(path), "old");
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);  // no temporary left behind
}

TEST(Training, MismatchedResumeIsAnError) {
  const auto dir = bitswitch::testing::temp_dir("resume_mismatch");
  auto c = tiny(dir + "/run");
  c.fp_epochs = 1;
  c.stop_after = 1;
  train::run_training(c);
  c.resume = true;
  c.stop_after = 0;
  c.bits = {4, 2};
  EXPECT_ERROR_CONTAINS(train::run_training(c), "was written for model spec");
  c.bits = {8, 6, 4, 2};
  c.out = dir + "/nothing";
  EXPECT_ERROR_CONTAINS(train::run_training(c), "checkpoint.pt' does not exist");
}

// After tune_allocator_for_training, a large block that is freed and allocated again is reused
// from the heap: touching it again costs no page faults (each step of training allocates and
// frees the same activation-sized tensors). Untuned, glibc maps every block above 32 MiB afresh.
TEST(Allocator, FreedLargeBlocksAreReusedWithoutPageFaults) {
#if defined(__GLIBC__)
  ASSERT_TRUE(bitswitch::tune_allocator_for_training());
  const size_t n = size_t{48} << 20;
  auto minor_faults = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return long(u.ru_minflt);
  };
  auto touch = [n](int value) {
    void* p = std::malloc(n);
    std::memset(p, value, n);
    asm volatile("" : : "g"(p) : "memory");  // keep the allocation and the writes
    std::free(p);
  };
  touch(1);
  const long before = minor_faults();
  touch(2);
  EXPECT_LT(minor_faults() - before, 64) << "a 48 MiB block was mapped afresh: the allocator settings did not take";
#else
  GTEST_SKIP() << "allocator tuning is for glibc";
#endif
}
