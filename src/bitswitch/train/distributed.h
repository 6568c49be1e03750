// Multi-process data-parallel training: the process group (c10d with Gloo, NCCL when built for
// it), collectives that fail with a clear error instead of hanging, and a gradient bucketer that
// all-reduces gradients in ~25 MB buckets while backward is still running (the scheme of
// PyTorch DDP, Li et al., "PyTorch Distributed", VLDB 2020, Sec. 3.2: reverse registration
// order, buckets launched in a fixed order as soon as all their gradients are ready).
// Data parallelism is outside the paper; it changes nothing in the method (docs/distributed.md).
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace bitswitch::train {

struct DistOptions {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        // rank on this machine (LOCAL_RANK; picks the CUDA device)
  int local_world_size = 1;  // processes on this machine (LOCAL_WORLD_SIZE; splits the cores)
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  double timeout_s = 300;  // every collective and the rendezvous give up after this long
  std::string device = "cpu";  // tensors that collectives run on: cpu or cuda[:N]
};

// torchrun-style variables: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (and optional LOCAL_RANK,
// LOCAL_WORLD_SIZE). None set: one process. Some set but not all, or malformed: an error naming
// the variable and its value.
DistOptions dist_options_from_env(double timeout_s, const std::string& device);

// True when this build has c10d (Gloo headers found at configure time).
bool distributed_available();

// The process group of one training job. With world_size 1 every collective is a no-op.
// Collectives are called in the same order on every rank; a peer that dies or stalls makes them
// throw bitswitch::Error naming this rank, the operation and the timeout.
class Distributed {
 public:
  Distributed();  // one process
  explicit Distributed(const DistOptions& options);
  ~Distributed();
  Distributed(const Distributed&) = delete;
  Distributed& operator=(const Distributed&) = delete;

  int rank() const { return opt_.rank; }
  int world_size() const { return opt_.world_size; }
  bool is_main() const { return opt_.rank == 0; }
  bool active() const { return opt_.world_size > 1; }
  const DistOptions& options() const { return opt_; }
  std::string backend() const;  // "none", "gloo" or "nccl"

  // Asynchronous all-reduce (sum) of one tensor in place; wait() rethrows failures as Errors.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  std::unique_ptr<Pending> all_reduce_sum_async(torch::Tensor& t, const std::string& what);

  void all_reduce_sum(torch::Tensor& t, const std::string& what);
  void all_reduce_max(torch::Tensor& t, const std::string& what);
  void broadcast(torch::Tensor& t, int root, const std::string& what);
  void barrier(const std::string& what);

  // Copies every parameter and buffer of `module` from rank 0 to the others.
  void broadcast_module(torch::nn::Module& module);
  // Replaces every floating-point buffer (BN running statistics) by its mean over the ranks.
  void average_buffers(torch::nn::Module& module);
  // Throws when the ranks' parameters and buffers are not bit-identical (checked with the
  // per-tensor min and max over ranks of an exact fingerprint).
  void check_replicas_equal(torch::nn::Module& module, const std::string& when);

 private:
  struct Group;
  enum class Op { kSum, kMax, kBroadcast };
  void collective(torch::Tensor& t, const std::string& what, Op op, int root);
  [[noreturn]] void failed(const std::string& what, const std::exception& e);
  DistOptions opt_;
  std::unique_ptr<Group> group_;
};

// Gradient averaging for one optimizer step, in buckets of about `bucket_bytes`.
//
// Overlapped use (one backward per step):  bucketer.prepare(loss); loss.backward();
//   bucketer.finish();  -- prepare() finds which parameters the graph reaches, hooks copy each
//   gradient into its bucket as autograd produces it, and a bucket's all-reduce starts as soon as
//   it is full; finish() launches what is left, waits, and writes the averages into .grad().
// Plain use (gradients accumulated over several backwards): bucketer.reduce_grads().
//
// Parameters that get no gradient keep an undefined .grad() (the optimizer skips them); the set
// of parameters taking part must be the same on every rank (it is when every rank trains the
// same width configuration).
class GradBucketer {
 public:
  GradBucketer(Distributed& dist, std::vector<torch::Tensor> params, int64_t bucket_bytes = 25 << 20);
  ~GradBucketer();
  GradBucketer(const GradBucketer&) = delete;
  GradBucketer& operator=(const GradBucketer&) = delete;

  void prepare(const torch::Tensor& loss);
  void finish();
  void reduce_grads();

  // Seconds spent blocked on all-reduces (the part communication did not hide), and step count.
  double wait_seconds() const { return wait_seconds_; }
  int64_t steps() const { return steps_; }
  int64_t last_bucket_count() const;  // buckets of the last step
  void reset_timing() {
    wait_seconds_ = 0;
    steps_ = 0;
  }

 private:
  struct Bucket;
  void build_buckets(const std::vector<bool>& used);
  void on_grad(size_t param, const torch::Tensor& grad);
  void launch_ready();
  void wait_and_unflatten();

  Distributed& dist_;
  std::vector<torch::Tensor> params_;
  int64_t bucket_bytes_;
  std::vector<Bucket> buckets_;
  std::vector<int64_t> where_;  // param -> bucket index (-1: not taking part this step)
  size_t next_launch_ = 0;
  bool armed_ = false;
  double wait_seconds_ = 0;
  int64_t steps_ = 0;
  struct Hooks;
  std::unique_ptr<Hooks> hooks_;
};

// Scoped: while alive (and the group is active), a quantized layer's data-dependent activation
// scale init (SPEC Sec. 2, first forward at a width) is averaged over the ranks, so that every
// replica starts from the same scale, the one a single process would compute on the global batch
// (LSQ's init is a mean over the batch; the ranks' batches are equal-sized shards).
class ActInitAveraging {
 public:
  explicit ActInitAveraging(Distributed& dist);
  ~ActInitAveraging();
  ActInitAveraging(const ActInitAveraging&) = delete;
  ActInitAveraging& operator=(const ActInitAveraging&) = delete;

 private:
  bool installed_ = false;
};

// `bitswitch train --nproc N`: runs N copies of `exe` (this executable: "/proc/self/exe") with
// `args` (argv[0] excluded) and RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR=127.0.0.1 and a free MASTER_PORT, waits for them, and when one fails stops the
// others (SIGTERM, SIGKILL 5 s later) and throws an Error naming the first rank that failed and its
// exit status or signal. Returns when all exited with status 0.
void launch_local_ranks(int nproc, const std::string& exe, const std::vector<std::string>& args);

// Resolves "cpu", "cuda" or "cuda:N" (with "cuda" meaning cuda:LOCAL_RANK); throws a clear
// Error when CUDA is asked for and this LibTorch has none or too few devices.
torch::Device resolve_device(const std::string& device, int local_rank);

}  // namespace bitswitch::train
