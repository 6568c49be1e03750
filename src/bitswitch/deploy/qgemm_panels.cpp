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

// MR rows x NB panels (NB*16 channels starting at panel `nb0`), full K. Row r of A is `segs`
// segments of seg_q groups of 4 bytes, segment i at rows[r] + i * seg_stride. `valid` <= MR rows.
template <int MR, int NB>
BS_TARGET_VNNI void block(const uint8_t* const* rows, int valid, int segs, int seg_q, size_t seg_stride,
                          const int8_t* panels, int panel_stride, int nb0, int N, int32_t* C) {
  __m512i acc[MR][NB];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_setzero_si512();
  const int8_t* p = panels + size_t(nb0) * panel_stride;
  const uint8_t* a[MR];
  for (int r = 0; r < MR; ++r) a[r] = rows[r < valid ? r : 0];
  int q = 0;
  for (int sg = 0; sg < segs; ++sg) {
    const size_t off = size_t(sg) * seg_stride;
    for (int q2 = 0; q2 < seg_q; ++q2, ++q) {
      __m512i b[NB];
      for (int j = 0; j < NB; ++j) b[j] = _mm512_loadu_si512(p + size_t(j) * panel_stride + size_t(q) * 64);
      for (int r = 0; r < MR; ++r) {
        int32_t v;
        std::memcpy(&v, a[r] + off + 4 * q2, 4);
        const __m512i x = _mm512_set1_epi32(v);
        for (int j = 0; j < NB; ++j) acc[r][j] = dpbusd(acc[r][j], x, b[j]);
      }
    }
  }
  for (int r = 0; r < valid; ++r)
    for (int j = 0; j < NB; ++j) {
      const int n = (nb0 + j) * 16;
      const int nv = N - n < 16 ? N - n : 16;
      int32_t* dst = C + size_t(r) * N + n;
      if (nv == 16) _mm512_storeu_si512(dst, acc[r][j]);
      else _mm512_mask_storeu_epi32(dst, __mmask16((1u << nv) - 1), acc[r][j]);
    }
}

template <int MR, int NB>
BS_TARGET_VNNI void run_rows(int M, int N, const PanelRows& A, const int8_t* panels, int nb0, int32_t* C) {
  const int panel_stride = A.segs * A.seg_q * 64;
  int m = 0;
  for (; m + MR <= M; m += MR)
    block<MR, NB>(A.rows + m, MR, A.segs, A.seg_q, A.seg_stride, panels, panel_stride, nb0, N, C + size_t(m) * N);
  if (m < M)
    block<MR, NB>(A.rows + m, M - m, A.segs, A.seg_q, A.seg_stride, panels, panel_stride, nb0, N, C + size_t(m) * N);
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
  const size_t row_bytes = packed_bytes(size_t(K), bits);
  thread_local std::vector<int8_t> rows;
  rows.resize(size_t(N) * K);
  for (int n = 0; n < N; ++n) unpack_into(B_packed + size_t(n) * row_bytes, size_t(K), bits, rows.data() + size_t(n) * K);
  qgemm_panels_from_rows(rows.data(), N, K, out);
}

void qgemm_u8_panels_rows_s32(int M, int N, const PanelRows& A, const int8_t* panels, int32_t* C) {
  const int K = A.segs * A.seg_q * 4;
  BS_CHECK(qgemm_panels_usable(N, K) && A.segs >= 1 && A.seg_q >= 1, "qgemm panels: unsupported CPU or shape N = ", N,
           ", K = ", K);
  if (M <= 0) return;
#if BS_DEPLOY_X86
  const int nbs = blocks16(N);
  int nb = 0;
  // Up to 4 panels (64 channels) per pass: 6 x 4 accumulators; narrower layers use more rows.
  for (; nb + 4 <= nbs; nb += 4) run_rows<6, 4>(M, N, A, panels, nb, C);
  if (nbs - nb == 3) run_rows<8, 3>(M, N, A, panels, nb, C);
  else if (nbs - nb == 2) run_rows<12, 2>(M, N, A, panels, nb, C);
  else if (nbs - nb == 1) run_rows<16, 1>(M, N, A, panels, nb, C);
#endif
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
