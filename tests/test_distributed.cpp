// Tests of data-parallel training (train/distributed.h): the sharded loader, two processes on
// loopback against one process on the same global batch (synthetic data and JPEG image folders,
// the trainer on an image folder), a rank that dies or stalls, the local launcher, and the
// option errors. The multi-process cases run tests/dist_worker.cpp.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "bitswitch/data/loader.h"
#include "bitswitch/eval/evaluate.h"
#include "bitswitch/models/model.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/train/checkpoint.h"
#include "bitswitch/train/data_sources.h"
#include "bitswitch/train/distributed.h"
#include "bitswitch/util/error.h"
#include "jpeg_folder.h"
#include "test_util.h"

extern char** environ;

using namespace bitswitch;

namespace {

std::vector<torch::Tensor> load_params(const std::string& path) {
  std::vector<torch::Tensor> ts;
  torch::load(ts, path);
  return ts;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Sets environment variables for the lifetime of the object, restoring the previous values.
class EnvGuard {
 public:
  explicit EnvGuard(std::vector<std::pair<std::string, const char*>> vars) {
    for (const auto& [k, v] : vars) {
      const char* old = std::getenv(k.c_str());
      saved_.emplace_back(k, old ? std::optional<std::string>(old) : std::nullopt);
      if (v) ::setenv(k.c_str(), v, 1);
      else ::unsetenv(k.c_str());
    }
  }
  ~EnvGuard() {
    for (const auto& [k, v] : saved_) {
      if (v) ::setenv(k.c_str(), v->c_str(), 1);
      else ::unsetenv(k.c_str());
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

// Starts one worker rank by hand (not through the launcher), its stderr going to `log`.
pid_t spawn_rank(int rank, int world, int port, const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> env_s;
  for (char** e = environ; *e; ++e) env_s.push_back(*e);
  env_s.push_back("RANK=" + std::to_string(rank));
  env_s.push_back("WORLD_SIZE=" + std::to_string(world));
  env_s.push_back("MASTER_ADDR=127.0.0.1");
  env_s.push_back("MASTER_PORT=" + std::to_string(port));
  std::vector<std::string> argv_s{BITSWITCH_DIST_WORKER};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv, envp;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, BITSWITCH_DIST_WORKER, &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  EXPECT_EQ(rc, 0);
  return pid;
}

// Waits up to `limit` for `pid`; returns its wait status, or -1 (after killing it) on timeout.
int wait_for(pid_t pid, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (std::chrono::steady_clock::now() < end) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

// A port that was free a moment ago (the kernel's choice for port 0).
int some_free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

data::Dataset numbered(int64_t n) {
  data::Dataset d;
  d.name = "numbered";
  d.images = (torch::arange(n * 4) % 256).to(torch::kUInt8).reshape({n, 1, 2, 2}).contiguous();
  d.labels = (torch::arange(n) % 10).contiguous();
  d.num_classes = 10;
  d.mean = {0.5f};
  d.std = {0.5f};
  return d;
}


// The parameters of a 2-rank run `two` are identical on both ranks and match the 1-process run
// `one` on the same global batches: within 1e-5 (relative to the distance trained) in full
// precision, 1e-3 with quantized widths (see TwoRanksMatchOneProcessOnTheGlobalBatch).
void expect_ranks_match_one_process(const std::string& one, const std::string& two, bool full_precision) {
  const auto init = load_params(one + ".init.0.pt");
  const auto ref = load_params(one + ".final.0.pt");
  const auto r0 = load_params(two + ".final.0.pt");
  const auto r1 = load_params(two + ".final.1.pt");
  ASSERT_EQ(ref.size(), r0.size());
  ASSERT_EQ(r0.size(), r1.size());
  double diff2 = 0, moved2 = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_TRUE(torch::equal(r0[i], r1[i])) << "parameter " << i << " differs between the ranks";
    if (full_precision)
      EXPECT_TRUE(torch::allclose(r0[i], ref[i], 1e-5, 1e-7))
          << "parameter " << i << ": max |2 ranks - 1 process| = " << (r0[i] - ref[i]).abs().max().item<double>();
    diff2 += (r0[i] - ref[i]).pow(2).sum().item<double>();
    moved2 += (ref[i] - init[i]).pow(2).sum().item<double>();
  }
  EXPECT_GT(std::sqrt(moved2), 1e-2) << "training hardly changed the weights: the comparison would prove little";
  EXPECT_LT(std::sqrt(diff2 / moved2), full_precision ? 1e-5 : 1e-3)
      << "|2 ranks - 1 process| = " << std::sqrt(diff2) << ", |1 process - init| = " << std::sqrt(moved2);
  std::printf("[          ] %s: |2 ranks - 1 process| / |trained - init| = %.3g\n", two.c_str(), std::sqrt(diff2 / moved2));
}

}  // namespace

// Every global batch, split over the shards, is exactly the one-process batch: same samples,
// same augmentation, in order; the last partial batch is split as evenly as it can be.
TEST(ShardedLoader, ShardsConcatenateToTheGlobalBatch) {
  const auto ds = numbered(23);
  for (int world : {2, 3}) {
    for (bool drop_last : {true, false}) {
      data::LoaderOptions o;
      o.batch_size = 6;
      o.shuffle = true;
      o.drop_last = drop_last;
      o.augment = {1, true};
      o.seed = 11;
      data::Loader whole(ds, o);
      std::vector<std::unique_ptr<data::Loader>> shards;
      for (int r = 0; r < world; ++r) {
        auto so = o;
        so.shard_rank = r;
        so.shard_count = world;
        shards.push_back(std::make_unique<data::Loader>(ds, so));
        EXPECT_EQ(shards.back()->num_batches(), whole.num_batches());
      }
      for (int64_t epoch : {0, 1}) {
        whole.start_epoch(epoch);
        for (auto& s : shards) s->start_epoch(epoch);
        data::Batch wb;
        int64_t batches = 0;
        while (whole.next(wb)) {
          ++batches;
          std::vector<torch::Tensor> imgs, labels, idx;
          for (auto& s : shards) {
            data::Batch sb;
            // A shard's part of the last partial batch may be empty: then it has no more batches.
            if (s->next(sb)) {
              imgs.push_back(sb.images);
              labels.push_back(sb.labels);
              idx.push_back(sb.indices);
            }
          }
          EXPECT_TRUE(torch::equal(torch::cat(imgs), wb.images)) << "world " << world << " batch " << batches;
          EXPECT_TRUE(torch::equal(torch::cat(labels), wb.labels));
          EXPECT_TRUE(torch::equal(torch::cat(idx), wb.indices));
        }
        EXPECT_EQ(batches, drop_last ? 3 : 4);
        data::Batch rest;
        for (auto& s : shards) EXPECT_FALSE(s->next(rest));
      }
    }
  }
  data::LoaderOptions bad;
  bad.shard_rank = 2;
  bad.shard_count = 2;
  EXPECT_ERROR_CONTAINS(data::Loader(ds, bad), "shard rank 2 is not in [0, 2)");
}

// Two processes on loopback, each on half of every global batch, hold bit-identical weights after
// the steps, equal to one process training on the whole global batch: within 1e-5 in full
// precision; with quantized widths (8 and 4 bits), where a float-level difference can move a
// value across a rounding boundary and change its gradient by a whole quantization step, the two
// trajectories agree to within 0.1% of the distance the weights travelled (measured: 3e-5; a
// wrong reduction, e.g. a sum instead of a mean or an unaveraged scale init, is off by 50% or more).
TEST(DataParallel, TwoRanksMatchOneProcessOnTheGlobalBatch) {
  ASSERT_TRUE(train::distributed_available());
  const std::string dir = bitswitch::testing::temp_dir("dist_equiv");
  const int steps = 6;
  for (const std::string widths : {"fp", "8,4"}) {
    SCOPED_TRACE("widths " + widths);
    const std::string one = dir + "/one-" + widths, two = dir + "/two-" + widths;
    train::launch_local_ranks(1, BITSWITCH_DIST_WORKER, {one, std::to_string(steps), "--widths", widths});
    train::launch_local_ranks(2, BITSWITCH_DIST_WORKER, {two, std::to_string(steps), "--widths", widths});
    expect_ranks_match_one_process(one, two, widths == "fp");
  }
}

// Image folders across processes: two ranks on loopback, each decoding only its part of every
// global batch (same crops and flips as one process), hold identical weights after the steps and
// match one process on the same global batches; the validation split, evaluated sharded and
// reduced, gives every rank the one-process result (9 images in batches of 4: the last batch has
// nothing for rank 0).
TEST(DataParallelImageFolder, TwoRanksMatchOneProcessOnTheGlobalBatch) {
  ASSERT_TRUE(train::distributed_available());
  const std::string dir = bitswitch::testing::temp_dir("dist_imgf");
  bitswitch::testing::write_jpeg_folder(dir + "/data", 3, 8, 3, 24);  // 24 train, 9 val images
  for (const std::string widths : {"fp", "8,4"}) {
    SCOPED_TRACE("widths " + widths);
    // Quantized: 2 steps (measured: 1e-5 of the distance travelled). Smooth, nearly uniform
    // images put many activations at the same distance from a rounding boundary, so the
    // float-level difference between 1 and 2 processes grows quickly with more steps (2e-2 after
    // 5 steps on similar generated images).
    const int steps = widths == "fp" ? 5 : 2;
    const std::string one = dir + "/one-" + widths, two = dir + "/two-" + widths;
    const std::vector<std::string> args{std::to_string(steps), "--widths", widths, "--image-folder", dir + "/data"};
    std::vector<std::string> a1{one}, a2{two};
    a1.insert(a1.end(), args.begin(), args.end());
    a2.insert(a2.end(), args.begin(), args.end());
    train::launch_local_ranks(1, BITSWITCH_DIST_WORKER, a1);
    train::launch_local_ranks(2, BITSWITCH_DIST_WORKER, a2);
    expect_ranks_match_one_process(one, two, widths == "fp");
    const auto e1 = nlohmann::json::parse(read_file(one + ".eval.0.json"));
    const auto e20 = nlohmann::json::parse(read_file(two + ".eval.0.json"));
    const auto e21 = nlohmann::json::parse(read_file(two + ".eval.1.json"));
    EXPECT_EQ(e20, e21) << "the ranks' reduced evaluations differ";
    for (const auto& [key, r] : e1.items()) {
      SCOPED_TRACE(key);
      const auto& r2 = e20.at(key);
      EXPECT_EQ(r2.at("count").get<int64_t>(), 9);
      EXPECT_EQ(r.at("count").get<int64_t>(), 9);
      // At the initial weights (the same in both jobs) the sums differ only by float order.
      const double tol = key == "init_fp32" ? 1e-5 : 1e-3;
      EXPECT_NEAR(r2.at("loss").get<double>(), r.at("loss").get<double>(), tol * r.at("loss").get<double>());
      if (key == "init_fp32") EXPECT_EQ(r2.at("accuracy").get<double>(), r.at("accuracy").get<double>());
    }
  }
}

// The trainer on an image folder with two processes (FP32 epoch, joint epoch at 8 and 4 bits,
// smallcnn with BN): it checks after every epoch that the replicas are bit-identical (a
// difference stops the run), and the test accuracies it reports from the sharded, reduced
// evaluation are those of evaluating the saved checkpoint in one process.
TEST(DataParallelImageFolder, TrainerRunsOnShardsAndReducesTheEvaluation) {
  ASSERT_TRUE(train::distributed_available());
  const std::string dir = bitswitch::testing::temp_dir("dist_imgf_trainer");
  bitswitch::testing::write_jpeg_folder(dir + "/data", 3, 8, 3, 24);
  train::launch_local_ranks(2, BITSWITCH_DIST_WORKER, {"--trainer", dir + "/data", dir + "/run"});
  std::vector<nlohmann::json> lines;
  {
    std::ifstream in(dir + "/run/metrics.jsonl");
    std::string l;
    while (std::getline(in, l)) lines.push_back(nlohmann::json::parse(l));
  }
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1].at("world_size").get<int>(), 2);
  const auto& acc = lines[1].at("test_accuracy");
  const auto& loss = lines[1].at("test_loss");

  train::Checkpoint ck(dir + "/run/checkpoint.pt");
  auto model = models::create_model(ck.spec());
  ck.load_model(*model, /*strict=*/true);
  train::TrainConfig cfg;
  cfg.merge_json(ck.meta().at("config"), "checkpoint config");
  auto data = train::open_data(cfg);
  ASSERT_EQ(data.test->num_samples(), 9);
  for (int w : {nn::kFloatBits, 8, 4}) {
    const auto key = nn::width_label(w);
    SCOPED_TRACE(key);
    const auto r = eval::evaluate(*model, *data.test, nn::BitConfig::uniform(w));
    EXPECT_EQ(r.count, 9);
    EXPECT_EQ(r.accuracy, acc.at(key).get<double>());
    EXPECT_NEAR(r.loss, loss.at(key).get<double>(), 1e-5 * r.loss);
  }
}

// Rank 1 is killed mid-training: rank 0 must exit non-zero with an error naming itself and the
// failed all-reduce, well before its 30 s timeout, not hang.
TEST(DataParallel, DeadRankMakesTheOtherExitWithAnError) {
  const std::string dir = bitswitch::testing::temp_dir("dist_dead");
  const int port = some_free_port();
  const std::vector<std::string> args{dir + "/w", "50", "--timeout", "30", "--die-at", "2"};
  const auto t0 = std::chrono::steady_clock::now();
  pid_t p0 = spawn_rank(0, 2, port, args, dir + "/rank0.log");
  pid_t p1 = spawn_rank(1, 2, port, args, dir + "/rank1.log");
  const int s1 = wait_for(p1, std::chrono::seconds(60));
  const int s0 = wait_for(p0, std::chrono::seconds(60));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(WIFSIGNALED(s1) && WTERMSIG(s1) == SIGKILL);
  ASSERT_NE(s0, -1) << "rank 0 hung";
  EXPECT_TRUE(WIFEXITED(s0) && WEXITSTATUS(s0) != 0);
  EXPECT_LT(secs, 25.0);
  const std::string log = read_file(dir + "/rank0.log");
  EXPECT_NE(log.find("rank 0 of 2"), std::string::npos) << log;
  EXPECT_NE(log.find("all-reduce"), std::string::npos) << log;
  EXPECT_NE(log.find("failed"), std::string::npos) << log;
}

// Rank 1 stalls (alive, silent): rank 0 gives up after the timeout with a clear error.
TEST(DataParallel, StalledRankTimesOut) {
  const std::string dir = bitswitch::testing::temp_dir("dist_stall");
  const int port = some_free_port();
  const std::vector<std::string> args{dir + "/w", "50", "--timeout", "6", "--stall-at", "1"};
  pid_t p0 = spawn_rank(0, 2, port, args, dir + "/rank0.log");
  pid_t p1 = spawn_rank(1, 2, port, args, dir + "/rank1.log");
  const int s0 = wait_for(p0, std::chrono::seconds(40));
  ::kill(p1, SIGKILL);
  ::waitpid(p1, nullptr, 0);
  ASSERT_NE(s0, -1) << "rank 0 hung past its timeout";
  EXPECT_TRUE(WIFEXITED(s0) && WEXITSTATUS(s0) != 0);
  const std::string log = read_file(dir + "/rank0.log");
  EXPECT_NE(log.find("rank 0 of 2"), std::string::npos) << log;
  EXPECT_NE(log.find("failed; another rank has probably died, stalled or lost its connection (timeout 6 s"),
            std::string::npos)
      << log;
}

// Rank 1 never starts: rank 0 gives up after the timeout instead of waiting for ever.
TEST(DataParallel, MissingRankFailsTheRendezvous) {
  const std::string dir = bitswitch::testing::temp_dir("dist_missing");
  pid_t p0 = spawn_rank(0, 2, some_free_port(), {dir + "/w", "5", "--timeout", "2"}, dir + "/rank0.log");
  const int s0 = wait_for(p0, std::chrono::seconds(30));
  ASSERT_NE(s0, -1) << "rank 0 hung past its timeout";
  EXPECT_TRUE(WIFEXITED(s0) && WEXITSTATUS(s0) != 0);
  const std::string log = read_file(dir + "/rank0.log");
  EXPECT_NE(log.find("rank 0 of 2: cannot create the process group: not all 2 ranks joined within 2 s"),
            std::string::npos)
      << log;
}

// The launcher behind --nproc: a rank that dies stops the job, and the error names it.
TEST(DataParallel, LauncherNamesTheRankThatDied) {
  const std::string dir = bitswitch::testing::temp_dir("dist_launch");
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_ERROR_CONTAINS(train::launch_local_ranks(2, BITSWITCH_DIST_WORKER, {dir + "/w", "50", "--die-at", "1"}),
                        "rank 1");
  EXPECT_ERROR_CONTAINS(train::launch_local_ranks(2, BITSWITCH_DIST_WORKER, {dir + "/w", "50", "--die-at", "1"}),
                        "killed by signal 9");
  EXPECT_ERROR_CONTAINS(train::launch_local_ranks(2, "/nonexistent/worker", {}), "cannot start rank 0");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 40.0);
}

TEST(DataParallel, EnvironmentErrorsNameTheVariable) {
  {
    EnvGuard g({{"RANK", nullptr}, {"WORLD_SIZE", nullptr}, {"MASTER_ADDR", nullptr}, {"MASTER_PORT", nullptr}});
    const auto o = train::dist_options_from_env(300, "cpu");
    EXPECT_EQ(o.world_size, 1);
    EXPECT_EQ(o.rank, 0);
  }
  {
    EnvGuard g({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", nullptr}, {"MASTER_PORT", nullptr}});
    EXPECT_ERROR_CONTAINS(train::dist_options_from_env(300, "cpu"), "missing: MASTER_ADDR MASTER_PORT");
  }
  {
    EnvGuard g({{"RANK", "0"}, {"WORLD_SIZE", "two"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}});
    EXPECT_ERROR_CONTAINS(train::dist_options_from_env(300, "cpu"), "WORLD_SIZE='two'");
  }
  {
    EnvGuard g({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}});
    EXPECT_ERROR_CONTAINS(train::dist_options_from_env(300, "cpu"), "RANK='2' must be an integer in [0, 1]");
  }
  {
    EnvGuard g({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"},
                {"LOCAL_WORLD_SIZE", "2"}, {"LOCAL_RANK", nullptr}});
    const auto o = train::dist_options_from_env(12, "cpu");
    EXPECT_EQ(o.rank, 1);
    EXPECT_EQ(o.world_size, 4);
    EXPECT_EQ(o.local_world_size, 2);
    EXPECT_EQ(o.local_rank, 1);
    EXPECT_EQ(o.master_addr, "10.0.0.1");
    EXPECT_EQ(o.master_port, 29500);
    EXPECT_EQ(o.timeout_s, 12);
  }
}

TEST(Device, CudaOnACpuBuildIsAClearError) {
  EXPECT_EQ(train::resolve_device("cpu", 0), torch::Device(torch::kCPU));
  EXPECT_ERROR_CONTAINS(train::resolve_device("gpu", 0), "device 'gpu' is not cpu, cuda or cuda:N");
  EXPECT_ERROR_CONTAINS(train::resolve_device("cuda:x", 0), "is not cpu, cuda or cuda:N");
  if (!torch::cuda::is_available()) {
    EXPECT_ERROR_CONTAINS(train::resolve_device("cuda", 0), "no CUDA support or sees no GPU");
  } else {
    EXPECT_EQ(train::resolve_device("cuda:0", 3), torch::Device(torch::kCUDA, 0));
    EXPECT_ERROR_CONTAINS(train::resolve_device("cuda:999", 0), "GPU(s) are visible");
  }
}

// The checkpoint writer runs on rank 0 alone, so saving must not change the model being trained:
// the transitional BNs' mirror of their uniform BN (nn::transitional_mirror_state) goes into the
// saved state only. (Before, rank 0 copied it into its own replica and the replica check failed
// after the second joint epoch; dist_cli.sh runs that job through the binary.)
TEST(Checkpoint, SavingTransitionalMirrorLeavesTheModelUnchanged) {
  models::ModelSpec spec;
  spec.bits = {8, 4};
  torch::manual_seed(3);
  auto m = models::create_model(spec);
  {
    torch::NoGradGuard ng;
    for (auto& t : m->parameters()) t.copy_(torch::randn_like(t));
    for (auto& b : m->buffers())
      if (b.is_floating_point()) b.copy_(torch::rand_like(b) + 0.5);
  }
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : m->named_parameters()) before[p.key()] = p.value().detach().clone();
  for (const auto& b : m->named_buffers()) before[b.key()] = b.value().detach().clone();
  const auto mirror = nn::transitional_mirror_state(*m);
  size_t transitional = 0;
  for (const auto& [name, _] : before) transitional += nn::is_transitional_bn_tensor(name);
  EXPECT_EQ(mirror.size(), transitional);
  EXPECT_GT(transitional, 0u);
  for (const auto& [name, t] : mirror) EXPECT_TRUE(nn::is_transitional_bn_tensor(name)) << name;
  const auto dir = bitswitch::testing::temp_dir("ckpt_mirror");
  train::CheckpointData d;
  d.meta = {{"spec", train::spec_to_json(spec)}, {"phase", "joint"}, {"epoch", 1}};
  d.model = m.get();
  d.model_overrides = mirror;
  train::save_checkpoint(dir + "/c.pt", d);
  for (const auto& p : m->named_parameters()) ASSERT_TRUE(torch::equal(p.value(), before.at(p.key()))) << p.key();
  for (const auto& b : m->named_buffers()) ASSERT_TRUE(torch::equal(b.value(), before.at(b.key()))) << b.key();
  // The saved transitional BNs are their uniform BN's; everything else is the model's.
  auto loaded = models::create_model(spec);
  train::Checkpoint(dir + "/c.pt").load_model(*loaded, /*strict=*/true);
  auto bn = [&](const std::string& name) { return loaded->named_modules()[name]->as<nn::SwitchableBatchNorm2dImpl>(); };
  EXPECT_TRUE(torch::equal(bn("blocks.0.bn2")->bn_for_key("8_4")->running_var, bn("blocks.0.bn2")->bn_for(4)->running_var));
  EXPECT_TRUE(torch::equal(bn("blocks.0.bn2")->bn_for_key("4_8")->weight, bn("blocks.0.bn2")->bn_for(8)->weight));
  for (const auto& p : loaded->named_parameters())
    if (!nn::is_transitional_bn_tensor(p.key())) ASSERT_TRUE(torch::equal(p.value(), before.at(p.key()))) << p.key();
  // An override of a tensor the model lacks is an error.
  d.model_overrides = {{"no.such.tensor", torch::zeros({1})}};
  EXPECT_ERROR_CONTAINS(train::save_checkpoint(dir + "/d.pt", d), "override of unknown tensor 'no.such.tensor'");
}
