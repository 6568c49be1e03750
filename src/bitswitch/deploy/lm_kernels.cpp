// Integer linear layers of the language-model decoder; the definition is in lm_kernels.h
// (SPEC.md Sec. 9; paper Sec. 3.1 and 4.3: W{l}A8 with the l-bit codes of Double Rounding).
//
// Resident layout (built once by from_codes / from_packed). Rows are taken in tiles of 8 (N is
// padded with zero rows to a multiple of 8), the input dimension in units of 32 codes (each group
// of G codes is padded with zeros to Gp = a multiple of 32; Gp = G when 32 divides G). One
// (tile, unit) holds 8 rows x 32 codes in 32 * l bytes, exactly l bits per weight:
//  - l = 8: eight 32-byte vectors, vector r = the signed codes of row r.
//  - l < 8: the offset code u = c + 2^(l-1) in [0, 2^l) is split into bit planes of width 4, 2
//    and 1 (l = 4+2+1 at most: 7 = 4+2+1, 6 = 4+2, 5 = 4+1, 4, 3 = 2+1, 2), low bits first. A
//    plane of width w takes w 32-byte vectors; byte j of vector i holds, for the 8/w rows
//    r = i * 8/w + s (s = 0 .. 8/w - 1), their plane bits of code j at bit s * w.
// So the bytes resident and read per token are l/8 of the 8-bit layer's, and a kernel gets the
// 32 codes of one row from one load per plane, one shift and one AND (plus an OR per extra plane),
// all in registers. Scales are kept transposed per tile ([tile][g][8 rows]).
//
// Arithmetic of the AVX2 path (exact, and so bit-identical to lm_linear_ref):
//  - l < 8: vpmaddubsw(u, q) with u in [0, 127] and q in [-127, 127] never saturates (a pair sums to
//    at most 2 * 127 * 127 < 2^15), vpmaddwd with ones widens to int32; the offset is removed per
//    group with the token's code sum: sum q c = sum q u - 2^(l-1) sum q.
//  - l = 8: vpmaddubsw(|c|, sign(q, c)), |c| <= 128, pairs <= 2 * 128 * 127 < 2^15.
//  - The eight int32 lane accumulators of eight (row, token) pairs are reduced by a vphaddd tree,
//    converted to float, multiplied by the group scales and added in increasing g (no FMA), then
//    multiplied by the token scale.
// Decoding (M = 1) runs 8 rows x 1 token per tile; prefill runs 2 rows x 4 tokens, so each
// unpacked weight vector serves 4 tokens. Threads split the tiles.
#include "bitswitch/deploy/lm_kernels.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "bitswitch/deploy/packing.h"
#include "bitswitch/deploy/x86_simd.h"
#include "bitswitch/quant/double_rounding.h"
#include "bitswitch/util/error.h"

namespace bitswitch::deploy {

namespace {

constexpr int kTileRows = 8;
constexpr int kUnit = 32;

void check_shape(const char* fn, int N, int K, int bits, int group) {
  BS_CHECK(N > 0 && K > 0, fn, ": N and K must be positive, got N=", N, " K=", K);
  BS_CHECK(K <= kLmMaxK, fn, ": K=", K, " exceeds the int32-exact limit ", kLmMaxK);
  BS_CHECK(bits >= quant::kMinBits && bits <= quant::kMaxBits, fn, ": bits must be in [2, 8], got ", bits);
  BS_CHECK(group >= 0 && (group == 0 || K % group == 0), fn, ": group ", group, " must divide K=", K);
}

// y[n] for one token over rows [n0, n1): the definition of lm_kernels.h.
void rows_ref(int n0, int n1, int K, int G, const int8_t* q, float a, const int8_t* codes, const float* scales,
              float* y) {
  const int groups = K / G;
  for (int n = n0; n < n1; ++n) {
    const int8_t* c = codes + size_t(n) * K;
    float sum = 0.0f;
    for (int g = 0; g < groups; ++g) {
      int32_t acc = 0;
      for (int k = g * G; k < (g + 1) * G; ++k) acc += int32_t(q[k]) * int32_t(c[k]);
      sum += float(acc) * scales[size_t(n) * groups + g];
    }
    y[n] = a * sum;
  }
}

// The bit planes of an l-bit offset code (l < 8), low bits first.
struct Plane {
  int width, offset, first_vector;
};
struct Planes {
  int count = 0;
  Plane p[3] = {};
};
constexpr Planes planes_of(int bits) {
  Planes r;
  int offset = 0, vec = 0;
  for (int w : {4, 2, 1}) {
    if (bits - offset >= w) {
      r.p[r.count++] = Plane{w, offset, vec};
      offset += w;
      vec += w;
    }
  }
  return r;
}

// 64-byte aligned bytes (the packed weights).
struct AlignedBytes {
  uint8_t* ptr = nullptr;
  size_t size = 0;
  AlignedBytes() = default;
  explicit AlignedBytes(size_t n) : size(n) {
    ptr = static_cast<uint8_t*>(std::aligned_alloc(64, (n + 63) / 64 * 64));
    BS_CHECK(ptr != nullptr, "LmLinear: cannot allocate ", n, " bytes");
    std::memset(ptr, 0, n);
  }
  AlignedBytes(AlignedBytes&& o) noexcept : ptr(o.ptr), size(o.size) { o.ptr = nullptr, o.size = 0; }
  AlignedBytes& operator=(AlignedBytes&& o) noexcept {
    std::swap(ptr, o.ptr);
    std::swap(size, o.size);
    return *this;
  }
  ~AlignedBytes() { std::free(ptr); }
};

// One layer in the layout of the file comment.
struct Layout {
  int N = 0, K = 0, bits = 8, group = 0;
  int groups = 0, Gp = 0, tiles = 0, units = 0;  // units per row = groups * Gp / 32
  QgemmIsa isa = QgemmIsa::kScalar;
  AlignedBytes packed;        // [tile][unit][32 * bits]
  std::vector<float> scales;  // [tile][g][8]

  size_t tile_bytes() const { return size_t(units) * kUnit * bits; }
  int Kp() const { return units * kUnit; }
};

// One token, scalar: quant::per_token_scale / per_token_code, element by element.
void quantize_token_scalar(int K, const float* x, int8_t* q, float* a) {
  float mx = 0.0f;
  for (int k = 0; k < K; ++k) mx = std::max(mx, std::fabs(x[k]));
  const float s = quant::per_token_scale(mx, 8);
  const float inv = 1.0f / s;
  for (int k = 0; k < K; ++k) q[k] = int8_t(quant::per_token_code(x[k], inv, 8));
  *a = s;
}

#if BS_DEPLOY_X86
// One token, AVX2, the same operations lane by lane: |x| by clearing the sign bit, the maximum
// (exact in any order), x * inv, the clamp to [-127, 127] and round_half_even_small's
// (v + 1.5 * 2^23) - 1.5 * 2^23 in float; the tail goes through the scalar functions.
__attribute__((target("avx2"))) void quantize_token_avx2(int K, const float* x, int8_t* q, float* a) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmx = _mm256_setzero_ps();
  int k = 0;
  for (; k + 8 <= K; k += 8) vmx = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + k), abs_mask), vmx);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmx);
  float mx = 0.0f;
  for (float v : lanes) mx = std::max(mx, v);
  for (; k < K; ++k) mx = std::max(mx, std::fabs(x[k]));
  const float s = quant::per_token_scale(mx, 8);
  const float inv = 1.0f / s;
  const __m256 vinv = _mm256_set1_ps(inv), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const auto code = [=](const float* p) __attribute__((target("avx2"))) {
    const __m256 v = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(p), vinv)));
    return _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(v, magic), magic));
  };
  k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m256i w0 = _mm256_packs_epi32(code(x + k), code(x + k + 8));        // int16, lanes interleaved
    const __m256i w1 = _mm256_packs_epi32(code(x + k + 16), code(x + k + 24));
    const __m256i b = _mm256_packs_epi16(w0, w1);                               // int8, [0 2 4 6 1 3 5 7] x 4
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k),
                        _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
  for (; k < K; ++k) q[k] = int8_t(quant::per_token_code(x[k], inv, 8));
  *a = s;
}
#endif

}  // namespace

void lm_quantize_tokens(int M, int K, const float* x, int8_t* q, float* a) {
  auto* token = quantize_token_scalar;
#if BS_DEPLOY_X86
  if (cpu::features().avx2) token = quantize_token_avx2;
#endif
  for (int m = 0; m < M; ++m) token(K, x + size_t(m) * K, q + size_t(m) * K, a + m);
}

void lm_linear_ref(int M, int N, int K, int group, const int8_t* q, const float* a, const int8_t* codes,
                   const float* scales, float* y) {
  check_shape("lm_linear_ref", N, K, 8, group);
  const int G = group == 0 ? K : group;
  for (int m = 0; m < M; ++m) rows_ref(0, N, K, G, q + size_t(m) * K, a[m], codes, scales, y + size_t(m) * N);
}


namespace {

// Writes the 8 rows `codes` (rows x K, rows <= 8; missing rows are zero codes) of one tile.
void pack_tile(const Layout& p, const int8_t* codes, int rows, uint8_t* tile) {
  const int bits = p.bits, G = p.group, upg = p.Gp / kUnit;
  const Planes pl = planes_of(bits);
  const int off = bits == 8 ? 0 : 1 << (bits - 1);
  for (int r = 0; r < kTileRows; ++r) {
    for (int g = 0; g < p.groups; ++g) {
      for (int j = 0; j < p.Gp; ++j) {
        const int k = g * G + j;
        const int c = (r < rows && j < G) ? codes[size_t(r) * p.K + k] : 0;
        const int unit = g * upg + j / kUnit, b = j % kUnit;
        uint8_t* v = tile + size_t(unit) * kUnit * bits;
        if (bits == 8) {
          v[r * kUnit + b] = uint8_t(int8_t(c));
          continue;
        }
        const unsigned u = unsigned(c + off);
        for (int i = 0; i < pl.count; ++i) {
          const Plane& P = pl.p[i];
          const int per = 8 / P.width;
          const unsigned field = (u >> P.offset) & ((1u << P.width) - 1);
          v[(P.first_vector + r / per) * kUnit + b] |= uint8_t(field << (P.width * (r % per)));
        }
      }
    }
  }
}

// The signed code of row r at position j (0 .. Gp * groups) of a tile: the scalar inverse.
int unpack_code(int bits, const uint8_t* tile, int r, int j) {
  const int unit = j / kUnit, b = j % kUnit;
  const uint8_t* v = tile + size_t(unit) * kUnit * bits;
  if (bits == 8) return int8_t(v[r * kUnit + b]);
  const Planes pl = planes_of(bits);
  unsigned u = 0;
  for (int i = 0; i < pl.count; ++i) {
    const Plane& P = pl.p[i];
    const int per = 8 / P.width;
    u |= ((unsigned(v[(P.first_vector + r / per) * kUnit + b]) >> (P.width * (r % per))) & ((1u << P.width) - 1))
         << P.offset;
  }
  return int(u) - (1 << (bits - 1));
}

// Per-token data a kernel reads: codes padded to Gp per group and per-group code sums.
struct Tokens {
  int M = 0, Kp = 0, groups = 0;
  const int8_t* q = nullptr;  // M x Kp
  const float* a = nullptr;
  std::vector<int8_t> padded;
  std::vector<int32_t> qsum;  // M x groups
};

Tokens prepare_tokens(const Layout& p, int M, const int8_t* q, const float* a) {
  Tokens t;
  t.M = M, t.Kp = p.Kp(), t.groups = p.groups, t.a = a;
  if (p.Gp == p.group) {
    t.q = q;
  } else {
    t.padded.assign(size_t(M) * t.Kp, 0);
    for (int m = 0; m < M; ++m)
      for (int g = 0; g < p.groups; ++g)
        std::memcpy(t.padded.data() + size_t(m) * t.Kp + size_t(g) * p.Gp, q + size_t(m) * p.K + size_t(g) * p.group,
                    size_t(p.group));
    t.q = t.padded.data();
  }
  t.qsum.assign(size_t(M) * p.groups, 0);
  for (int m = 0; m < M; ++m)
    for (int g = 0; g < p.groups; ++g) {
      int32_t s = 0;
      const int8_t* qg = q + size_t(m) * p.K + size_t(g) * p.group;
      for (int k = 0; k < p.group; ++k) s += qg[k];
      t.qsum[size_t(m) * p.groups + g] = s;
    }
  return t;
}

// Scalar path over the packed layout: unpack one tile's rows, then the reference loops.
void tile_scalar(const Layout& p, int tile, const Tokens& t, float* y, std::vector<int8_t>& buf) {
  const int Kp = p.Kp();
  const uint8_t* w = p.packed.ptr + size_t(tile) * p.tile_bytes();
  buf.resize(size_t(kTileRows) * Kp);
  for (int r = 0; r < kTileRows; ++r)
    for (int j = 0; j < Kp; ++j) buf[size_t(r) * Kp + j] = int8_t(unpack_code(p.bits, w, r, j));
  const float* sc = p.scales.data() + size_t(tile) * p.groups * kTileRows;
  const int rows = std::min(kTileRows, p.N - tile * kTileRows);
  for (int m = 0; m < t.M; ++m) {
    const int8_t* q = t.q + size_t(m) * Kp;
    for (int r = 0; r < rows; ++r) {
      float sum = 0.0f;
      for (int g = 0; g < p.groups; ++g) {
        int32_t acc = 0;
        for (int k = g * p.Gp; k < (g + 1) * p.Gp; ++k) acc += int32_t(q[k]) * int32_t(buf[size_t(r) * Kp + k]);
        sum += float(acc) * sc[g * kTileRows + r];
      }
      y[size_t(m) * p.N + tile * kTileRows + r] = t.a[m] * sum;
    }
  }
}

#if BS_DEPLOY_X86
#define BS_AVX2 __attribute__((target("avx2")))
#define BS_AVX2_INLINE __attribute__((target("avx2"), always_inline)) inline

// The 32 codes of row R of one (tile, unit): signed for 8 bits, else the offset code u.
template <int BITS, int R>
BS_AVX2_INLINE __m256i unpack_row(const uint8_t* v) {
  if constexpr (BITS == 8) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + R * kUnit));
  } else {
    constexpr Planes pl = planes_of(BITS);
    __m256i u = _mm256_setzero_si256();
    for (int i = 0; i < pl.count; ++i) {  // constant trip count: unrolled
      const Plane P = pl.p[i];
      const int per = 8 / P.width;
      const __m256i raw =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + (P.first_vector + R / per) * kUnit));
      const int shift = P.width * (R % per) - P.offset;  // bits [shift+offset, +width) -> [offset, +width)
      const __m256i moved = shift > 0 ? _mm256_srli_epi16(raw, shift) : shift < 0 ? _mm256_slli_epi16(raw, -shift) : raw;
      const __m256i part = _mm256_and_si256(moved, _mm256_set1_epi8(char(((1 << P.width) - 1) << P.offset)));
      u = i == 0 ? part : _mm256_or_si256(u, part);
    }
    return u;
  }
}

// int16 products of 32 codes, pairs summed (vpmaddubsw; exact, see the file comment).
template <int BITS>
BS_AVX2_INLINE __m256i dot16(__m256i w, __m256i q) {
  if constexpr (BITS == 8) return _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(q, w));
  else return _mm256_maddubs_epi16(w, q);
}
// Units whose dot16 results may be summed in int16 before widening: a lane sums to at most
// run * 2 * umax * 127 <= 32767 (umax = 2^l - 1 for l < 8; 8 bits: |c| <= 128 allows one).
template <int BITS>
constexpr int kRun = BITS == 8 ? 1 : 32767 / (2 * ((1 << BITS) - 1) * 127);

BS_AVX2_INLINE __m256i widen(__m256i acc32, __m256i acc16) {
  return _mm256_add_epi32(acc32, _mm256_madd_epi16(acc16, _mm256_set1_epi16(1)));
}

// Lane i of the result = the sum of the 8 lanes of a[i].
BS_AVX2_INLINE __m256i reduce8(const __m256i* a) {
  const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
  const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[4], a[5]), _mm256_hadd_epi32(a[6], a[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20), _mm256_permute2x128_si256(h0, h1, 0x31));
}
template <int BITS, int R0, size_t... R>
BS_AVX2_INLINE void step_m1(__m256i* acc16, const uint8_t* v, __m256i q, std::index_sequence<R...>) {
  ((acc16[R] = _mm256_add_epi16(acc16[R], dot16<BITS>(unpack_row<BITS, R0 + int(R)>(v), q))), ...);
}

// Bytes ahead of the weight stream that the decode kernels prefetch (prefetches past the end are
// harmless). The layer is one sequential stream (tiles in order, units in order), but this CPU's
// hardware prefetcher alone leaves the single-thread stream below the measured read bandwidth.
// Chosen by a one-off interleaved A/B on 128 MB layers (2026-12-02, AVX2 EPYC VM; a scratch
// harness, not a repo benchmark): against the earlier setting (4 units ahead below 8 bits, none at
// 8), 2 KiB read 9-18% faster at 2, 4 and 8 bits; 1 and 3 KiB gained less, 4-8 KiB no more.
constexpr int kPrefetchBytes = 2048;

// One tile, one token: out[r] = y of row r (8 rows) in one pass over the tile's bytes in order
// (every (tile, unit) is read once, so the hardware and software prefetchers see one sequential
// stream). The eight int16 run accumulators stay in registers; the eight int32 accumulators are
// touched once per run of kRun units, so the compiler may keep them on the stack at little cost.
template <int BITS>
BS_AVX2 void tile_m1(const Layout& p, const uint8_t* w, const float* sc, const int8_t* q, const int32_t* qsum,
                     float a, float* out) {
  const int upg = p.Gp / kUnit;
  constexpr int32_t off = 1 << (BITS - 1);
  __m256 sum = _mm256_setzero_ps();
  for (int g = 0; g < p.groups; ++g) {
    __m256i acc[8];
    for (auto& x : acc) x = _mm256_setzero_si256();
    for (int u0 = 0; u0 < upg; u0 += kRun<BITS>) {
      __m256i acc16[8];
      for (auto& x : acc16) x = _mm256_setzero_si256();
      const int u1 = std::min(upg, u0 + kRun<BITS>);
      for (int u = u0; u < u1; ++u) {
        for (int line = 0; line < kUnit * BITS; line += 64)
          _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchBytes + line), _MM_HINT_T0);
        const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
        step_m1<BITS, 0>(acc16, w, qv, std::make_index_sequence<8>{});
        q += kUnit;
        w += kUnit * BITS;
      }
      for (int r = 0; r < 8; ++r) acc[r] = widen(acc[r], acc16[r]);
    }
    const __m256i s = _mm256_sub_epi32(reduce8(acc), _mm256_set1_epi32(off * qsum[g]));
    sum = _mm256_add_ps(sum, _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_loadu_ps(sc + g * kTileRows)));
  }
  _mm256_storeu_ps(out, _mm256_mul_ps(sum, _mm256_set1_ps(a)));
}

template <size_t... R>
BS_AVX2_INLINE void step8_m1(__m256i* acc, const uint8_t* v, __m256i q, std::index_sequence<R...>) {
  ((acc[R] = widen(acc[R], dot16<8>(unpack_row<8, int(R)>(v), q))), ...);
}

// 8 bits: no int16 runs, so the eight int32 accumulators fit the registers and one pass reads
// each (tile, unit) of 256 bytes in order.
template <>
BS_AVX2 void tile_m1<8>(const Layout& p, const uint8_t* w, const float* sc, const int8_t* q, const int32_t* qsum,
                        float a, float* out) {
  (void)qsum;
  const int upg = p.Gp / kUnit;
  __m256 sum = _mm256_setzero_ps();
  for (int g = 0; g < p.groups; ++g) {
    __m256i acc[8];
    for (auto& x : acc) x = _mm256_setzero_si256();
    for (int u = 0; u < upg; ++u) {
      for (int line = 0; line < kUnit * 8; line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchBytes + line), _MM_HINT_T0);
      step8_m1(acc, w, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)), std::make_index_sequence<8>{});
      q += kUnit;
      w += kUnit * 8;
    }
    sum = _mm256_add_ps(sum, _mm256_mul_ps(_mm256_cvtepi32_ps(reduce8(acc)), _mm256_loadu_ps(sc + g * kTileRows)));
  }
  _mm256_storeu_ps(out, _mm256_mul_ps(sum, _mm256_set1_ps(a)));
}

// Rows 2I, 2I + 1 of one tile for 4 tokens: out[t * 2 + r'] (lane order token-major).
template <int BITS, int I>
BS_AVX2_INLINE void pair_m4(const Layout& p, const uint8_t* w, const float* sc, const int8_t* const* q,
                            const int32_t* const* qsum, const float* a, float* out) {
  const int upg = p.Gp / kUnit;
  constexpr int32_t off = BITS == 8 ? 0 : 1 << (BITS - 1);
  __m256 sum = _mm256_setzero_ps();
  size_t k = 0;
  for (int g = 0; g < p.groups; ++g) {
    __m256i acc[8];
    for (auto& x : acc) x = _mm256_setzero_si256();
    for (int u0 = 0; u0 < upg; u0 += kRun<BITS>) {
      __m256i acc16[8];
      for (auto& x : acc16) x = _mm256_setzero_si256();
      const int u1 = std::min(upg, u0 + kRun<BITS>);
      for (int u = u0; u < u1; ++u) {
        const __m256i w0 = unpack_row<BITS, 2 * I>(w), w1 = unpack_row<BITS, 2 * I + 1>(w);
        for (int t = 0; t < 4; ++t) {
          const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q[t] + k));
          acc16[2 * t] = _mm256_add_epi16(acc16[2 * t], dot16<BITS>(w0, qv));
          acc16[2 * t + 1] = _mm256_add_epi16(acc16[2 * t + 1], dot16<BITS>(w1, qv));
        }
        k += kUnit;
        w += kUnit * BITS;
      }
      for (int i = 0; i < 8; ++i) acc[i] = widen(acc[i], acc16[i]);
    }
    __m256i s = reduce8(acc);
    if (off != 0)
      s = _mm256_sub_epi32(s, _mm256_setr_epi32(off * qsum[0][g], off * qsum[0][g], off * qsum[1][g], off * qsum[1][g],
                                                off * qsum[2][g], off * qsum[2][g], off * qsum[3][g], off * qsum[3][g]));
    const __m256 sv = _mm256_castpd_ps(_mm256_broadcast_sd(reinterpret_cast<const double*>(sc + g * kTileRows + 2 * I)));
    sum = _mm256_add_ps(sum, _mm256_mul_ps(_mm256_cvtepi32_ps(s), sv));
  }
  const __m256 av = _mm256_setr_ps(a[0], a[0], a[1], a[1], a[2], a[2], a[3], a[3]);
  _mm256_storeu_ps(out, _mm256_mul_ps(sum, av));
}

template <int BITS, size_t... I>
BS_AVX2 void tile_m4(const Layout& p, const uint8_t* w, const float* sc, const int8_t* const* q,
                     const int32_t* const* qsum, const float* a, float (*out)[8], std::index_sequence<I...>) {
  (pair_m4<BITS, int(I)>(p, w, sc, q, qsum, a, out[I]), ...);
}

template <int BITS>
BS_AVX2_INLINE void tile_avx2(const Layout& p, int tile, const Tokens& t, float* y) {
  const uint8_t* w = p.packed.ptr + size_t(tile) * p.tile_bytes();
  const float* sc = p.scales.data() + size_t(tile) * p.groups * kTileRows;
  const int n0 = tile * kTileRows, rows = std::min(kTileRows, p.N - n0);
  int m = 0;
  for (; m + 4 <= t.M; m += 4) {
    const int8_t* q[4];
    const int32_t* qs[4];
    for (int i = 0; i < 4; ++i) q[i] = t.q + size_t(m + i) * t.Kp, qs[i] = t.qsum.data() + size_t(m + i) * t.groups;
    float out[4][8];  // [pair][token * 2 + row]
    tile_m4<BITS>(p, w, sc, q, qs, t.a + m, out, std::make_index_sequence<4>{});
    for (int i = 0; i < 4; ++i)
      for (int tk = 0; tk < 4; ++tk)
        for (int r = 0; r < 2; ++r)
          if (2 * i + r < rows) y[size_t(m + tk) * p.N + n0 + 2 * i + r] = out[i][tk * 2 + r];
  }
  for (; m < t.M; ++m) {
    float out[8];
    tile_m1<BITS>(p, w, sc, t.q + size_t(m) * t.Kp, t.qsum.data() + size_t(m) * t.groups, t.a[m], out);
    std::memcpy(y + size_t(m) * p.N + n0, out, sizeof(float) * size_t(rows));
  }
}

// Tiles [t0, t1): the loop inside the target function, so no call per tile.
template <int BITS>
BS_AVX2 void tiles_avx2(const Layout& p, int t0, int t1, const Tokens& t, float* y) {
  for (int tile = t0; tile < t1; ++tile) tile_avx2<BITS>(p, tile, t, y);
}

using TilesFn = void (*)(const Layout&, int, int, const Tokens&, float*);
TilesFn avx2_kernel(int bits) {
  switch (bits) {
    case 2: return tiles_avx2<2>;
    case 3: return tiles_avx2<3>;
    case 4: return tiles_avx2<4>;
    case 5: return tiles_avx2<5>;
    case 6: return tiles_avx2<6>;
    case 7: return tiles_avx2<7>;
    case 8: return tiles_avx2<8>;
    default: fail("LmLinear: no kernel for ", bits, " bits");
  }
}
#endif  // BS_DEPLOY_X86

bool cpu_avx2() { return cpu::features().avx2; }

// The path a layer built with `isa` runs. AVX-512 VNNI is not written for these layers yet: kAuto
// stops at AVX2 and asking for it is an error.
QgemmIsa resolve_isa(QgemmIsa isa) {
  if (isa == QgemmIsa::kAuto) {
    const QgemmIsa best = qgemm_auto_isa(/*packed=*/false);  // capped by BITSWITCH_QGEMM_ISA
    return (best != QgemmIsa::kScalar && BS_DEPLOY_X86 && cpu_avx2()) ? QgemmIsa::kAvx2 : QgemmIsa::kScalar;
  }
  BS_CHECK(isa != QgemmIsa::kAvx512Vnni, "LmLinear: no AVX-512 VNNI path for the LM layers (use avx2 or scalar)");
  BS_CHECK(isa != QgemmIsa::kAvx2 || (BS_DEPLOY_X86 && cpu_avx2()),
           "LmLinear: ISA path 'avx2' is not supported by this CPU");
  return isa;
}

}  // namespace

struct LmLinear::Impl : Layout {};

LmLinear::LmLinear() : impl_(std::make_unique<Impl>()) {}
LmLinear::~LmLinear() = default;
LmLinear::LmLinear(LmLinear&&) noexcept = default;
LmLinear& LmLinear::operator=(LmLinear&&) noexcept = default;

LmLinear LmLinear::from_codes(int N, int K, int bits, int group, const int8_t* codes, const float* scales,
                              QgemmIsa isa) {
  check_shape("LmLinear", N, K, bits, group);
  const int lo = quant::signed_qmin(bits), hi = quant::signed_qmax(bits);
  for (size_t i = 0; i < size_t(N) * K; ++i)
    BS_CHECK(codes[i] >= lo && codes[i] <= hi, "LmLinear: code ", int(codes[i]), " of row ", i / size_t(K),
             " is outside the ", bits, "-bit range [", lo, ", ", hi, "]");
  LmLinear l;
  auto& p = *l.impl_;
  p.N = N, p.K = K, p.bits = bits, p.group = group == 0 ? K : group;
  p.isa = resolve_isa(isa);
  p.groups = K / p.group;
  p.Gp = (p.group + kUnit - 1) / kUnit * kUnit;
  p.units = p.groups * p.Gp / kUnit;
  p.tiles = (N + kTileRows - 1) / kTileRows;
  p.packed = AlignedBytes(size_t(p.tiles) * p.tile_bytes());
  p.scales.assign(size_t(p.tiles) * p.groups * kTileRows, 0.0f);
  for (int t = 0; t < p.tiles; ++t) {
    const int rows = std::min(kTileRows, N - t * kTileRows);
    pack_tile(p, codes + size_t(t) * kTileRows * K, rows, p.packed.ptr + size_t(t) * p.tile_bytes());
    for (int r = 0; r < rows; ++r)
      for (int g = 0; g < p.groups; ++g)
        p.scales[(size_t(t) * p.groups + g) * kTileRows + r] = scales[size_t(t * kTileRows + r) * p.groups + g];
  }
  return l;
}

LmLinear LmLinear::from_packed(int N, int K, int bits, int group, const uint8_t* packed_rows, size_t packed_size,
                               const float* scales, QgemmIsa isa) {
  check_shape("LmLinear", N, K, bits, group);
  const size_t row = packed_bytes(size_t(K), bits);
  BS_CHECK(packed_size == row * size_t(N), "LmLinear: packed weights hold ", packed_size, " bytes, ", N, " rows of ", K,
           " ", bits, "-bit codes need ", row * size_t(N));
  std::vector<int8_t> codes(size_t(N) * K);
  unpack_rows_into(packed_rows, 0, size_t(N), size_t(K), bits, codes.data());
  return from_codes(N, K, bits, group, codes.data(), scales, isa);
}

void LmLinear::forward(int M, const int8_t* q, const float* a, float* y, int threads) const {
  const auto& p = *impl_;
  BS_CHECK(p.N > 0, "LmLinear::forward on an empty layer");
  BS_CHECK(M >= 0, "LmLinear::forward: M must be non-negative, got ", M);
  if (M == 0) return;
  if (threads <= 0) threads = omp_get_max_threads();
  const Tokens t = prepare_tokens(p, M, q, a);
  // Below ~64k weight bytes a parallel region costs more than it saves.
  threads = std::max(1, std::min({threads, p.tiles, int(size_t(p.tiles) * p.tile_bytes() * size_t(M) / 65536) + 1}));
  auto run = [&](int t0, int t1) {
#if BS_DEPLOY_X86
    if (p.isa == QgemmIsa::kAvx2) {
      avx2_kernel(p.bits)(p, t0, t1, t, y);
      return;
    }
#endif
    std::vector<int8_t> buf;
    for (int tile = t0; tile < t1; ++tile) tile_scalar(p, tile, t, y, buf);
  };
  if (threads == 1) {
    run(0, p.tiles);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int i = 0; i < threads; ++i) run(int(int64_t(p.tiles) * i / threads), int(int64_t(p.tiles) * (i + 1) / threads));
}

int LmLinear::rows() const { return impl_->N; }
int LmLinear::cols() const { return impl_->K; }
int LmLinear::bits() const { return impl_->bits; }
int LmLinear::group() const { return impl_->group; }
QgemmIsa LmLinear::isa() const { return impl_->isa; }
size_t LmLinear::weight_bytes() const { return impl_->packed.size + impl_->scales.size() * sizeof(float); }

}  // namespace bitswitch::deploy
