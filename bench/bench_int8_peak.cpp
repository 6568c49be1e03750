// This CPU's int8 multiply-accumulate peak, per core, for the instruction sequences the runtime's
// GEMMs use: a register-only loop of independent accumulator chains, no memory traffic, so it
// measures the execution ports.
//  - AVX-512 VNNI (where the CPU has it): vpdpbusd on zmm, 64 u8 x s8 MACs per instruction, the
//    panel GEMM's (qgemm_panels.h) only multiply;
//  - AVX2: u8 and s8 widened to int16, vpmaddwd + vpaddd (qgemm.h's exact 8-bit path), and the
//    vpmaddubsw + vpmaddwd sequence (twice the MACs per instruction, but it saturates int16 for
//    u8 x full-range s8, so the runtime uses it only for narrow codes).
// Also the achieved GMAC/s of the GEMMs on a cache-resident ImageNet-like shape. Prints JSON
// (VNNI keys only where the CPU has it). Usage: bench_int8_peak
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "bitswitch/deploy/qgemm.h"
#include "bitswitch/deploy/qgemm_panels.h"

using namespace bitswitch::deploy;

namespace {
double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// 4 independent chains of vpmaddwd + vpaddd (4 distinct operand pairs, so none is folded, and
// every value stays in a register): 16 MACs per vpmaddwd.
__attribute__((target("avx2"), noinline)) int32_t peak_maddwd(long iters) {
  __m256i a0 = _mm256_set1_epi16(3), b0 = _mm256_set1_epi16(2), b1 = _mm256_set1_epi16(5),
          b2 = _mm256_set1_epi16(7), b3 = _mm256_set1_epi16(9);
  __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
  for (long i = 0; i < iters; ++i) {
    c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(a0, b0));
    c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(a0, b1));
    c2 = _mm256_add_epi32(c2, _mm256_madd_epi16(a0, b2));
    c3 = _mm256_add_epi32(c3, _mm256_madd_epi16(a0, b3));
    __asm__ volatile("" : "+x"(a0), "+x"(b0), "+x"(b1), "+x"(b2), "+x"(b3));
  }
  __m256i s = _mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3));
  return _mm256_extract_epi32(s, 0);
}

// vpmaddubsw (32 u8 x s8 products summed in pairs to int16) + vpmaddwd by 1 + vpaddd: 32 MACs.
__attribute__((target("avx2"), noinline)) int32_t peak_maddubs(long iters) {
  __m256i a0 = _mm256_set1_epi8(3), b0 = _mm256_set1_epi8(2), b1 = _mm256_set1_epi8(5),
          b2 = _mm256_set1_epi8(7), b3 = _mm256_set1_epi8(9), one = _mm256_set1_epi16(1);
  __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
  for (long i = 0; i < iters; ++i) {
    c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(_mm256_maddubs_epi16(a0, b0), one));
    c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(_mm256_maddubs_epi16(a0, b1), one));
    c2 = _mm256_add_epi32(c2, _mm256_madd_epi16(_mm256_maddubs_epi16(a0, b2), one));
    c3 = _mm256_add_epi32(c3, _mm256_madd_epi16(_mm256_maddubs_epi16(a0, b3), one));
    __asm__ volatile("" : "+x"(a0), "+x"(b0), "+x"(b1), "+x"(b2), "+x"(b3));
  }
  __m256i s = _mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3));
  return _mm256_extract_epi32(s, 0);
}

// 8 independent chains of vpdpbusd (latency 4-5 cycles, up to 2 per cycle: 8 chains keep the
// ports busy): 64 MACs per instruction.
__attribute__((target("avx512f,avx512bw,avx512vnni"), noinline)) int32_t peak_dpbusd(long iters) {
  __m512i a0 = _mm512_set1_epi8(3), b0 = _mm512_set1_epi8(2), b1 = _mm512_set1_epi8(5), b2 = _mm512_set1_epi8(7),
          b3 = _mm512_set1_epi8(9);
  __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
  for (long i = 0; i < iters; ++i) {
    c0 = _mm512_dpbusd_epi32(c0, a0, b0);
    c1 = _mm512_dpbusd_epi32(c1, a0, b1);
    c2 = _mm512_dpbusd_epi32(c2, a0, b2);
    c3 = _mm512_dpbusd_epi32(c3, a0, b3);
    c4 = _mm512_dpbusd_epi32(c4, b0, a0);
    c5 = _mm512_dpbusd_epi32(c5, b1, a0);
    c6 = _mm512_dpbusd_epi32(c6, b2, a0);
    c7 = _mm512_dpbusd_epi32(c7, b3, a0);
    __asm__ volatile("" : "+v"(a0), "+v"(b0), "+v"(b1), "+v"(b2), "+v"(b3));
  }
  __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                               _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
  return _mm512_reduce_add_epi32(s);
}

template <typename F>
double best_rate(F&& f, double macs) {
  double best = 0;
  for (int r = 0; r < 20; ++r) {
    const double t0 = now_s();
    f();
    best = std::max(best, macs / (now_s() - t0) / 1e9);
  }
  return best;
}
}  // namespace

int main() {
  const long iters = 2000000;  // short runs, best of 20: robust to a shared machine
  volatile int32_t sink = 0;
  // Each sequence is measured in two passes, interleaved, and keeps its best: a single first pass
  // measured 51 GMAC/s on a VM that ran the qgemm at 70 in the same process.
  const bool vnni = qgemm_panels_supported();
  double maddwd = 0, maddubs = 0, dpbusd = 0;
  for (int pass = 0; pass < 2; ++pass) {
    maddwd = std::max(maddwd, best_rate([&] { sink = sink + peak_maddwd(iters); }, double(iters) * 4 * 16));
    maddubs = std::max(maddubs, best_rate([&] { sink = sink + peak_maddubs(iters); }, double(iters) * 4 * 32));
    if (vnni) dpbusd = std::max(dpbusd, best_rate([&] { sink = sink + peak_dpbusd(iters); }, double(iters) * 8 * 64));
  }
  // GEMM on a 3x3 conv shape of ResNet's layer3 (K = 9 * 256, N = 256), 196 rows: in L2.
  const int M = 196, N = 256, K = 2304;
  std::vector<uint8_t> A(size_t(M) * K, 7);
  std::vector<int8_t> B(size_t(N) * K, 3);
  std::vector<int32_t> C(size_t(M) * N);
  const double gemm = best_rate([&] { qgemm_u8s8_s32(M, N, K, A.data(), B.data(), C.data(), QgemmIsa::kAvx2); },
                                double(M) * N * K);
  std::printf("{\"avx2_vpmaddwd_peak_gmac_per_s_per_core\": %.2f, \"avx2_vpmaddubsw_peak_gmac_per_s_per_core\": %.2f, "
              "\"qgemm_avx2_196x256x2304_gmac_per_s\": %.2f",
              maddwd, maddubs, gemm);
  if (vnni) {
    std::vector<int8_t> panels(qgemm_panels_bytes(N, K));
    qgemm_panels_from_rows(B.data(), N, K, panels.data());
    const double pg = best_rate([&] { qgemm_u8_panels_s32(M, N, K, A.data(), K, panels.data(), C.data()); },
                                double(M) * N * K);
    std::printf(", \"vnni_vpdpbusd_peak_gmac_per_s_per_core\": %.2f, \"qgemm_vnni_panels_196x256x2304_gmac_per_s\": %.2f",
                dpbusd, pg);
  }
  std::printf("}\n");
  return 0;
}
