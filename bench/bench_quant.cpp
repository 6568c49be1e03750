// Fused Double Rounding kernels vs the composed-ATen reference (SPEC.md Sec. 2), forward +
// backward on activation-sized tensors, next to memcpy bandwidth on the same bytes.
// Run: build/bench/bench_quant --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstring>
#include <vector>

#include "bitswitch/quant/fake_quant.h"
#include "bitswitch/util/allocator.h"

using namespace bitswitch::quant;

namespace {
// ResNet-20 on 28x28 inputs, batch 128: the first stage's activations.
const std::vector<int64_t> kActShape = {128, 16, 28, 28};
const std::vector<int64_t> kWeightShape = {64, 64, 3, 3};

void set_threads(benchmark::State& state) { torch::set_num_threads(int(state.range(0))); }

template <bool Fused>
void BM_Activation(benchmark::State& state) {
  set_threads(state);
  torch::manual_seed(0);
  auto x = torch::relu(torch::randn(kActShape));
  auto g = torch::randn(kActShape);
  auto a = torch::full({1}, 0.1f);
  for (auto _ : state) {
    auto y = Fused ? bitswitch::quant::detail::act_forward_fused(x, a, 4) : bitswitch::quant::detail::act_forward_reference(x, a, 4);
    auto r = Fused ? bitswitch::quant::detail::act_backward_fused(g, x, a, 4) : bitswitch::quant::detail::act_backward_reference(g, x, a, 4);
    benchmark::DoNotOptimize(y.data_ptr());
    benchmark::DoNotOptimize(r.first.data_ptr());
  }
  // Minimal traffic: forward reads x, writes y; backward reads x and g, writes dx: 20 B/element.
  state.SetBytesProcessed(int64_t(state.iterations()) * x.numel() * 20);
}

template <bool Fused>
void BM_Weight(benchmark::State& state) {
  set_threads(state);
  torch::manual_seed(0);
  auto w = torch::randn(kWeightShape) * 0.05;
  auto g = torch::randn(kWeightShape);
  auto s = torch::full({kWeightShape[0]}, 0.002f);
  WeightQuantSpec spec{8, 4};
  for (auto _ : state) {
    auto y = Fused ? bitswitch::quant::detail::weight_forward_fused(w, s, spec) : bitswitch::quant::detail::weight_forward_reference(w, s, spec);
    auto r = Fused ? bitswitch::quant::detail::weight_backward_fused(g, w, s, spec) : bitswitch::quant::detail::weight_backward_reference(g, w, s, spec);
    benchmark::DoNotOptimize(y.data_ptr());
    benchmark::DoNotOptimize(r.first.data_ptr());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * w.numel() * 20);
}

// memcpy of the same bytes the fused kernels move (read + write counted, as above).
void BM_Memcpy(benchmark::State& state) {
  const size_t n = 128 * 16 * 28 * 28;
  std::vector<float> src(n, 1.0f), dst(n);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), n * sizeof(float));
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * n * 8);
}
}  // namespace

BENCHMARK(BM_Activation<true>)->Name("act_fwd_bwd/fused")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Activation<false>)->Name("act_fwd_bwd/reference")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Weight<true>)->Name("weight_fwd_bwd/fused")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Weight<false>)->Name("weight_fwd_bwd/reference")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Memcpy)->Name("memcpy")->UseRealTime()->Unit(benchmark::kMicrosecond);
// The allocator as the bitswitch command sets it up: without it every 6.4 MB tensor is a fresh
// mmap, and the page faults of touching it cost more than the kernels themselves.
int main(int argc, char** argv) {
  bitswitch::tune_allocator_for_training();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
