// Integer linear layers of the language-model decoder; the definition is in lm_kernels.h.
// This file holds the scalar reference and the portable path of LmLinear (codes unpacked once per
// call row by row from the packed rows); the SIMD paths are added beside it.
#include "bitswitch/deploy/lm_kernels.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "bitswitch/deploy/packing.h"
#include "bitswitch/quant/double_rounding.h"
#include "bitswitch/util/error.h"

namespace bitswitch::deploy {

namespace {

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

}  // namespace

void lm_quantize_tokens(int M, int K, const float* x, int8_t* q, float* a) {
  for (int m = 0; m < M; ++m) {
    const float* xm = x + size_t(m) * K;
    float mx = 0.0f;
    for (int k = 0; k < K; ++k) mx = std::max(mx, std::fabs(xm[k]));
    const float s = quant::per_token_scale(mx, 8);
    const float inv = 1.0f / s;
    for (int k = 0; k < K; ++k) q[size_t(m) * K + k] = int8_t(quant::per_token_code(xm[k], inv, 8));
    a[m] = s;
  }
}

void lm_linear_ref(int M, int N, int K, int group, const int8_t* q, const float* a, const int8_t* codes,
                   const float* scales, float* y) {
  check_shape("lm_linear_ref", N, K, 8, group);
  const int G = group == 0 ? K : group;
  for (int m = 0; m < M; ++m) rows_ref(0, N, K, G, q + size_t(m) * K, a[m], codes, scales, y + size_t(m) * N);
}

struct LmLinear::Impl {
  int N = 0, K = 0, bits = 8, group = 0;
  QgemmIsa isa = QgemmIsa::kScalar;
  std::vector<int8_t> codes;  // N x K (portable path)
  std::vector<float> scales;  // N x (K / G)
};

LmLinear::LmLinear() : impl_(std::make_unique<Impl>()) {}
LmLinear::~LmLinear() = default;
LmLinear::LmLinear(LmLinear&&) noexcept = default;
LmLinear& LmLinear::operator=(LmLinear&&) noexcept = default;

LmLinear LmLinear::from_codes(int N, int K, int bits, int group, const int8_t* codes, const float* scales,
                              QgemmIsa isa) {
  check_shape("LmLinear", N, K, bits, group);
  LmLinear l;
  auto& p = *l.impl_;
  p.N = N, p.K = K, p.bits = bits, p.group = group == 0 ? K : group;
  p.isa = QgemmIsa::kScalar;
  (void)isa;
  const int lo = quant::signed_qmin(bits), hi = quant::signed_qmax(bits);
  p.codes.assign(codes, codes + size_t(N) * K);
  for (size_t i = 0; i < p.codes.size(); ++i)
    BS_CHECK(p.codes[i] >= lo && p.codes[i] <= hi, "LmLinear: code ", int(p.codes[i]), " of row ", i / size_t(K),
             " is outside the ", bits, "-bit range");
  p.scales.assign(scales, scales + size_t(N) * (K / p.group));
  return l;
}

LmLinear LmLinear::from_packed(int N, int K, int bits, int group, const uint8_t* packed_rows, size_t packed_size,
                               const float* scales, QgemmIsa isa) {
  check_shape("LmLinear", N, K, bits, group);
  const size_t row = packed_bytes(size_t(K), bits);
  BS_CHECK(packed_size == row * size_t(N), "LmLinear: packed weights hold ", packed_size, " bytes, ", N, " rows of ", K,
           " ", bits, "-bit codes need ", row * size_t(N));
  std::vector<int8_t> codes(size_t(N) * K);
  for (int n = 0; n < N; ++n) unpack_into(packed_rows + row * n, size_t(K), bits, codes.data() + size_t(n) * K);
  return from_codes(N, K, bits, group, codes.data(), scales, isa);
}

void LmLinear::forward(int M, const int8_t* q, const float* a, float* y, int threads) const {
  const auto& p = *impl_;
  BS_CHECK(p.N > 0, "LmLinear::forward on an empty layer");
  if (threads <= 0) threads = omp_get_max_threads();
  for (int m = 0; m < M; ++m) {
    const int8_t* qm = q + size_t(m) * p.K;
    float* ym = y + size_t(m) * p.N;
    if (threads <= 1 || p.N < 64) {
      rows_ref(0, p.N, p.K, p.group, qm, a[m], p.codes.data(), p.scales.data(), ym);
      continue;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; ++t) {
      const int n0 = int(int64_t(p.N) * t / threads), n1 = int(int64_t(p.N) * (t + 1) / threads);
      rows_ref(n0, n1, p.K, p.group, qm, a[m], p.codes.data(), p.scales.data(), ym);
    }
  }
}

int LmLinear::rows() const { return impl_->N; }
int LmLinear::cols() const { return impl_->K; }
int LmLinear::bits() const { return impl_->bits; }
int LmLinear::group() const { return impl_->group; }
QgemmIsa LmLinear::isa() const { return impl_->isa; }
size_t LmLinear::weight_bytes() const { return impl_->codes.size() + impl_->scales.size() * sizeof(float); }

}  // namespace bitswitch::deploy
