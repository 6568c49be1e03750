// VNNI-panel integer GEMM for small-N convolutions; see qgemm_panels.h.
#include "bitswitch/deploy/qgemm_panels.h"

#include <cstring>

#include "bitswitch/deploy/packing.h"
#include "bitswitch/util/error.h"

#include "bitswitch/deploy/x86_simd.h"

namespace bitswitch::deploy {

namespace {

inline int blocks16(int N) { return (N + 15) / 16; }

#if BS_DEPLOY_X86
using simd::dpbusd;
using simd::kVbmiTables;
using simd::vbmi_unpack;

// Loads panel vector q of panel j: 64 int8 codes, or 64 BITS-bit codes (8*BITS bytes) unpacked.
template <int BITS>
struct PanelLoader;

template <>
struct PanelLoader<8> {
  BS_TARGET_VNNI PanelLoader() {}
  BS_TARGET_VNNI __m512i operator()(const int8_t* panel, int q) const {
    return _mm512_loadu_si512(panel + size_t(q) * 64);
  }
};

template <int BITS>
struct PanelLoader {
  __m512i idx, ctrl, low, sign;
  __mmask64 mask;
  BS_TARGET_VNNI_VBMI PanelLoader()
      : idx(_mm512_load_si512(kVbmiTables<BITS>.idx)),
        ctrl(_mm512_load_si512(kVbmiTables<BITS>.ctrl)),
        low(_mm512_set1_epi8(char((1 << BITS) - 1))),
        sign(_mm512_set1_epi8(char(1 << (BITS - 1)))),
        mask((__mmask64(1) << (8 * BITS)) - 1) {}
  BS_TARGET_VNNI_VBMI __m512i operator()(const int8_t* panel, int q) const {
    return vbmi_unpack(_mm512_maskz_loadu_epi8(mask, panel + size_t(q) * 8 * BITS), idx, ctrl, low, sign);
  }
};

// MR rows x NB panels (NB*16 channels starting at panel `nb0`), full K. Row r of A is `segs`
// segments of seg_q groups of 4 bytes, segment i at rows[r] + i * seg_stride. `valid` <= MR rows.
// Defined twice by one macro: int8 panels need only VNNI, packed panels also VBMI.
#define BS_PANEL_BLOCK(NAME, TARGET, LOADER)                                                              \
  template <int MR, int NB, int BITS>                                                                     \
  TARGET void NAME(const uint8_t* const* rows, int valid, int segs, int seg_q, size_t seg_stride,          \
                   const int8_t* panels, int panel_stride, int nb0, int N, int32_t* C) {                  \
    const LOADER load;                                                                                     \
    __m512i acc[MR][NB];                                                                                   \
    _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)                                                 \
      for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_setzero_si512();                                     \
    const int8_t* p = panels + size_t(nb0) * panel_stride;                                                 \
    const uint8_t* a[MR];                                                                                  \
    _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) a[r] = rows[r < valid ? r : 0];                 \
    int q = 0;                                                                                             \
    for (int sg = 0; sg < segs; ++sg) {                                                                    \
      const size_t off = size_t(sg) * seg_stride;                                                          \
      for (int q2 = 0; q2 < seg_q; ++q2, ++q) {                                                            \
        __m512i b[NB];                                                                                     \
        for (int j = 0; j < NB; ++j) b[j] = load(p + size_t(j) * panel_stride, q);                         \
        for (int r = 0; r < MR; ++r) {                                                                     \
          int32_t v;                                                                                       \
          std::memcpy(&v, a[r] + off + 4 * q2, 4);                                                         \
          const __m512i x = _mm512_set1_epi32(v);                                                          \
          for (int j = 0; j < NB; ++j) acc[r][j] = dpbusd(acc[r][j], x, b[j]);                             \
        }                                                                                                  \
      }                                                                                                    \
    }                                                                                                      \
    _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)                                                 \
      if (r < valid)                                                                                       \
      for (int j = 0; j < NB; ++j) {                                                                       \
        const int n = (nb0 + j) * 16;                                                                      \
        const int nv = N - n < 16 ? N - n : 16;                                                            \
        int32_t* dst = C + size_t(r) * N + n;                                                              \
        if (nv == 16) _mm512_storeu_si512(dst, acc[r][j]);                                                 \
        else _mm512_mask_storeu_epi32(dst, __mmask16((1u << nv) - 1), acc[r][j]);                          \
      }                                                                                                    \
  }
BS_PANEL_BLOCK(block_s8, BS_TARGET_VNNI, PanelLoader<8>)
BS_PANEL_BLOCK(block_packed, BS_TARGET_VNNI_VBMI, PanelLoader<BITS>)
#undef BS_PANEL_BLOCK

template <int MR, int NB, int BITS>
void block(const uint8_t* const* rows, int valid, int segs, int seg_q, size_t seg_stride, const int8_t* panels,
           int panel_stride, int nb0, int N, int32_t* C) {
  if constexpr (BITS == 8) block_s8<MR, NB, 8>(rows, valid, segs, seg_q, seg_stride, panels, panel_stride, nb0, N, C);
  else block_packed<MR, NB, BITS>(rows, valid, segs, seg_q, seg_stride, panels, panel_stride, nb0, N, C);
}

template <int MR, int NB, int BITS>
void run_rows(int M, int N, const PanelRows& A, const int8_t* panels, int nb0, int32_t* C) {
  const int panel_stride = A.segs * A.seg_q * 8 * BITS;  // bytes of one panel (16 channels, all K)
  int m = 0;
  for (; m + MR <= M; m += MR)
    block<MR, NB, BITS>(A.rows + m, MR, A.segs, A.seg_q, A.seg_stride, panels, panel_stride, nb0, N, C + size_t(m) * N);
  if (m < M)
    block<MR, NB, BITS>(A.rows + m, M - m, A.segs, A.seg_q, A.seg_stride, panels, panel_stride, nb0, N,
                        C + size_t(m) * N);
}

// Panels [nb0, nb1) of C, all M rows.
template <int BITS>
void run_all(int M, int N, const PanelRows& A, const int8_t* panels, int32_t* C, int nb0, int nb1) {
  int nb = nb0;
  // Up to 4 panels (64 channels) per pass: 6 x 4 accumulators; narrower layers use more rows.
  // Packed panels keep 4 unpacking constants in registers too: fewer accumulators, no spills.
  constexpr bool packed = BITS < 8;
  for (; nb + 4 <= nb1; nb += 4) run_rows<packed ? 5 : 6, 4, BITS>(M, N, A, panels, nb, C);
  if (nb1 - nb == 3) run_rows<packed ? 6 : 8, 3, BITS>(M, N, A, panels, nb, C);
  else if (nb1 - nb == 2) run_rows<packed ? 10 : 12, 2, BITS>(M, N, A, panels, nb, C);
  else if (nb1 - nb == 1) run_rows<packed ? 12 : 16, 1, BITS>(M, N, A, panels, nb, C);
}
#endif

}  // namespace

bool qgemm_panels_supported() { return simd::cpu_avx512_vnni(); }

bool qgemm_panels_usable(int N, int K) { return qgemm_panels_supported() && N > 0 && K > 0 && K % 4 == 0; }

size_t qgemm_panels_bytes(int N, int K) { return size_t(blocks16(N)) * size_t(K) * 16; }

void qgemm_panels_from_rows(const int8_t* B, int N, int K, int8_t* out) {
  BS_CHECK(K % 4 == 0, "qgemm panels: K = ", K, " is not a multiple of 4");
  std::memset(out, 0, qgemm_panels_bytes(N, K));
  const size_t panel = size_t(K) * 16;
  for (int n = 0; n < N; ++n) {
    int8_t* dst = out + size_t(n / 16) * panel + size_t(n % 16) * 4;
    const int8_t* src = B + size_t(n) * K;
    for (int q = 0; q < K / 4; ++q) std::memcpy(dst + size_t(q) * 64, src + 4 * q, 4);
  }
}

void qgemm_panels_from_packed(const uint8_t* B_packed, int bits, int N, int K, int8_t* out) {
  thread_local std::vector<int8_t> rows;
  rows.resize(size_t(N) * K);
  unpack_rows_into(B_packed, 0, size_t(N), size_t(K), bits, rows.data());
  qgemm_panels_from_rows(rows.data(), N, K, out);
}

void qgemm_u8_panels_rows_s32(int M, int N, const PanelRows& A, const int8_t* panels, int32_t* C, int bits,
                              int nb0, int nb1) {
  const int K = A.segs * A.seg_q * 4;
  if (nb1 < 0) nb1 = blocks16(N);
  BS_CHECK(0 <= nb0 && nb0 <= nb1 && nb1 <= blocks16(N), "qgemm panels: panel range [", nb0, ", ", nb1,
           ") outside the ", blocks16(N), " panels of N = ", N);
  BS_CHECK(qgemm_panels_usable(N, K) && A.segs >= 1 && A.seg_q >= 1, "qgemm panels: unsupported CPU or shape N = ", N,
           ", K = ", K);
  BS_CHECK(bits == 8 || (bits >= 2 && bits < 8 && qgemm_packed_panels_supported()), "qgemm panels: ", bits,
           "-bit panels need AVX-512 VBMI");
  if (M <= 0) return;
#if BS_DEPLOY_X86
  switch (bits) {
    case 8: return run_all<8>(M, N, A, panels, C, nb0, nb1);
    case 7: return run_all<7>(M, N, A, panels, C, nb0, nb1);
    case 6: return run_all<6>(M, N, A, panels, C, nb0, nb1);
    case 5: return run_all<5>(M, N, A, panels, C, nb0, nb1);
    case 4: return run_all<4>(M, N, A, panels, C, nb0, nb1);
    case 3: return run_all<3>(M, N, A, panels, C, nb0, nb1);
    case 2: return run_all<2>(M, N, A, panels, C, nb0, nb1);
  }
#endif
}

bool qgemm_packed_panels_supported() { return simd::cpu_avx512_vbmi(); }

size_t qgemm_packed_panels_bytes(int N, int K, int bits) { return size_t(blocks16(N)) * size_t(K / 4) * 8 * bits; }

#if BS_DEPLOY_X86
namespace {
template <int BITS>
BS_TARGET_VNNI_VBMI void unpack_panels_vbmi(const uint8_t* packed, size_t vectors, int8_t* out) {
  const PanelLoader<BITS> load;
  for (size_t v = 0; v < vectors; ++v)
    _mm512_storeu_si512(out + v * 64, load(reinterpret_cast<const int8_t*>(packed), int(v)));
}
}  // namespace
#endif

void qgemm_unpack_panels(const uint8_t* packed, int N, int K, int bits, int8_t* out) {
  const size_t vectors = size_t(blocks16(N)) * size_t(K / 4);
#if BS_DEPLOY_X86
  if (qgemm_packed_panels_supported()) {
    switch (bits) {
      case 7: return unpack_panels_vbmi<7>(packed, vectors, out);
      case 6: return unpack_panels_vbmi<6>(packed, vectors, out);
      case 5: return unpack_panels_vbmi<5>(packed, vectors, out);
      case 4: return unpack_panels_vbmi<4>(packed, vectors, out);
      case 3: return unpack_panels_vbmi<3>(packed, vectors, out);
      case 2: return unpack_panels_vbmi<2>(packed, vectors, out);
    }
  }
#endif
  for (size_t v = 0; v < vectors; ++v) unpack_into(packed + v * 8 * bits, 64, bits, out + v * 64);
}

void qgemm_pack_panels(const int8_t* panels, int N, int K, int bits, uint8_t* out) {
  const size_t vectors = size_t(blocks16(N)) * size_t(K / 4);
  for (size_t v = 0; v < vectors; ++v) pack_into(panels + v * 64, 64, bits, out + v * 8 * bits);
}

void qgemm_u8_panels_s32(int M, int N, int K, const uint8_t* A, int lda, const int8_t* panels, int32_t* C) {
  BS_CHECK(qgemm_panels_usable(N, K), "qgemm panels: unsupported CPU or shape N = ", N, ", K = ", K);
  BS_CHECK(lda >= K, "qgemm panels: lda ", lda, " < K ", K);
  if (M <= 0) return;
  std::vector<const uint8_t*> rows(static_cast<size_t>(M));
  for (int m = 0; m < M; ++m) rows[size_t(m)] = A + size_t(m) * lda;
  qgemm_u8_panels_rows_s32(M, N, PanelRows{rows.data(), 1, K / 4, 0}, panels, C);
}

}  // namespace bitswitch::deploy
