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

// MR rows x NB panels (NB*16 channels starting at panel `nb0`), full K. `rows` <= MR valid rows.
template <int MR, int NB>
BS_TARGET_VNNI void block(const uint8_t* A, int lda, int rows, int kq_count, const int8_t* panels, int panel_stride,
                          int nb0, int N, int32_t* C) {
  __m512i acc[MR][NB];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_setzero_si512();
  const int8_t* p = panels + size_t(nb0) * panel_stride;
  const uint8_t* a[MR];
  for (int r = 0; r < MR; ++r) a[r] = A + size_t(r < rows ? r : 0) * lda;
  for (int q = 0; q < kq_count; ++q) {
    __m512i b[NB];
    for (int j = 0; j < NB; ++j) b[j] = _mm512_loadu_si512(p + size_t(j) * panel_stride + size_t(q) * 64);
    for (int r = 0; r < MR; ++r) {
      int32_t v;
      std::memcpy(&v, a[r] + 4 * q, 4);
      const __m512i x = _mm512_set1_epi32(v);
      for (int j = 0; j < NB; ++j) acc[r][j] = dpbusd(acc[r][j], x, b[j]);
    }
  }
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < NB; ++j) {
      const int n = (nb0 + j) * 16;
      const int valid = N - n < 16 ? N - n : 16;
      int32_t* dst = C + size_t(r) * N + n;
      if (valid == 16) _mm512_storeu_si512(dst, acc[r][j]);
      else _mm512_mask_storeu_epi32(dst, __mmask16((1u << valid) - 1), acc[r][j]);
    }
}

template <int MR, int NB>
BS_TARGET_VNNI void run_rows(int M, int N, int K, const uint8_t* A, int lda, const int8_t* panels, int nb0,
                             int32_t* C) {
  const int panel_stride = K / 4 * 64;
  int m = 0;
  for (; m + MR <= M; m += MR)
    block<MR, NB>(A + size_t(m) * lda, lda, MR, K / 4, panels, panel_stride, nb0, N, C + size_t(m) * N);
  if (m < M) block<MR, NB>(A + size_t(m) * lda, lda, M - m, K / 4, panels, panel_stride, nb0, N, C + size_t(m) * N);
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

void qgemm_u8_panels_s32(int M, int N, int K, const uint8_t* A, int lda, const int8_t* panels, int32_t* C) {
  BS_CHECK(qgemm_panels_usable(N, K), "qgemm panels: unsupported CPU or shape N = ", N, ", K = ", K);
  BS_CHECK(lda >= K, "qgemm panels: lda ", lda, " < K ", K);
  if (M <= 0) return;
#if BS_DEPLOY_X86
  const int nbs = blocks16(N);
  int nb = 0;
  // Up to 4 panels (64 channels) per pass: 6 x 4 accumulators; narrower layers use more rows.
  for (; nb + 4 <= nbs; nb += 4) run_rows<6, 4>(M, N, K, A, lda, panels, nb, C);
  if (nbs - nb == 3) run_rows<8, 3>(M, N, K, A, lda, panels, nb, C);
  else if (nbs - nb == 2) run_rows<12, 2>(M, N, K, A, lda, panels, nb, C);
  else if (nbs - nb == 1) run_rows<16, 1>(M, N, K, A, lda, panels, nb, C);
#endif
}

}  // namespace bitswitch::deploy
