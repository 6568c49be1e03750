// AVX2 pair-panel GEMM; the layout and the arithmetic are in qgemm_pairs.h.
#include "bitswitch/deploy/qgemm_pairs.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "bitswitch/deploy/packing.h"
#include "bitswitch/deploy/qgemm.h"
#include "bitswitch/deploy/x86_simd.h"
#include "bitswitch/util/error.h"

namespace bitswitch::deploy {
namespace {

constexpr int kNr = 16;    // channels per panel
constexpr int kMr = 4;     // A rows per register block: 8 accumulators, 2 B, 1 A, products (with 5 or 6
                           // rows GCC 12 keeps copies of the accumulators on the stack: slower)
constexpr int kKcPairs = 512;  // most k pairs per K block: A block 8 KiB, one panel's slice 16 KiB (L1)

size_t panel_stride(int K) { return size_t((K + 1) / 2) * 2 * kNr; }  // bytes of one panel

// The same sums over the panel layout, in plain loops (CPUs without AVX2).
void pairs_portable(int M, int N, int K, const uint8_t* A, size_t lda, const int8_t* pairs, int32_t* C) {
  const size_t ps = panel_stride(K);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      const int8_t* p = pairs + size_t(n / kNr) * ps + size_t(n % kNr) * 2;
      int32_t s = 0;
      for (int k = 0; k < K; ++k) s += int32_t(A[size_t(m) * lda + size_t(k)]) * p[size_t(k / 2) * 2 * kNr + k % 2];
      C[size_t(m) * N + n] = s;
    }
}

#if BS_DEPLOY_X86
#define BS_AVX2 __attribute__((target("avx2")))

// C tile (4 x 16, row stride ldc) = [C tile +] a (4 rows of kp int16 pairs, as int32) x the panel
// slice b (kp x 32 bytes).
// noinline: inlined into pairs_avx2's two call sites, GCC 12 spilled its accumulators.
BS_AVX2 __attribute__((noinline)) void tile_4x16(const int32_t* a, int kp, const int8_t* b, int32_t* c, size_t ldc, bool accumulate) {
  const __m256i z = _mm256_setzero_si256();
  __m256i c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
  const int32_t *a0 = a, *a1 = a + kp, *a2 = a + 2 * kp, *a3 = a + 3 * kp;
  int p = 0;  // kp >= 1; a do-while keeps GCC 12 from copying the accumulators to the stack
  do {
    const __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)));
    const __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 16)));
#define BS_ROW(r)                                                   \
  {                                                                 \
    const __m256i x = _mm256_set1_epi32(a##r[p]);                   \
    c##r##0 = _mm256_add_epi32(c##r##0, _mm256_madd_epi16(x, b0));  \
    c##r##1 = _mm256_add_epi32(c##r##1, _mm256_madd_epi16(x, b1));  \
  }
    BS_ROW(0) BS_ROW(1) BS_ROW(2) BS_ROW(3)
#undef BS_ROW
    b += 2 * kNr;
  } while (++p < kp);
  if (accumulate) {
#define BS_ADD(r)                                                                                        \
  c##r##0 = _mm256_add_epi32(c##r##0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + r * ldc)));     \
  c##r##1 = _mm256_add_epi32(c##r##1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + r * ldc + 8)));
    BS_ADD(0) BS_ADD(1) BS_ADD(2) BS_ADD(3)
#undef BS_ADD
  }
#define BS_ST(r)                                                            \
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * ldc), c##r##0);     \
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * ldc + 8), c##r##1);
  BS_ST(0) BS_ST(1) BS_ST(2) BS_ST(3)
#undef BS_ST
}

// Rows [0, mr) of A, codes [2 p0, 2 p0 + 2 kp) widened to int16 pairs (rows >= mr and codes >= K
// are 0).
BS_AVX2 void widen_block(const uint8_t* A, size_t lda, int mr, int K, int p0, int kp, int32_t* out) {
  const int k0 = 2 * p0, k1 = std::min(K, 2 * (p0 + kp));
  for (int r = 0; r < kMr; ++r) {
    auto* o = reinterpret_cast<int16_t*>(out + size_t(r) * kp);
    int k = k0;
    if (r < mr) {
      const uint8_t* a = A + size_t(r) * lda;
      for (; k + 16 <= k1; k += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + (k - k0)),
                            _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + k))));
      for (; k < k1; ++k) o[k - k0] = int16_t(a[k]);
    }
    for (; k < k0 + 2 * kp; ++k) o[k - k0] = 0;
  }
}

BS_AVX2 void pairs_avx2(int M, int N, int K, const uint8_t* A, size_t lda, const int8_t* pairs, int32_t* C) {
  const int K2 = (K + 1) / 2, panels = (N + kNr - 1) / kNr;
  const size_t ps = panel_stride(K);
  alignas(32) int32_t a16[kMr * kKcPairs];
  alignas(32) int32_t edge[kMr * kNr];
  const int blocks = (K2 + kKcPairs - 1) / kKcPairs, kc = (K2 + blocks - 1) / blocks;  // equal K blocks
  for (int p0 = 0; p0 < K2; p0 += kc) {
    const int kp = std::min(kc, K2 - p0);
    const bool acc = p0 > 0;
    for (int m = 0; m < M; m += kMr) {
      const int mr = std::min(kMr, M - m);
      widen_block(A + size_t(m) * lda, lda, mr, K, p0, kp, a16);
      for (int q = 0; q < panels; ++q) {
        const int8_t* b = pairs + size_t(q) * ps + size_t(p0) * 2 * kNr;
        int32_t* c = C + size_t(m) * N + size_t(q) * kNr;
        const int nv = std::min(kNr, N - q * kNr);
        if (mr == kMr && nv == kNr) {
          tile_4x16(a16, kp, b, c, size_t(N), acc);
          continue;
        }
        // A partial tile: through a 4 x 16 buffer.
        if (acc)
          for (int r = 0; r < mr; ++r) std::memcpy(edge + r * kNr, c + size_t(r) * N, sizeof(int32_t) * nv);
        tile_4x16(a16, kp, b, edge, kNr, acc);
        for (int r = 0; r < mr; ++r) std::memcpy(c + size_t(r) * N, edge + r * kNr, sizeof(int32_t) * nv);
      }
    }
  }
}
#endif

}  // namespace

bool qgemm_pairs_supported() {
#if BS_DEPLOY_X86
  return cpu::features().avx2;
#else
  return false;
#endif
}

size_t qgemm_pairs_bytes(int N, int K) {
  BS_CHECK(N >= 0 && K >= 0, "qgemm_pairs_bytes: sizes must be non-negative, got N=", N, " K=", K);
  return size_t((N + kNr - 1) / kNr) * panel_stride(K);
}

void qgemm_pairs_from_rows(const int8_t* B, int N, int K, int8_t* out) {
  const size_t ps = panel_stride(K), bytes = qgemm_pairs_bytes(N, K);
  // Row n goes to panel n / 16, byte 2 (n % 16) of every 32-byte pair group. Only the padding
  // (channels past N, the second code of an odd K's last pair) is zeroed; the runtime calls this
  // per inference for low-bit layers, so it avoids a full memset and per-element division.
  if (bytes > 0 && N % kNr != 0) std::memset(out + size_t(N / kNr) * ps, 0, bytes - size_t(N / kNr) * ps);
  for (int n = 0; n < N; ++n) {
    const int8_t* r = B + size_t(n) * K;
    int8_t* o = out + size_t(n / kNr) * ps + size_t(n % kNr) * 2;
    int k = 0;
    for (; k + 1 < K; k += 2, o += 2 * kNr) o[0] = r[k], o[1] = r[k + 1];
    if (k < K) o[0] = r[k], o[1] = 0;
  }
}

void qgemm_pairs_from_packed(const uint8_t* packed, int bits, int N, int K, int8_t* out) {
  // One panel's 16 rows at a time through a small buffer: a panel of N' <= 16 rows is laid out as
  // the whole pair matrix of those rows.
  const size_t row_bytes = packed_bytes(size_t(K), bits), ps = panel_stride(K);
  std::vector<int8_t> rows(size_t(kNr) * size_t(K));
  for (int n0 = 0; n0 < N; n0 += kNr) {
    const int nv = std::min(kNr, N - n0);
    unpack_rows_into(packed + size_t(n0) * row_bytes, 0, size_t(nv), size_t(K), bits, rows.data());
    qgemm_pairs_from_rows(rows.data(), nv, K, out + size_t(n0 / kNr) * ps);
  }
}

void qgemm_u8_pairs_s32(int M, int N, int K, const uint8_t* A, size_t lda, const int8_t* pairs, int32_t* C,
                        bool portable) {
  qgemm_check_sizes("qgemm_u8_pairs_s32", M, N, K, A, pairs, C);
  BS_CHECK(lda >= size_t(K), "qgemm_u8_pairs_s32: lda ", lda, " < K ", K);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    std::fill(C, C + size_t(M) * N, 0);
    return;
  }
#if BS_DEPLOY_X86
  if (!portable && qgemm_pairs_supported()) return pairs_avx2(M, N, K, A, lda, pairs, C);
#endif
  (void)portable;
  pairs_portable(M, N, K, A, lda, pairs, C);
}

}  // namespace bitswitch::deploy
