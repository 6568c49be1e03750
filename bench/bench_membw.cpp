// This machine's memory read bandwidth: the physical limit of matrix-vector decoding, which reads
// every weight once per token (issue 13). Each thread streams its own slice of a buffer much
// larger than the last-level cache with 256-bit loads (summed, so nothing is optimized away);
// the best of several passes is reported, for 1 and 2 threads. Prints JSON.
// Usage: bench_membw [MiB (default 1024)] [passes (default 8)]
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {
double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

__attribute__((target("avx2"), noinline)) uint64_t read_sum(const uint8_t* p, size_t n) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 128 <= n; i += 128) {
    s0 = _mm256_add_epi64(s0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    s1 = _mm256_add_epi64(s1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    s2 = _mm256_add_epi64(s2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    s3 = _mm256_add_epi64(s3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
  alignas(32) uint64_t v[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(v), s);
  return v[0] + v[1] + v[2] + v[3];
}
}  // namespace

int main(int argc, char** argv) {
  const size_t mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1024;
  const int passes = argc > 2 ? std::atoi(argv[2]) : 8;
  const size_t n = mib << 20;
  auto* buf = static_cast<uint8_t*>(std::aligned_alloc(4096, n));
  if (!buf) return 1;
  std::printf("{\"buffer_mib\": %zu, \"passes\": %d", mib, passes);
  for (int threads : {1, 2}) {
    // First touch by the threads that read (pages local to them).
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; ++t) std::memset(buf + n / threads * t, t + 1, n / threads);
    double best = 0;
    uint64_t sink = 0;
    for (int r = 0; r < passes; ++r) {
      const double t0 = now_s();
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : sink)
      for (int t = 0; t < threads; ++t) sink += read_sum(buf + n / threads * t, n / threads);
      best = std::max(best, double(n) / (now_s() - t0) / 1e9);
    }
    std::printf(", \"read_gbs_%dt\": %.2f, \"sink_%dt\": %llu", threads, best, threads, (unsigned long long)(sink & 0xff));
  }
  std::printf("}\n");
  std::free(buf);
  return 0;
}
