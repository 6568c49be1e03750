// Benchmark of the integer GEMM paths (scalar reference, AVX2, AVX-512 VNNI) and of the packed
// l-bit weight variants, on a conv-like shape: im2col of a 3x3 conv, 64 -> 64 channels, on a
// quarter of a 128 x 28 x 28 batch (M = 25088, N = 64, K = 576). Reports ops/s (2 ops per MAC).
// Run: build/src/bitswitch/deploy/bench_qgemm --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <random>
#include <vector>

#include "bitswitch/deploy/float_conv.h"
#include "bitswitch/deploy/packing.h"
#include "bitswitch/deploy/qgemm.h"
#include "bitswitch/deploy/qgemm_pairs.h"
#include "bitswitch/deploy/qgemm_panels.h"

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

// Short-K shapes (MobileNetV2's and ResNet-50's 1x1 convs, ResNet's 3x3 at 64 and 128 channels):
// the AVX2 row GEMM against the pair-panel GEMM (qgemm_pairs.h) that the runtime runs for K <= 576
// at 8 bits. Args: M, N, K. Compare the GMAC/s counters of the two rows of one shape.
void BM_ShortK(benchmark::State& state, bool pairs) {
  const int M = int(state.range(0)), N = int(state.range(1)), K = int(state.range(2));
  if (!qgemm_isa_supported(QgemmIsa::kAvx2)) {
    state.SkipWithError("no AVX2 on this CPU");
    return;
  }
  std::mt19937 rng(1);
  std::vector<uint8_t> A(size_t(M) * K);
  std::vector<int8_t> B(size_t(N) * K), P(qgemm_pairs_bytes(N, K));
  std::vector<int32_t> C(size_t(M) * N);
  for (auto& a : A) a = uint8_t(rng());
  for (auto& b : B) b = int8_t(rng());
  qgemm_pairs_from_rows(B.data(), N, K, P.data());
  for (auto _ : state) {
    if (pairs) qgemm_u8_pairs_s32(M, N, K, A.data(), size_t(K), P.data(), C.data());
    else qgemm_u8s8_s32(M, N, K, A.data(), B.data(), C.data(), QgemmIsa::kAvx2);
    benchmark::DoNotOptimize(C.data());
  }
  state.counters["GMAC/s"] =
      benchmark::Counter(double(M) * N * K / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

// The VNNI panel GEMM (qgemm_panels.h) on the same short-K shapes, as the runtime calls it on
// 1x1 convolutions: rows in chunks of max(48, 8192 / N rounded down to 48) rows, each chunk's
// int32 sums into one reused buffer.
void BM_ShortKPanels(benchmark::State& state) {
  const int M = int(state.range(0)), N = int(state.range(1)), K = int(state.range(2));
  if (!qgemm_panels_supported()) {
    state.SkipWithError("no AVX-512 VNNI on this CPU");
    return;
  }
  std::mt19937 rng(1);
  std::vector<uint8_t> A(size_t(M) * K);
  std::vector<int8_t> B(size_t(N) * K), P(qgemm_panels_bytes(N, K));
  for (auto& a : A) a = uint8_t(rng());
  for (auto& b : B) b = int8_t(rng());
  qgemm_panels_from_rows(B.data(), N, K, P.data());
  const int chunk = std::max(48, (8192 / N) / 48 * 48);
  std::vector<int32_t> C(size_t(chunk) * N);
  for (auto _ : state) {
    for (int m0 = 0; m0 < M; m0 += chunk)
      qgemm_u8_panels_s32(std::min(chunk, M - m0), N, K, A.data() + size_t(m0) * K, K, P.data(), C.data());
    benchmark::DoNotOptimize(C.data());
  }
  state.counters["GMAC/s"] =
      benchmark::Counter(double(M) * N * K / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

// The full-precision conv (float_conv.h) on ResNet's 7x7 stride-2 stem as the runtime calls it:
// one 224x224x3 NHWC image, padding 3, 64 output channels (M = 112 * 112, K = 7 * 7 * 3), the
// rows built from the image per block (fconv_conv). Compare the GMAC/s of the AVX2 and AVX-512
// paths.
void BM_FpStem(benchmark::State& state, QgemmIsa isa) {
  if (!qgemm_isa_supported(isa)) {
    state.SkipWithError("ISA not supported by this CPU");
    return;
  }
  constexpr int H = 224, M = 112 * 112, K = 147, N = 64;
  std::mt19937 rng(2);
  std::normal_distribution<float> nf(0.0f, 1.0f);
  std::vector<float> x(size_t(H) * H * 3), y(size_t(M) * N), wt(size_t(K) * N);
  for (auto& a : x) a = nf(rng);
  for (auto& w : wt) w = nf(rng) * 0.05f;
  const FconvInput in{x.data(), 1, H, H, 3, 7, 2, 3};
  for (auto _ : state) {
    fconv_conv(in, 0, M, N, wt.data(), nullptr, y.data(), isa);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GMAC/s"] =
      benchmark::Counter(double(M) * N * K / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

// The full-precision classifier rows (float_conv.h) of ResNet-50 (K = 2048, N = 1000) for M
// images: few rows, where the 8 MB of float weights stream from memory once per call.
void BM_FpClassifier(benchmark::State& state) {
  const int M = int(state.range(0)), K = 2048, N = 1000;
  std::mt19937 rng(3);
  std::normal_distribution<float> nf(0.0f, 1.0f);
  std::vector<float> A(size_t(M) * K), y(size_t(M) * N), wt(size_t(K) * N);
  for (auto& a : A) a = nf(rng);
  for (auto& w : wt) w = nf(rng) * 0.05f;
  for (auto _ : state) {
    fconv_rows(A.data(), M, K, N, wt.data(), nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GMAC/s"] =
      benchmark::Counter(double(M) * N * K / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_GB/s"] =
      benchmark::Counter(double(K) * N * sizeof(float) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

void short_k_shapes(benchmark::internal::Benchmark* b) {
  for (const auto& s : std::vector<std::vector<int64_t>>{
           {3136, 96, 16}, {3136, 256, 64}, {784, 512, 128}, {784, 128, 512}, {784, 128, 576}, {196, 256, 1152},
           {3136, 16, 144}, {784, 32, 288}, {196, 64, 576}})
    b->Args(s);
}

}  // namespace

BENCHMARK_CAPTURE(BM_ShortK, rows_avx2, false)->Apply(short_k_shapes)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ShortK, pairs_avx2, true)->Apply(short_k_shapes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ShortKPanels)->Apply(short_k_shapes)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_FpStem, avx2, QgemmIsa::kAvx2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_FpStem, avx512, QgemmIsa::kAvx512Vnni)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FpClassifier)->Arg(1)->Arg(4)->Arg(16)->Arg(32)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_QgemmRef)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Qgemm, avx2, QgemmIsa::kAvx2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Qgemm, avx512vnni, QgemmIsa::kAvx512Vnni)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_QgemmPacked, avx2, QgemmIsa::kAvx2)->Arg(8)->Arg(6)->Arg(4)->Arg(3)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_QgemmPacked, avx512vnni, QgemmIsa::kAvx512Vnni)->Arg(8)->Arg(6)->Arg(4)->Arg(3)->Arg(2)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
