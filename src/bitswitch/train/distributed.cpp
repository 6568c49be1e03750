// Implements distributed.h on LibTorch's c10d: a TCPStore rendezvous on rank 0, ProcessGroupGloo
// (ProcessGroupNCCL for CUDA tensors when built with BITSWITCH_NCCL), bucketed gradient
// all-reduce driven by autograd hooks, and the local launcher behind `--nproc`.
// c10d is compiled in when CMake found the Gloo headers (BITSWITCH_HAVE_C10D, which also
// defines USE_C10D_GLOO: the c10d headers hide ProcessGroupGloo without it).
#include "bitswitch/train/distributed.h"

#include <torch/cuda.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>
#include <torch/version.h>

#if BITSWITCH_HAVE_C10D
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#endif

#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_set>

#include <fmt/format.h>

#include "bitswitch/nn/layers.h"
#include "bitswitch/util/error.h"
#include "bitswitch/util/parse.h"
#include "bitswitch/util/torch_compat.h"

extern char** environ;

namespace bitswitch::train {

namespace {

using Clock = std::chrono::steady_clock;

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

int env_int(const char* name, int lo, int hi) {
  const std::string text = env(name);
  const auto v = parse_integer(text);
  BS_CHECK(v && *v >= lo && *v <= hi, "environment variable ", name, "='", text, "' must be an integer in [", lo, ", ",
           hi, "]");
  return static_cast<int>(*v);
}

// Groups `tensors` by dtype and device, and runs `fn` on each group flattened into one tensor;
// what `fn` leaves in the flat tensor is copied back.
template <typename Fn>
void for_each_flat(const std::vector<torch::Tensor>& tensors, Fn&& fn) {
  std::map<std::pair<int, std::string>, std::vector<torch::Tensor>> groups;
  for (const auto& t : tensors)
    if (t.defined() && t.numel() > 0) groups[{int(t.scalar_type()), t.device().str()}].push_back(t);
  torch::NoGradGuard ng;
  for (auto& [key, ts] : groups) {
    std::vector<torch::Tensor> flat_parts;
    for (const auto& t : ts) flat_parts.push_back(t.detach().reshape(-1));
    auto flat = torch::cat(flat_parts);
    fn(flat);
    int64_t off = 0;
    for (auto& t : ts) {
      t.detach().copy_(flat.narrow(0, off, t.numel()).view_as(t));
      off += t.numel();
    }
  }
}

// An exception's message without LibTorch's backtrace.
std::string short_what(const std::exception& e) {
  std::string msg = e.what();
  if (auto nl = msg.find("\nException raised from"); nl != std::string::npos) msg.resize(nl);
  return msg;
}

std::vector<torch::Tensor> module_state(torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p);
  for (const auto& b : m.buffers()) out.push_back(b);
  return out;
}

}  // namespace

// ---------------- options ----------------

DistOptions dist_options_from_env(double timeout_s, const std::string& device) {
  DistOptions o;
  o.timeout_s = timeout_s;
  o.device = device;
  const char* names[] = {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"};
  std::string set, unset;
  for (const char* n : names) (env(n) ? set : unset) += std::string(set.empty() && env(n) ? "" : " ") + n;
  if (set.empty()) return o;
  BS_CHECK(unset.empty(), "distributed training needs all of RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; set:",
           set.empty() ? "" : " ", set, ", missing:", unset);
  o.world_size = env_int("WORLD_SIZE", 1, 1 << 16);
  o.rank = env_int("RANK", 0, o.world_size - 1);
  o.master_addr = env("MASTER_ADDR");
  o.master_port = env_int("MASTER_PORT", 1, 65535);
  o.local_world_size = env("LOCAL_WORLD_SIZE") ? env_int("LOCAL_WORLD_SIZE", 1, o.world_size) : o.world_size;
  o.local_rank = env("LOCAL_RANK") ? env_int("LOCAL_RANK", 0, o.local_world_size - 1) : o.rank % o.local_world_size;
  return o;
}

bool distributed_available() { return BITSWITCH_HAVE_C10D != 0; }

torch::Device resolve_device(const std::string& device, int local_rank) {
  if (device == "cpu") return torch::Device(torch::kCPU);
  int index = -1;
  if (device == "cuda") {
    index = local_rank;
  } else if (device.rfind("cuda:", 0) == 0) {
    const std::string n = device.substr(5);
    BS_CHECK(!n.empty() && n.find_first_not_of("0123456789") == std::string::npos && n.size() < 4,
             "device '", device, "' is not cpu, cuda or cuda:N");
    index = std::stoi(n);
  } else {
    fail("device '", device, "' is not cpu, cuda or cuda:N");
  }
  BS_CHECK(torch::cuda::is_available(), "device '", device,
           "': this LibTorch has no CUDA support or sees no GPU (torch::cuda::is_available() is false); build "
           "against a CUDA LibTorch (docs/cuda.md) or use --device cpu");
  const int count = static_cast<int>(torch::cuda::device_count());
  BS_CHECK(index < count, "device '", device, "' resolves to cuda:", index, " but only ", count,
           " GPU(s) are visible");
  return torch::Device(torch::kCUDA, static_cast<torch::DeviceIndex>(index));
}

// ---------------- process group ----------------

#if BITSWITCH_HAVE_C10D
using PgBase = compat::ProcessGroupBase;

struct Distributed::Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<PgBase> pg;
  std::string backend;
  bool broken = false;
};

namespace {

std::shared_ptr<::gloo::transport::Device> gloo_device(const DistOptions& o) {
  if (const char* ifname = env("GLOO_SOCKET_IFNAME")) return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  const std::string a = o.master_addr;
  if (a == "127.0.0.1" || a == "localhost" || a == "::1")
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

class WorkPending : public Distributed::Pending {
 public:
  WorkPending(c10::intrusive_ptr<c10d::Work> w, std::function<void(const std::exception&)> on_fail)
      : work_(std::move(w)), on_fail_(std::move(on_fail)) {}
  void wait() override {
    try {
      work_->wait();
    } catch (const std::exception& e) {
      on_fail_(e);
    }
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  std::function<void(const std::exception&)> on_fail_;
};

}  // namespace
#else
struct Distributed::Group {
  std::string backend = "none";
  bool broken = false;
};
#endif

Distributed::Distributed() = default;

Distributed::Distributed(const DistOptions& options) : opt_(options) {
  if (opt_.world_size <= 1) return;
#if BITSWITCH_HAVE_C10D
  group_ = std::make_unique<Group>();
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(opt_.timeout_s * 1000));
  const std::string where = fmt::format("rank {} of {}", opt_.rank, opt_.world_size);
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(opt_.master_port);
    so.isServer = opt_.rank == 0;
    so.numWorkers = static_cast<size_t>(opt_.world_size);
    so.waitWorkers = true;
    so.timeout = timeout;
    group_->store = c10::make_intrusive<c10d::TCPStore>(opt_.master_addr, so);
  } catch (const std::exception& e) {
    fail(where, ": rendezvous at MASTER_ADDR=", opt_.master_addr, " MASTER_PORT=", opt_.master_port,
         " failed (timeout ", opt_.timeout_s, " s; are all ", opt_.world_size, " ranks started?): ", short_what(e));
  }
  try {
#if defined(USE_C10D_NCCL)
    if (opt_.device != "cpu") {
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      group_->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(group_->store, opt_.rank, opt_.world_size, o);
      group_->backend = "nccl";
    }
#endif
    if (!group_->pg) {
      auto o = c10d::ProcessGroupGloo::Options::create(timeout);
      o->devices.push_back(gloo_device(opt_));
      o->threads = 2;
      group_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(group_->store, opt_.rank, opt_.world_size, o);
      group_->backend = "gloo";
    }
  } catch (const std::exception& e) {
    fail(where, ": cannot create the process group: not all ", opt_.world_size, " ranks joined within ", opt_.timeout_s,
         " s, or they cannot reach each other (set GLOO_SOCKET_IFNAME to the network interface to use): ",
         short_what(e));
  }
#else
  fail("WORLD_SIZE=", opt_.world_size, ": this build has no c10d/Gloo (install libgloo-dev and re-run cmake); "
       "only single-process training is available");
#endif
}

Distributed::~Distributed() {
  // After a failed collective, Gloo's worker threads may still be blocked on a dead peer and the
  // process group's destructor would wait for them: leave it to process exit instead.
#if BITSWITCH_HAVE_C10D
  if (group_ && group_->broken) {
    group_->pg.release();
    group_->store.release();
    (void)group_.release();
  }
#endif
}

std::string Distributed::backend() const { return group_ ? group_->backend : "none"; }

void Distributed::failed(const std::string& what, const std::exception& e) {
  if (group_) group_->broken = true;
  const std::string msg = short_what(e);
  fail("rank ", opt_.rank, " of ", opt_.world_size, ": ", what,
       " failed; another rank has probably died, stalled or lost its connection (timeout ", opt_.timeout_s,
       " s, see --dist-timeout): ", msg);
}

std::unique_ptr<Distributed::Pending> Distributed::all_reduce_sum_async(torch::Tensor& t, const std::string& what) {
  BS_CHECK(active(), "all_reduce_sum_async needs more than one process");
#if BITSWITCH_HAVE_C10D
  try {
    std::vector<torch::Tensor> ts{t};
    auto work = group_->pg->allreduce(ts, c10d::AllreduceOptions{});
    return std::make_unique<WorkPending>(work, [this, what](const std::exception& e) { failed(what, e); });
  } catch (const std::exception& e) {
    failed(what, e);
  }
#else
  fail("no c10d in this build");
#endif
}

void Distributed::all_reduce_sum(torch::Tensor& t, const std::string& what) { collective(t, what, Op::kSum, 0); }
void Distributed::all_reduce_max(torch::Tensor& t, const std::string& what) { collective(t, what, Op::kMax, 0); }
void Distributed::broadcast(torch::Tensor& t, int root, const std::string& what) {
  collective(t, what, Op::kBroadcast, root);
}

void Distributed::collective(torch::Tensor& t, const std::string& what, Op op, int root) {
  if (!active()) return;
#if BITSWITCH_HAVE_C10D
  try {
    // NCCL reduces CUDA tensors only: CPU tensors (counts, losses) travel through the GPU.
    const bool stage = group_->backend == "nccl" && t.is_cpu();
    std::vector<torch::Tensor> ts{stage ? t.to(resolve_device(opt_.device, opt_.local_rank)) : t};
    c10::intrusive_ptr<c10d::Work> work;
    if (op == Op::kBroadcast) {
      c10d::BroadcastOptions o;
      o.rootRank = root;
      work = group_->pg->broadcast(ts, o);
    } else {
      c10d::AllreduceOptions o;
      o.reduceOp = op == Op::kMax ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
      work = group_->pg->allreduce(ts, o);
    }
    work->wait();
    if (stage) t.copy_(ts[0]);
  } catch (const std::exception& e) {
    failed(what, e);
  }
#endif
}

void Distributed::barrier(const std::string& what) {
  if (!active()) return;
  // A one-element all-reduce: works the same on every backend and honours the timeout.
  auto t = torch::zeros({1}, torch::TensorOptions().device(opt_.device == "cpu" ? torch::kCPU : torch::kCUDA));
  all_reduce_sum(t, what);
}

void Distributed::broadcast_module(torch::nn::Module& module) {
  if (!active()) return;
  for_each_flat(module_state(module), [&](torch::Tensor& flat) { broadcast(flat, 0, "broadcast of the initial model"); });
}

void Distributed::average_buffers(torch::nn::Module& module) {
  if (!active()) return;
  std::vector<torch::Tensor> bufs;
  for (const auto& b : module.buffers())
    if (b.is_floating_point()) bufs.push_back(b);
  for_each_flat(bufs, [&](torch::Tensor& flat) {
    all_reduce_sum(flat, "averaging of BN statistics");
    flat.div_(opt_.world_size);
  });
}

void Distributed::check_replicas_equal(torch::nn::Module& module, const std::string& when) {
  if (!active()) return;
  torch::NoGradGuard ng;
  int64_t differing = 0;
  std::string first;
  auto state = module_state(module);
  auto names = module.named_parameters().keys();
  for (const auto& k : module.named_buffers().keys()) names.push_back(k);
  // Rank 0's values, compared exactly on every rank.
  std::vector<torch::Tensor> copies;
  for (const auto& t : state) copies.push_back(t.detach().clone());
  for_each_flat(copies, [&](torch::Tensor& flat) { broadcast(flat, 0, "replica check " + when); });
  for (size_t i = 0; i < state.size(); ++i) {
    if (!torch::equal(state[i], copies[i])) {
      if (differing++ == 0) first = names[i];
    }
  }
  auto flag = torch::tensor({differing}, torch::kInt64).to(state.empty() ? torch::kCPU : state[0].device());
  all_reduce_max(flag, "replica check " + when);
  BS_CHECK(flag.item<int64_t>() == 0, "rank ", opt_.rank, ": replicas differ ", when, " (",
           differing ? fmt::format("here {} tensor(s), first '{}'", differing, first) : std::string("on another rank"),
           "); the ranks did not run the same steps");
}

// ---------------- gradient bucketer ----------------

struct GradBucketer::Bucket {
  std::vector<size_t> params;
  std::vector<int64_t> offsets;
  torch::Tensor flat;
  std::vector<bool> arrived;  // per param: its gradient is in `flat`
  size_t pending = 0;
  std::unique_ptr<Distributed::Pending> work;
};

struct GradBucketer::Hooks {
  std::mutex mu;
  std::vector<unsigned> handles;
};

GradBucketer::GradBucketer(Distributed& dist, std::vector<torch::Tensor> params, int64_t bucket_bytes)
    : dist_(dist), params_(std::move(params)), bucket_bytes_(bucket_bytes), hooks_(std::make_unique<Hooks>()) {
  BS_CHECK(bucket_bytes_ > 0, "bucket size must be > 0 bytes, got ", bucket_bytes_);
  where_.assign(params_.size(), -1);
  if (!dist_.active()) return;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].requires_grad()) {
      hooks_->handles.push_back(0);
      continue;
    }
    hooks_->handles.push_back(params_[i].register_hook([this, i](torch::Tensor g) { on_grad(i, g); }));
  }
}

GradBucketer::~GradBucketer() {
  for (size_t i = 0; i < hooks_->handles.size(); ++i)
    if (params_[i].requires_grad()) params_[i].remove_hook(hooks_->handles[i]);
}

int64_t GradBucketer::last_bucket_count() const { return static_cast<int64_t>(buckets_.size()); }

void GradBucketer::build_buckets(const std::vector<bool>& used) {
  buckets_.clear();
  where_.assign(params_.size(), -1);
  int64_t bytes = 0;
  // Reverse registration order: backward produces the last layers' gradients first.
  for (size_t k = params_.size(); k-- > 0;) {
    if (!used[k]) continue;
    const auto& p = params_[k];
    const bool fresh = buckets_.empty() || bytes >= bucket_bytes_ ||
                       params_[buckets_.back().params.front()].scalar_type() != p.scalar_type() ||
                       params_[buckets_.back().params.front()].device() != p.device();
    if (fresh) {
      buckets_.emplace_back();
      bytes = 0;
    }
    auto& b = buckets_.back();
    b.offsets.push_back(b.params.empty() ? 0 : b.offsets.back() + params_[b.params.back()].numel());
    b.params.push_back(k);
    bytes += p.numel() * static_cast<int64_t>(p.element_size());
    where_[k] = static_cast<int64_t>(buckets_.size()) - 1;
  }
  for (auto& b : buckets_) {
    const auto& last = params_[b.params.back()];
    b.flat = torch::empty({b.offsets.back() + last.numel()}, last.options().requires_grad(false));
    b.pending = b.params.size();
    b.arrived.assign(b.params.size(), false);
  }
  next_launch_ = 0;
}

void GradBucketer::prepare(const torch::Tensor& loss) {
  if (!dist_.active()) return;
  BS_CHECK(!armed_, "GradBucketer::prepare called twice without finish()");
  // The parameters this backward reaches: their gradient accumulators are nodes of the graph.
  std::unordered_set<const torch::autograd::Node*> seen;
  std::vector<torch::autograd::Node*> stack;
  if (auto fn = loss.grad_fn()) stack.push_back(fn.get());
  while (!stack.empty()) {
    auto* n = stack.back();
    stack.pop_back();
    if (!seen.insert(n).second) continue;
    for (const auto& e : n->next_edges())
      if (e.function && !seen.count(e.function.get())) stack.push_back(e.function.get());
  }
  std::vector<bool> used(params_.size(), false);
  for (size_t i = 0; i < params_.size(); ++i) {
    auto acc = torch::autograd::impl::try_get_grad_accumulator(params_[i]);
    used[i] = acc && seen.count(acc.get());
  }
  build_buckets(used);
  armed_ = true;
}

void GradBucketer::on_grad(size_t i, const torch::Tensor& grad) {
  std::lock_guard<std::mutex> lock(hooks_->mu);
  if (!armed_ || where_[i] < 0) return;
  auto& b = buckets_[static_cast<size_t>(where_[i])];
  size_t slot = 0;
  while (b.params[slot] != i) ++slot;
  torch::NoGradGuard ng;
  if (b.arrived[slot]) return;
  b.flat.narrow(0, b.offsets[slot], grad.numel()).copy_(grad.reshape(-1));
  b.arrived[slot] = true;
  --b.pending;
  launch_ready();
}

// Buckets start strictly in index order, so that every rank issues the same collectives in the
// same sequence whatever order its gradients arrive in.
void GradBucketer::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    auto& b = buckets_[next_launch_];
    b.flat.div_(dist_.world_size());
    b.work = dist_.all_reduce_sum_async(b.flat, fmt::format("gradient all-reduce (bucket {})", next_launch_));
    ++next_launch_;
  }
}

void GradBucketer::wait_and_unflatten() {
  const auto t0 = Clock::now();
  for (auto& b : buckets_) b.work->wait();
  wait_seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
  ++steps_;
  torch::NoGradGuard ng;
  for (auto& b : buckets_) {
    for (size_t s = 0; s < b.params.size(); ++s) {
      auto& p = params_[b.params[s]];
      auto avg = b.flat.narrow(0, b.offsets[s], p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(avg);
      else p.mutable_grad() = avg.clone();
    }
    b.work.reset();
  }
}

void GradBucketer::finish() {
  if (!dist_.active()) return;
  BS_CHECK(armed_, "GradBucketer::finish called without prepare()");
  {
    std::lock_guard<std::mutex> lock(hooks_->mu);
    armed_ = false;
    // A reached parameter whose hook did not fire (autograd skips an all-undefined gradient)
    // contributes what its .grad() holds, or zeros.
    torch::NoGradGuard ng;
    for (size_t k = next_launch_; k < buckets_.size(); ++k) {
      auto& b = buckets_[k];
      for (size_t s = 0; s < b.params.size(); ++s) {
        if (b.arrived[s]) continue;
        const auto& p = params_[b.params[s]];
        auto dst = b.flat.narrow(0, b.offsets[s], p.numel());
        if (p.grad().defined()) dst.copy_(p.grad().reshape(-1));
        else dst.zero_();
      }
    }
    for (size_t k = next_launch_; k < buckets_.size(); ++k) buckets_[k].pending = 0;
    launch_ready();
  }
  wait_and_unflatten();
}

void GradBucketer::reduce_grads() {
  if (!dist_.active()) return;
  std::vector<bool> used(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) used[i] = params_[i].grad().defined();
  build_buckets(used);
  torch::NoGradGuard ng;
  for (auto& b : buckets_) {
    for (size_t s = 0; s < b.params.size(); ++s)
      b.flat.narrow(0, b.offsets[s], params_[b.params[s]].numel()).copy_(params_[b.params[s]].grad().reshape(-1));
    b.pending = 0;
  }
  launch_ready();
  wait_and_unflatten();
}

// ---------------- activation-scale init ----------------

ActInitAveraging::ActInitAveraging(Distributed& dist) {
  if (!dist.active()) return;
  nn::set_act_init_reducer([&dist](const torch::Tensor& s) {
    auto t = s.detach().clone();
    dist.all_reduce_sum(t, "activation-scale init");
    return t.div_(dist.world_size());
  });
  installed_ = true;
}

ActInitAveraging::~ActInitAveraging() {
  if (installed_) nn::set_act_init_reducer(nullptr);
}

// ---------------- local launcher ----------------

namespace {

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  BS_CHECK(fd >= 0, "--nproc: cannot open a socket to find a free port: ", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  BS_CHECK(ok, "--nproc: cannot find a free port on 127.0.0.1: ", std::strerror(errno));
  return ntohs(a.sin_port);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return fmt::format("ended with wait status {}", status);
}

}  // namespace

void launch_local_ranks(int nproc, const std::string& exe, const std::vector<std::string>& args) {
  BS_CHECK(nproc >= 1, "nproc must be >= 1, got ", nproc);
  const int port = free_port();
  std::vector<std::string> base_env;
  const std::set<std::string> ours{"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"};
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    if (!ours.count(kv.substr(0, kv.find('=')))) base_env.push_back(kv);
  }
  std::vector<std::string> argv_s{exe};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::map<pid_t, int> rank_of;
  auto stop_all = [&](int sig) {
    for (const auto& [pid, r] : rank_of) ::kill(pid, sig);
  };
  for (int r = 0; r < nproc; ++r) {
    std::vector<std::string> env_s = base_env;
    for (const auto& kv : {fmt::format("RANK={}", r), fmt::format("WORLD_SIZE={}", nproc), fmt::format("LOCAL_RANK={}", r),
                           fmt::format("LOCAL_WORLD_SIZE={}", nproc), std::string("MASTER_ADDR=127.0.0.1"),
                           fmt::format("MASTER_PORT={}", port)})
      env_s.push_back(kv);
    std::vector<char*> envp;
    for (auto& kv : env_s) envp.push_back(kv.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    const int rc = ::posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv.data(), envp.data());
    if (rc != 0) {
      stop_all(SIGKILL);
      for (const auto& [p, _] : rank_of) ::waitpid(p, nullptr, 0);
      fail("--nproc: cannot start rank ", r, " (", exe, "): ", std::strerror(rc));
    }
    rank_of[pid] = r;
  }
  std::string first_failure;
  Clock::time_point kill_at{};
  while (!rank_of.empty()) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, first_failure.empty() ? 0 : WNOHANG);
    if (pid == 0) {
      // After a failure: ranks stuck in a collective get a moment to exit, then are killed
      // (still unreaped, so their pids cannot have been reused).
      if (Clock::now() >= kill_at) stop_all(SIGKILL);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    auto it = rank_of.find(pid);
    if (it == rank_of.end()) continue;
    const int r = it->second;
    rank_of.erase(it);
    if (status == 0 || !first_failure.empty()) continue;
    first_failure = fmt::format("rank {} (pid {}) {}", r, pid, describe_status(status));
    fmt::print(stderr, "[bitswitch] {}; stopping the other ranks\n", first_failure);
    stop_all(SIGTERM);
    kill_at = Clock::now() + std::chrono::seconds(5);
  }
  BS_CHECK(first_failure.empty(), "--nproc ", nproc, ": ", first_failure);
}

}  // namespace bitswitch::train
