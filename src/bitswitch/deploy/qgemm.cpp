// Integer GEMM u8 x s8 -> s32 (plain and packed l-bit weights): scalar references, AVX2 and
// AVX-512 VNNI micro-kernels selected at run time with GCC target attributes; see qgemm.h.
//
// Structure: a portable driver walks MR x NR blocks of C (B panels sized for L2, A row blocks
// reused across a panel) and calls an ISA-specific micro-kernel that computes one block over the
// whole K as row-by-row dot products (A rows and B rows are both K-contiguous), so B needs no
// repacking and packed B rows are unpacked on the fly, chunk by chunk, inside the K loop.
#include "bitswitch/deploy/qgemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bitswitch/deploy/packing.h"
#include "bitswitch/util/error.h"

#include "bitswitch/deploy/x86_simd.h"
#define BS_QGEMM_X86 BS_DEPLOY_X86

namespace bitswitch::deploy {
namespace {

// ---------------------------------------------------------------------------------------------
// CPU features.

bool cpu_avx2() { return cpu::features().avx2; }

bool cpu_avx512_vnni() { return simd::cpu_avx512_vnni(); }

bool cpu_avx512_vbmi() { return simd::cpu_avx512_vbmi(); }

// ---------------------------------------------------------------------------------------------
// Driver.

// Computes one MR x NR block of C over the whole K into out[MR * NR] (row-major). a[i] and b[j]
// point at K-contiguous rows (B rows possibly packed).
using MicroKernel = void (*)(const uint8_t* const* a, const uint8_t* const* b, int K, int32_t* out);

// Row pointers of a contiguous matrix such that every row may be read `slack` bytes past its
// end: the last rows, whose over-read would leave the matrix, point into a zero-padded copy.
class PaddedRows {
 public:
  PaddedRows(const uint8_t* base, int rows, size_t row_bytes, size_t slack)
      : base_(base), row_bytes_(row_bytes), first_copied_(rows) {
    if (slack == 0 || rows == 0) return;
    const size_t total = size_t(rows) * row_bytes;
    while (first_copied_ > 0 && size_t(first_copied_ - 1) * row_bytes + row_bytes + slack > total)
      --first_copied_;
    const size_t copied = size_t(rows - first_copied_) * row_bytes;
    copy_.assign(copied + slack, 0);
    if (copied) std::memcpy(copy_.data(), base + size_t(first_copied_) * row_bytes, copied);
  }
  const uint8_t* row(int r) const {
    return r < first_copied_ ? base_ + size_t(r) * row_bytes_
                             : copy_.data() + size_t(r - first_copied_) * row_bytes_;
  }

 private:
  const uint8_t* base_;
  size_t row_bytes_;
  int first_copied_;
  std::vector<uint8_t> copy_;
};

template <int MR, int NR>
void drive(int M, int N, int K, const uint8_t* A, const uint8_t* B, size_t b_row_bytes, int32_t* C,
           size_t slack, MicroKernel micro) {
  if (M == 0 || N == 0) return;
  const PaddedRows a_rows(A, M, size_t(K), slack);
  const PaddedRows b_rows(B, N, b_row_bytes, slack);
  // B panel of about 256 KiB (stays in L2 while all of A streams past it once).
  const size_t panel_budget = 256 * 1024;
  int nc = int(std::min<size_t>(size_t(N), std::max<size_t>(1, panel_budget / std::max<size_t>(1, b_row_bytes))));
  nc = std::max(NR, nc / NR * NR);
  const uint8_t* ap[MR];
  const uint8_t* bp[NR];
  int32_t out[MR * NR];
  for (int n0 = 0; n0 < N; n0 += nc) {
    const int n1 = std::min(N, n0 + nc);
    for (int m = 0; m < M; m += MR) {
      const int mv = std::min(MR, M - m);
      for (int i = 0; i < MR; ++i) ap[i] = a_rows.row(std::min(m + i, M - 1));
      for (int n = n0; n < n1; n += NR) {
        const int nv = std::min(NR, n1 - n);
        for (int j = 0; j < NR; ++j) bp[j] = b_rows.row(std::min(n + j, n1 - 1));
        micro(ap, bp, K, out);
        if (nv == NR) {  // a constant-size copy the compiler inlines (no libc call per block)
          for (int i = 0; i < mv; ++i)
            std::memcpy(C + size_t(m + i) * size_t(N) + size_t(n), out + i * NR, sizeof(int32_t) * NR);
        } else {
          for (int i = 0; i < mv; ++i)
            for (int j = 0; j < nv; ++j) C[size_t(m + i) * size_t(N) + size_t(n + j)] = out[i * NR + j];
        }
      }
    }
  }
}

#if BS_QGEMM_X86

#define BS_TARGET_AVX2 __attribute__((target("avx2")))
#define BS_INLINE inline __attribute__((always_inline))

// ---------------------------------------------------------------------------------------------
// AVX2: 4 x 2 blocks, 16 codes per step. A (u8) and B (s8 or unpacked) are widened to int16
// and multiplied with vpmaddwd: products and pair sums are exact in int32 (no saturation).

constexpr int kAvx2MR = 4, kAvx2NR = 2;

// Unpack tables for 16 codes of BITS < 8 bits (2*BITS bytes): word i gathers the two bytes
// holding code i (shuf), a multiply moves the code to the top of the word (mul), and an
// arithmetic right shift by 16 - BITS sign-extends it.
template <int BITS>
struct Avx2Tables {
  alignas(32) int8_t shuf[32];
  alignas(32) int16_t mul[16];
  constexpr Avx2Tables() : shuf(), mul() {
    for (int i = 0; i < 16; ++i) {
      const int bit = i * BITS, q = bit / 8, o = bit % 8, lane = i / 8, w = i % 8;
      shuf[lane * 16 + 2 * w] = int8_t(q);
      shuf[lane * 16 + 2 * w + 1] = int8_t(q + 1);
      mul[i] = int16_t(1 << (16 - BITS - o));
    }
  }
};
template <int BITS>
constexpr Avx2Tables<BITS> kAvx2Tables{};

// Word masks for a partial last step: kTailMask + 16 - r keeps the first r words.
alignas(32) constexpr int16_t kTailMask[32] = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                               -1, -1, -1, -1, -1, 0,  0,  0,  0,  0,  0,
                                               0,  0,  0,  0,  0,  0,  0,  0,  0,  0};

// 16 B codes as int16 from p (reads 16 bytes).
template <int BITS>
BS_TARGET_AVX2 BS_INLINE __m256i avx2_load_b(const uint8_t* p, __m256i shuf, __m256i mul) {
  if constexpr (BITS == 8) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    const __m256i raw = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m256i w = _mm256_mullo_epi16(_mm256_shuffle_epi8(raw, shuf), mul);
    return _mm256_srai_epi16(w, 16 - BITS);
  }
}

// Horizontal sums of the 4 x 2 block's 8 accumulators into out[8], in row-major (m, n) order.
BS_TARGET_AVX2 BS_INLINE void avx2_store_4x2(__m256i a00, __m256i a01, __m256i a10, __m256i a11, __m256i a20,
                                             __m256i a21, __m256i a30, __m256i a31, int32_t* out) {
  const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(a00, a01), _mm256_hadd_epi32(a10, a11));
  const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(a20, a21), _mm256_hadd_epi32(a30, a31));
  const __m256i sum = _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20),
                                       _mm256_permute2x128_si256(h0, h1, 0x31));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), sum);
}

template <int BITS>
BS_TARGET_AVX2 void micro_avx2(const uint8_t* const* a, const uint8_t* const* b, int K, int32_t* out) {
  constexpr size_t kChunkBytes = 2 * BITS;  // bytes of B per 16 codes
  __m256i shuf = _mm256_setzero_si256(), mul = _mm256_setzero_si256();
  if constexpr (BITS < 8) {
    shuf = _mm256_load_si256(reinterpret_cast<const __m256i*>(kAvx2Tables<BITS>.shuf));
    mul = _mm256_load_si256(reinterpret_cast<const __m256i*>(kAvx2Tables<BITS>.mul));
  }
  __m256i acc00 = _mm256_setzero_si256(), acc01 = acc00, acc10 = acc00, acc11 = acc00,
          acc20 = acc00, acc21 = acc00, acc30 = acc00, acc31 = acc00;
  const uint8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
  const uint8_t *b0 = b[0], *b1 = b[1];
  const int steps = (K + 15) / 16;
  const int rem = K % 16;
  for (int s = 0; s < steps; ++s) {
    const size_t ka = size_t(s) * 16, kb = size_t(s) * kChunkBytes;
    __m256i x0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a0 + ka)));
    __m256i x1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a1 + ka)));
    __m256i x2 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a2 + ka)));
    __m256i x3 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a3 + ka)));
    if (rem != 0 && s == steps - 1) {  // codes past K: A is zeroed, B may hold anything
      const __m256i keep = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 16 - rem));
      x0 = _mm256_and_si256(x0, keep);
      x1 = _mm256_and_si256(x1, keep);
      x2 = _mm256_and_si256(x2, keep);
      x3 = _mm256_and_si256(x3, keep);
    }
    const __m256i y0 = avx2_load_b<BITS>(b0 + kb, shuf, mul);
    const __m256i y1 = avx2_load_b<BITS>(b1 + kb, shuf, mul);
    acc00 = _mm256_add_epi32(acc00, _mm256_madd_epi16(x0, y0));
    acc01 = _mm256_add_epi32(acc01, _mm256_madd_epi16(x0, y1));
    acc10 = _mm256_add_epi32(acc10, _mm256_madd_epi16(x1, y0));
    acc11 = _mm256_add_epi32(acc11, _mm256_madd_epi16(x1, y1));
    acc20 = _mm256_add_epi32(acc20, _mm256_madd_epi16(x2, y0));
    acc21 = _mm256_add_epi32(acc21, _mm256_madd_epi16(x2, y1));
    acc30 = _mm256_add_epi32(acc30, _mm256_madd_epi16(x3, y0));
    acc31 = _mm256_add_epi32(acc31, _mm256_madd_epi16(x3, y1));
  }
  avx2_store_4x2(acc00, acc01, acc10, acc11, acc20, acc21, acc30, acc31, out);
}

// ---------------------------------------------------------------------------------------------
// AVX-512 VNNI: 64 codes per step, vpdpbusd (u8 x s8, 4 products summed into each int32 lane
// without intermediate saturation). Partial steps use zero-masked loads, so nothing is read past
// a row. Blocks are 4 x 4 (16 zmm accumulators), reduced horizontally once per block.
// Accumulators are named variables: with an array GCC 12 keeps them in memory.

// Sums each of 16 accumulators; lane l, element e of the result is the total of acc[4e + l].
BS_TARGET_VNNI BS_INLINE __m512i vnni_reduce16(const __m512i (&acc)[16]) {
  __m512i p[8], v[4];
  for (int q = 0; q < 8; ++q)  // 256-bit partials of acc[2q] (lanes 0-1) and acc[2q+1] (2-3)
    p[q] = _mm512_add_epi32(_mm512_shuffle_i32x4(acc[2 * q], acc[2 * q + 1], 0x44),
                            _mm512_shuffle_i32x4(acc[2 * q], acc[2 * q + 1], 0xEE));
  for (int k = 0; k < 4; ++k)  // lane l of v[k]: 128-bit partial of acc[4k + l]
    v[k] = _mm512_add_epi32(_mm512_shuffle_i32x4(p[2 * k], p[2 * k + 1], 0x88),
                            _mm512_shuffle_i32x4(p[2 * k], p[2 * k + 1], 0xDD));
  const __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(v[0], v[1]), _mm512_unpackhi_epi32(v[0], v[1]));
  const __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2], v[3]), _mm512_unpackhi_epi32(v[2], v[3]));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
}

inline __mmask64 low_mask64(int n) { return n >= 64 ? ~__mmask64(0) : (__mmask64(1) << n) - 1; }

using simd::dpbusd;
#define BS_DP(c, x, y) c = dpbusd(c, x, y)

constexpr int kVnniMR = 4, kVnniNR = 4;

BS_TARGET_VNNI void micro_vnni_s8(const uint8_t* const* a, const uint8_t* const* b, int K, int32_t* out) {
  const __m512i z = _mm512_setzero_si512();
  __m512i c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
  __m512i c20 = z, c21 = z, c22 = z, c23 = z, c30 = z, c31 = z, c32 = z, c33 = z;
  const uint8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
  const uint8_t *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3];
#define BS_STEP_4x4(LOAD)                                                              \
  {                                                                                    \
    const __m512i x0 = LOAD(a0), x1 = LOAD(a1), x2 = LOAD(a2), x3 = LOAD(a3);          \
    __m512i y = LOAD(b0);                                                              \
    BS_DP(c00, x0, y); BS_DP(c10, x1, y); BS_DP(c20, x2, y); BS_DP(c30, x3, y);        \
    y = LOAD(b1);                                                                      \
    BS_DP(c01, x0, y); BS_DP(c11, x1, y); BS_DP(c21, x2, y); BS_DP(c31, x3, y);        \
    y = LOAD(b2);                                                                      \
    BS_DP(c02, x0, y); BS_DP(c12, x1, y); BS_DP(c22, x2, y); BS_DP(c32, x3, y);        \
    y = LOAD(b3);                                                                      \
    BS_DP(c03, x0, y); BS_DP(c13, x1, y); BS_DP(c23, x2, y); BS_DP(c33, x3, y);        \
  }
  int k = 0;
#define BS_LOAD_FULL(p) _mm512_loadu_si512((p) + k)
  for (; k + 64 <= K; k += 64) BS_STEP_4x4(BS_LOAD_FULL)
  if (k < K) {
    const __mmask64 mk = low_mask64(K - k);
#define BS_LOAD_TAIL(p) _mm512_maskz_loadu_epi8(mk, (p) + k)
    BS_STEP_4x4(BS_LOAD_TAIL)
  }
#undef BS_LOAD_FULL
#undef BS_LOAD_TAIL
#undef BS_STEP_4x4
  // acc[4e + l] must hold (m = l, n = e) for a row-major 4 x 4 result.
  const __m512i acc[16] = {c00, c10, c20, c30, c01, c11, c21, c31, c02, c12, c22, c32, c03, c13, c23, c33};
  _mm512_storeu_si512(out, vnni_reduce16(acc));
}

using simd::kVbmiTables;
using simd::vbmi_unpack;

// The packed kernels also use 4 x 4 blocks: 4 A loads and 4 B unpacks per 16 vpdpbusd
// measured faster on Zen 4 than 8 x 2 (8 A loads + 2 unpacks, load-bound).
constexpr int kVnniPackedMR = 4, kVnniPackedNR = 4;

template <int BITS>
BS_TARGET_VNNI_VBMI void micro_vnni_packed(const uint8_t* const* a, const uint8_t* const* b, int K,
                                           int32_t* out) {
  static_assert(BITS >= 2 && BITS < 8, "8-bit rows use micro_vnni_s8");
  constexpr size_t kChunkBytes = 8 * BITS;  // bytes of B per 64 codes
  const __m512i idx = _mm512_load_si512(kVbmiTables<BITS>.idx);
  const __m512i ctrl = _mm512_load_si512(kVbmiTables<BITS>.ctrl);
  const __m512i low = _mm512_set1_epi8(char((1 << BITS) - 1));
  const __m512i sign = _mm512_set1_epi8(char(1 << (BITS - 1)));
  const __m512i z = _mm512_setzero_si512();
  __m512i c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
  __m512i c20 = z, c21 = z, c22 = z, c23 = z, c30 = z, c31 = z, c32 = z, c33 = z;
  const uint8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
  const uint8_t *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3];
#define BS_UNPACK(p, mask) vbmi_unpack(_mm512_maskz_loadu_epi8(mask, (p) + kb), idx, ctrl, low, sign)
#define BS_STEP_PACKED(LOADA, BMASK)                                                   \
  {                                                                                    \
    const __m512i x0 = LOADA(a0), x1 = LOADA(a1), x2 = LOADA(a2), x3 = LOADA(a3);      \
    __m512i y = BS_UNPACK(b0, BMASK);                                                  \
    BS_DP(c00, x0, y); BS_DP(c10, x1, y); BS_DP(c20, x2, y); BS_DP(c30, x3, y);        \
    y = BS_UNPACK(b1, BMASK);                                                          \
    BS_DP(c01, x0, y); BS_DP(c11, x1, y); BS_DP(c21, x2, y); BS_DP(c31, x3, y);        \
    y = BS_UNPACK(b2, BMASK);                                                          \
    BS_DP(c02, x0, y); BS_DP(c12, x1, y); BS_DP(c22, x2, y); BS_DP(c32, x3, y);        \
    y = BS_UNPACK(b3, BMASK);                                                          \
    BS_DP(c03, x0, y); BS_DP(c13, x1, y); BS_DP(c23, x2, y); BS_DP(c33, x3, y);        \
  }
  int k = 0;
  size_t kb = 0;
  const __mmask64 chunk_mask = low_mask64(int(kChunkBytes));
#define BS_LOAD_FULL(p) _mm512_loadu_si512((p) + k)
  for (; k + 64 <= K; k += 64, kb += kChunkBytes) BS_STEP_PACKED(BS_LOAD_FULL, chunk_mask)
  if (k < K) {  // codes past K meet zero activations, whatever they decode to
    const int r = K - k;
    const __mmask64 ma = low_mask64(r), mb = low_mask64((r * BITS + 7) / 8);
#define BS_LOAD_TAIL(p) _mm512_maskz_loadu_epi8(ma, (p) + k)
    BS_STEP_PACKED(BS_LOAD_TAIL, mb)
  }
#undef BS_LOAD_FULL
#undef BS_LOAD_TAIL
#undef BS_STEP_PACKED
#undef BS_UNPACK
  const __m512i acc[16] = {c00, c10, c20, c30, c01, c11, c21, c31, c02, c12, c22, c32, c03, c13, c23, c33};
  _mm512_storeu_si512(out, vnni_reduce16(acc));
}
#undef BS_DP

// ---------------------------------------------------------------------------------------------
// AVX2 for int8 rows whose codes fit a narrow width (BITS <= 5: the runtime's unpacked 2- to
// 5-bit rows): 32 codes per step with vpmaddubsw (u8 x s8, adjacent products summed to int16).
// Exact: a pair is at most 2 * 255 * 2^(BITS-1) in magnitude, and kUbRun<BITS> steps are summed
// in int16 (at most 32767) before vpmaddwd with ones widens them into the int32 accumulators.
// Per 4 x 2 block and 32 codes: 8 multiplies instead of the int16 path's 16.

template <int BITS>
constexpr int kUbRun = 32767 / (2 * 255 * (1 << (BITS - 1)));

// Byte masks for a partial last step: kTailMask8 + 32 - r keeps the first r bytes.
alignas(32) constexpr uint8_t kTailMask8[64] = {
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};

template <int BITS>
BS_TARGET_AVX2 void micro_avx2_narrow(const uint8_t* const* a, const uint8_t* const* b, int K, int32_t* out) {
  static_assert(BITS >= 2 && BITS <= 5 && kUbRun<BITS> >= 4, "narrow kernel: 2..5 bits");
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc00 = _mm256_setzero_si256(), acc01 = acc00, acc10 = acc00, acc11 = acc00,
          acc20 = acc00, acc21 = acc00, acc30 = acc00, acc31 = acc00;
  const uint8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
  const uint8_t *b0 = b[0], *b1 = b[1];
  const int steps = (K + 31) / 32;
  const int rem = K % 32;
  for (int s0 = 0; s0 < steps; s0 += kUbRun<BITS>) {
    __m256i h00 = _mm256_setzero_si256(), h01 = h00, h10 = h00, h11 = h00, h20 = h00, h21 = h00, h30 = h00,
            h31 = h00;
    const int s1 = std::min(steps, s0 + kUbRun<BITS>);
    for (int s = s0; s < s1; ++s) {
      const size_t k = size_t(s) * 32;
      __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a0 + k));
      __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a1 + k));
      __m256i x2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a2 + k));
      __m256i x3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a3 + k));
      if (rem != 0 && s == steps - 1) {  // codes past K: A is zeroed, B may hold anything
        const __m256i keep = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask8 + 32 - rem));
        x0 = _mm256_and_si256(x0, keep);
        x1 = _mm256_and_si256(x1, keep);
        x2 = _mm256_and_si256(x2, keep);
        x3 = _mm256_and_si256(x3, keep);
      }
      const __m256i y0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + k));
      const __m256i y1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b1 + k));
      h00 = _mm256_add_epi16(h00, _mm256_maddubs_epi16(x0, y0));
      h01 = _mm256_add_epi16(h01, _mm256_maddubs_epi16(x0, y1));
      h10 = _mm256_add_epi16(h10, _mm256_maddubs_epi16(x1, y0));
      h11 = _mm256_add_epi16(h11, _mm256_maddubs_epi16(x1, y1));
      h20 = _mm256_add_epi16(h20, _mm256_maddubs_epi16(x2, y0));
      h21 = _mm256_add_epi16(h21, _mm256_maddubs_epi16(x2, y1));
      h30 = _mm256_add_epi16(h30, _mm256_maddubs_epi16(x3, y0));
      h31 = _mm256_add_epi16(h31, _mm256_maddubs_epi16(x3, y1));
    }
    acc00 = _mm256_add_epi32(acc00, _mm256_madd_epi16(h00, ones));
    acc01 = _mm256_add_epi32(acc01, _mm256_madd_epi16(h01, ones));
    acc10 = _mm256_add_epi32(acc10, _mm256_madd_epi16(h10, ones));
    acc11 = _mm256_add_epi32(acc11, _mm256_madd_epi16(h11, ones));
    acc20 = _mm256_add_epi32(acc20, _mm256_madd_epi16(h20, ones));
    acc21 = _mm256_add_epi32(acc21, _mm256_madd_epi16(h21, ones));
    acc30 = _mm256_add_epi32(acc30, _mm256_madd_epi16(h30, ones));
    acc31 = _mm256_add_epi32(acc31, _mm256_madd_epi16(h31, ones));
  }
  avx2_store_4x2(acc00, acc01, acc10, acc11, acc20, acc21, acc30, acc31, out);
}

MicroKernel avx2_narrow_kernel(int bits) {
  switch (bits) {
    case 2: return micro_avx2_narrow<2>;
    case 3: return micro_avx2_narrow<3>;
    case 4: return micro_avx2_narrow<4>;
    case 5: return micro_avx2_narrow<5>;
    default: return nullptr;
  }
}

MicroKernel avx2_kernel(int bits) {
  switch (bits) {
    case 2: return micro_avx2<2>;
    case 3: return micro_avx2<3>;
    case 4: return micro_avx2<4>;
    case 5: return micro_avx2<5>;
    case 6: return micro_avx2<6>;
    case 7: return micro_avx2<7>;
    default: return micro_avx2<8>;
  }
}

// Packed kernels for bits in [2, 7]; 8-bit rows are plain s8 rows (micro_vnni_s8).
MicroKernel vnni_packed_kernel(int bits) {
  switch (bits) {
    case 2: return micro_vnni_packed<2>;
    case 3: return micro_vnni_packed<3>;
    case 4: return micro_vnni_packed<4>;
    case 5: return micro_vnni_packed<5>;
    case 6: return micro_vnni_packed<6>;
    case 7: return micro_vnni_packed<7>;
    default: fail("vnni_packed_kernel: no kernel for ", bits, " bits");
  }
}

#endif  // BS_QGEMM_X86

// ---------------------------------------------------------------------------------------------
// Dispatch.

QgemmIsa parse_isa_env() {
  const char* env = std::getenv("BITSWITCH_QGEMM_ISA");
  if (env == nullptr || *env == '\0') return QgemmIsa::kAvx512Vnni;  // no cap
  const std::string v(env);
  if (v == "scalar") return QgemmIsa::kScalar;
  if (v == "avx2") return QgemmIsa::kAvx2;
  if (v == "avx512vnni") return QgemmIsa::kAvx512Vnni;
  fail("environment variable BITSWITCH_QGEMM_ISA = '", v,
       "' is not one of scalar, avx2, avx512vnni");
}

void check_bits(const char* fn, int bits) {
  BS_CHECK(bits >= 2 && bits <= 8, fn, ": bits must be in [2, 8], got ", bits);
}

QgemmIsa resolve(const char* fn, QgemmIsa isa, bool packed) {
  if (isa == QgemmIsa::kAuto) return qgemm_auto_isa(packed);
  const bool ok = packed ? qgemm_packed_isa_supported(isa) : qgemm_isa_supported(isa);
  BS_CHECK(ok, fn, ": ISA path '", qgemm_isa_name(isa), "' is not supported by this CPU");
  return isa;
}

}  // namespace

void qgemm_check_sizes(const char* fn, int M, int N, int K, const void* A, const void* B, const void* C) {
  BS_CHECK(M >= 0 && N >= 0 && K >= 0, fn, ": sizes must be non-negative, got M=", M, " N=", N,
           " K=", K);
  BS_CHECK(K <= kQgemmMaxK, fn, ": K=", K, " exceeds ", kQgemmMaxK,
           " (int32 accumulation could overflow)");
  BS_CHECK((M == 0 || K == 0 || A) && (N == 0 || K == 0 || B) && (M == 0 || N == 0 || C), fn,
           ": null matrix pointer");
}

const char* qgemm_isa_name(QgemmIsa isa) {
  switch (isa) {
    case QgemmIsa::kAuto: return "auto";
    case QgemmIsa::kScalar: return "scalar";
    case QgemmIsa::kAvx2: return "avx2";
    case QgemmIsa::kAvx512Vnni: return "avx512vnni";
  }
  return "unknown";
}

bool qgemm_isa_supported(QgemmIsa isa) {
  switch (isa) {
    case QgemmIsa::kAuto:
    case QgemmIsa::kScalar: return true;
    case QgemmIsa::kAvx2: return cpu_avx2();
    case QgemmIsa::kAvx512Vnni: return cpu_avx512_vnni();
  }
  return false;
}

bool qgemm_packed_isa_supported(QgemmIsa isa) {
  if (isa == QgemmIsa::kAvx512Vnni) return cpu_avx512_vnni() && cpu_avx512_vbmi();
  return qgemm_isa_supported(isa);
}

QgemmIsa qgemm_auto_isa(bool packed) {
  static const QgemmIsa cap = parse_isa_env();
  for (QgemmIsa isa : {QgemmIsa::kAvx512Vnni, QgemmIsa::kAvx2}) {
    if (int(isa) > int(cap)) continue;
    if (packed ? qgemm_packed_isa_supported(isa) : qgemm_isa_supported(isa)) return isa;
  }
  return QgemmIsa::kScalar;
}

size_t qgemm_packed_row_bytes(int K, int bits) {
  check_bits("qgemm_packed_row_bytes", bits);
  BS_CHECK(K >= 0, "qgemm_packed_row_bytes: K must be non-negative, got ", K);
  return packed_bytes(size_t(K), bits);
}

void qgemm_u8s8_s32_ref(int M, int N, int K, const uint8_t* A, const int8_t* B, int32_t* C) {
  qgemm_check_sizes("qgemm_u8s8_s32_ref", M, N, K, A, B, C);
  for (int m = 0; m < M; ++m) {
    const uint8_t* a = A + size_t(m) * size_t(K);
    for (int n = 0; n < N; ++n) {
      const int8_t* b = B + size_t(n) * size_t(K);
      int32_t s = 0;
      for (int k = 0; k < K; ++k) s += int32_t(a[k]) * int32_t(b[k]);
      C[size_t(m) * size_t(N) + size_t(n)] = s;
    }
  }
}

void qgemm_u8s8_s32(int M, int N, int K, const uint8_t* A, const int8_t* B, int32_t* C, QgemmIsa isa) {
  qgemm_check_sizes("qgemm_u8s8_s32", M, N, K, A, B, C);
  isa = resolve("qgemm_u8s8_s32", isa, /*packed=*/false);
  const auto* Bu = reinterpret_cast<const uint8_t*>(B);
#if BS_QGEMM_X86
  if (isa == QgemmIsa::kAvx512Vnni)
    return drive<kVnniMR, kVnniNR>(M, N, K, A, Bu, size_t(K), C, 0, micro_vnni_s8);
  if (isa == QgemmIsa::kAvx2)
    return drive<kAvx2MR, kAvx2NR>(M, N, K, A, Bu, size_t(K), C, 16, micro_avx2<8>);
#endif
  (void)Bu;
  qgemm_u8s8_s32_ref(M, N, K, A, B, C);
}

void qgemm_u8s8_s32_narrow(int M, int N, int K, const uint8_t* A, const int8_t* B, int bits, int32_t* C,
                           QgemmIsa isa) {
  qgemm_check_sizes("qgemm_u8s8_s32_narrow", M, N, K, A, B, C);
  check_bits("qgemm_u8s8_s32_narrow", bits);
  isa = resolve("qgemm_u8s8_s32_narrow", isa, /*packed=*/false);
#if BS_QGEMM_X86
  // Below K = 64 the 32-code steps waste too much of a step on the tail (MobileNetV2's 1x1
  // convs on 16 and 24 channels ran slower than the int16 path).
  if (isa == QgemmIsa::kAvx2 && K >= 64) {
    if (const MicroKernel k = avx2_narrow_kernel(bits))
      return drive<kAvx2MR, kAvx2NR>(M, N, K, A, reinterpret_cast<const uint8_t*>(B), size_t(K), C, 32, k);
  }
#endif
  qgemm_u8s8_s32(M, N, K, A, B, C, isa);
}

void qgemm_u8_packed_s32_ref(int M, int N, int K, const uint8_t* A, const uint8_t* B_packed, int bits,
                             int32_t* C) {
  qgemm_check_sizes("qgemm_u8_packed_s32_ref", M, N, K, A, B_packed, C);
  check_bits("qgemm_u8_packed_s32_ref", bits);
  std::vector<int8_t> B(size_t(N) * size_t(K));
  unpack_rows_into(B_packed, 0, size_t(N), size_t(K), bits, B.data());
  qgemm_u8s8_s32_ref(M, N, K, A, B.data(), C);
}

void qgemm_u8_packed_s32(int M, int N, int K, const uint8_t* A, const uint8_t* B_packed, int bits,
                         int32_t* C, QgemmIsa isa) {
  qgemm_check_sizes("qgemm_u8_packed_s32", M, N, K, A, B_packed, C);
  check_bits("qgemm_u8_packed_s32", bits);
  isa = resolve("qgemm_u8_packed_s32", isa, /*packed=*/true);
  const size_t row_bytes = packed_bytes(size_t(K), bits);
#if BS_QGEMM_X86
  if (isa == QgemmIsa::kAvx512Vnni) {
    if (bits == 8) return drive<kVnniMR, kVnniNR>(M, N, K, A, B_packed, row_bytes, C, 0, micro_vnni_s8);
    return drive<kVnniPackedMR, kVnniPackedNR>(M, N, K, A, B_packed, row_bytes, C, 0, vnni_packed_kernel(bits));
  }
  if (isa == QgemmIsa::kAvx2)
    return drive<kAvx2MR, kAvx2NR>(M, N, K, A, B_packed, row_bytes, C, 16, avx2_kernel(bits));
#endif
  (void)row_bytes;
  qgemm_u8_packed_s32_ref(M, N, K, A, B_packed, bits, C);
}

}  // namespace bitswitch::deploy
