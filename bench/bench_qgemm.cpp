// Benchmark of the integer GEMM paths (scalar reference, AVX2, AVX-512 VNNI) and of the packed
// l-bit weight variants, on a conv-like shape: im2col of a 3x3 conv, 64 -> 64 channels, on a
// quarter of a 128 x 28 x 28 batch (M = 25088, N = 64, K = 576). Reports ops/s (2 ops per MAC).
// Run: build/src/bitswitch/deploy/bench_qgemm --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "bitswitch/deploy/packing.h"
#include "bitswitch/deploy/qgemm.h"

using namespace bitswitch::deploy;

namespace {

constexpr int kM = 128 * 28 * 28 / 4, kN = 64, kK = 576;

struct Data {
  std::vector<uint8_t> A;
  std::vector<int8_t> B8;
  std::vector<int32_t> C;
  Data() : A(size_t(kM) * kK), B8(size_t(kN) * kK), C(size_t(kM) * kN) {
    std::mt19937 rng(0);
    for (auto& a : A) a = uint8_t(rng());
    for (auto& b : B8) b = int8_t(rng());
  }
};

Data& data() {
  static Data d;
  return d;
}

void set_ops(benchmark::State& state) {
  state.counters["ops/s"] = benchmark::Counter(2.0 * kM * kN * kK, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_QgemmRef(benchmark::State& state) {
  Data& d = data();
  for (auto _ : state) {
    qgemm_u8s8_s32_ref(kM, kN, kK, d.A.data(), d.B8.data(), d.C.data());
    benchmark::DoNotOptimize(d.C.data());
  }
  set_ops(state);
}

void BM_Qgemm(benchmark::State& state, QgemmIsa isa) {
  if (!qgemm_isa_supported(isa)) {
    state.SkipWithError("ISA not supported by this CPU");
    return;
  }
  Data& d = data();
  for (auto _ : state) {
    qgemm_u8s8_s32(kM, kN, kK, d.A.data(), d.B8.data(), d.C.data(), isa);
    benchmark::DoNotOptimize(d.C.data());
  }
  set_ops(state);
}

void BM_QgemmPacked(benchmark::State& state, QgemmIsa isa) {
  const int bits = int(state.range(0));
  if (!qgemm_packed_isa_supported(isa)) {
    state.SkipWithError("ISA not supported by this CPU");
    return;
  }
  Data& d = data();
  std::vector<int8_t> codes(d.B8.size());
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = int8_t(d.B8[i] >> (8 - bits));  // in range
  const std::vector<uint8_t> packed = pack_rows(codes.data(), kN, kK, bits);
  for (auto _ : state) {
    qgemm_u8_packed_s32(kM, kN, kK, d.A.data(), packed.data(), bits, d.C.data(), isa);
    benchmark::DoNotOptimize(d.C.data());
  }
  set_ops(state);
}

}  // namespace

BENCHMARK(BM_QgemmRef)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Qgemm, avx2, QgemmIsa::kAvx2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Qgemm, avx512vnni, QgemmIsa::kAvx512Vnni)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_QgemmPacked, avx2, QgemmIsa::kAvx2)->Arg(8)->Arg(6)->Arg(4)->Arg(3)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_QgemmPacked, avx512vnni, QgemmIsa::kAvx512Vnni)->Arg(8)->Arg(6)->Arg(4)->Arg(3)->Arg(2)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
