// Integer runtime (SPEC.md Sec. 7; paper Sec. 3.1); see runtime.h for the arithmetic.
// Layout: activations NHWC, so a conv is im2col (rows of kh*kw*C input codes, channel fastest)
// followed by one GEMM against weight rows reordered to the same (ky, kx, c) order at load.
#include "bitswitch/deploy/runtime.h"

#include <omp.h>

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12 warns falsely about the undefined vectors inside its own AVX-512 intrinsic headers.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>

#include "bitswitch/deploy/packing.h"
#include "bitswitch/deploy/qgemm_panels.h"
#include "bitswitch/util/cpu_features.h"
#include "bitswitch/util/error.h"

namespace bitswitch::deploy {
namespace {

// A conv or linear layer prepared for inference, with its BN folded into the epilogue.
struct Op {
  std::string name;
  int out = 0, in = 0, kernel = 1, stride = 1, padding = 0;
  bool integer = false;       // quantized input and weights: integer GEMM
  int bits = 8;               // weight code width (integer ops)
  float act_inv = 1, act_qmax = 255;
  std::vector<uint8_t> wq;    // integer: N rows of K codes, int8 or packed `bits`-bit
  std::vector<int8_t> panels; // panel-kernel ops: int8 panels (8 bits) or packed panels (fewer bits)
  int index = 0;              // position in Runtime::Impl::ops
  std::vector<float> wf;      // float: N x K
  std::vector<float> bias_fp; // float layers: bias, added in double
  std::vector<double> wt;     // float layers: the weights transposed, K x N, in double
  // Epilogue, the arithmetic of nn::set_integer_eval: y = (acc * as[c] + bias[c]) * alpha[c] + beta[c]
  // (float, each operation rounded; as = a * s_c, bias 0 when absent, alpha 1 / beta 0 without BN).
  std::vector<float> as, bias, alpha, beta;

  int K() const { return in * kernel * kernel; }
  int out_dim(int d) const { return (d + 2 * padding - kernel) / stride + 1; }
};

// The activation quantizer of training (quant::act_code), as a uint8 code.
inline uint8_t quantize_one(float x, float inv, float qmax) { return uint8_t(int(quant::act_code(x, inv, qmax))); }

// Hot loops, compiled for AVX-512 / AVX2 / baseline and picked at load time.
#if defined(__x86_64__) && defined(__GNUC__)
#define BS_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define BS_CLONES
#endif

BS_CLONES
void quantize(const float* __restrict x, size_t n, float inv, float qmax, uint8_t* __restrict q) {
#pragma omp simd
  for (size_t i = 0; i < n; ++i) q[i] = quantize_one(x[i], inv, qmax);
}

// Copies `c` elements; constant sizes for the common channel counts so the copy is inlined.
template <typename T>
inline void copy_channels(T* dst, const T* src, int c) {
  switch (c * int(sizeof(T))) {
    case 16: std::memcpy(dst, src, 16); return;
    case 32: std::memcpy(dst, src, 32); return;
    case 64: std::memcpy(dst, src, 64); return;
    case 128: std::memcpy(dst, src, 128); return;
    case 256: std::memcpy(dst, src, 256); return;
    default: std::memcpy(dst, src, sizeof(T) * size_t(c));
  }
}

// im2col over NHWC: one row of kernel*kernel*C values per output pixel, zero padding (the zero
// code is the value 0 for unsigned activations).
template <typename T>
void im2col(const T* x, int n, int h, int w, int c, const Op& op, T* col) {
  const int ho = op.out_dim(h), wo = op.out_dim(w), k = op.kernel;
  const size_t row = size_t(k) * k * c;
  for (int b = 0; b < n; ++b)
    for (int oy = 0; oy < ho; ++oy)
      for (int ox = 0; ox < wo; ++ox) {
        T* dst = col + ((size_t(b) * ho + oy) * wo + ox) * row;
        const int ix0 = ox * op.stride - op.padding;
        const bool x_inside = ix0 >= 0 && ix0 + k <= w;
        for (int ky = 0; ky < k; ++ky) {
          const int iy = oy * op.stride - op.padding + ky;
          if (x_inside && iy >= 0 && iy < h) {
            // The k input pixels of this kernel row are contiguous in NHWC: one copy.
            std::memcpy(dst, x + ((size_t(b) * h + iy) * w + ix0) * c, sizeof(T) * size_t(k) * c);
            dst += size_t(k) * c;
            continue;
          }
          for (int kx = 0; kx < k; ++kx, dst += c) {
            const int ix = ix0 + kx;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) std::memset(dst, 0, sizeof(T) * c);
            else copy_channels(dst, x + ((size_t(b) * h + iy) * w + ix) * c, c);
          }
        }
      }
}

// Per-channel epilogue parameters (see Op).
struct Epi {
  const float* __restrict as;
  const float* __restrict bias;
  const float* __restrict alpha;
  const float* __restrict beta;
};

inline float epi_value(int32_t acc, const Epi& e, int j) {
  return (float(acc) * e.as[j] + e.bias[j]) * e.alpha[j] + e.beta[j];
}

// y = max(epi(acc), lo) over M rows of N channels.
BS_CLONES
void epilogue_float(const int32_t* __restrict acc, int M, int N, Epi e, float lo, float* __restrict y) {
  for (int m = 0; m < M; ++m) {
    const int32_t* a = acc + size_t(m) * N;
    float* d = y + size_t(m) * N;
#pragma omp simd
    for (int j = 0; j < N; ++j) d[j] = std::max(epi_value(a[j], e, j), lo);
  }
}

// BN, ReLU and the next layer's quantizer.
BS_CLONES
void epilogue_requant_portable(const int32_t* __restrict acc, int M, int N, Epi e, float inv, float qmax,
                               uint8_t* __restrict q) {
  for (int m = 0; m < M; ++m) {
    const int32_t* a = acc + size_t(m) * N;
    uint8_t* d = q + size_t(m) * N;
#pragma omp simd
    for (int j = 0; j < N; ++j) d[j] = quantize_one(std::max(epi_value(a[j], e, j), 0.0f), inv, qmax);
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define BS_RUNTIME_AVX512 1
#define BS_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
// 16 channels of epi(acc): the same operations, in the same order, as epi_value (no FMA); the
// requantization below is quant::act_code in vector form.
BS_TARGET_AVX512 inline __m512 epi16(const int32_t* a, const Epi& e, int j) {
  __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(a + j)), _mm512_loadu_ps(e.as + j));
  v = _mm512_add_ps(v, _mm512_loadu_ps(e.bias + j));
  v = _mm512_mul_ps(v, _mm512_loadu_ps(e.alpha + j));
  return _mm512_add_ps(v, _mm512_loadu_ps(e.beta + j));
}

// N % 16 == 0 (every channel count of the supported networks): 16 channels per vector, where
// the auto-vectoriser leaves rows of 16 to a scalar loop.
BS_TARGET_AVX512 void epilogue_requant_avx512(const int32_t* __restrict acc, int M, int N, Epi e, float inv,
                                              float qmax, uint8_t* __restrict q) {
  const __m512 vinv = _mm512_set1_ps(inv), vqmax = _mm512_set1_ps(qmax), zero = _mm512_setzero_ps();
  for (int m = 0; m < M; ++m) {
    const int32_t* a = acc + size_t(m) * N;
    uint8_t* d = q + size_t(m) * N;
    for (int j = 0; j < N; j += 16) {
      __m512 v = _mm512_max_ps(epi16(a, e, j), zero);
      v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, vinv), zero), vqmax);
      v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + j), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
    }
  }
}

BS_TARGET_AVX512 void epilogue_residual_avx512(const int32_t* __restrict acc, int M, int N, Epi e,
                                               const float* shortcut, float* y) {
  const __m512 zero = _mm512_setzero_ps();
  for (int m = 0; m < M; ++m) {
    const size_t r = size_t(m) * N;
    for (int j = 0; j < N; j += 16) {
      const __m512 v = _mm512_add_ps(epi16(acc + r, e, j), _mm512_loadu_ps(shortcut + r + j));
      _mm512_storeu_ps(y + r + j, _mm512_max_ps(v, zero));
    }
  }
}

bool cpu_avx512() { return cpu::avx512_f_bw_vl(); }
#else
#define BS_RUNTIME_AVX512 0
#endif

void epilogue_requant(const int32_t* acc, int M, int N, Epi e, float inv, float qmax, uint8_t* q) {
#if BS_RUNTIME_AVX512
  static const bool avx512 = cpu_avx512();
  if (avx512 && N % 16 == 0) return epilogue_requant_avx512(acc, M, N, e, inv, qmax, q);
#endif
  epilogue_requant_portable(acc, M, N, e, inv, qmax, q);
}

// relu(epi(acc) + shortcut); `y` may be `shortcut` (same element read then written).
BS_CLONES
void epilogue_residual_portable(const int32_t* __restrict acc, int M, int N, Epi e, const float* shortcut, float* y) {
  for (int m = 0; m < M; ++m) {
    const size_t r = size_t(m) * N;
#pragma omp simd
    for (int j = 0; j < N; ++j) y[r + j] = std::max(epi_value(acc[r + j], e, j) + shortcut[r + j], 0.0f);
  }
}

void epilogue_residual(const int32_t* acc, int M, int N, Epi e, const float* shortcut, float* y) {
#if BS_RUNTIME_AVX512
  static const bool avx512 = cpu_avx512();
  if (avx512 && N % 16 == 0) return epilogue_residual_avx512(acc, M, N, e, shortcut, y);
#endif
  epilogue_residual_portable(acc, M, N, e, shortcut, y);
}

// Full-precision layer rows: y[m][j] = (sum_k A[m][k] * W[k][j] in double, in k order) + bias[j],
// rounded to float, then BN (alpha, beta) and an optional ReLU. `acc`: N doubles of scratch.
BS_CLONES
void conv_float_rows(const float* __restrict A, int M, int K, int N, const double* __restrict wt,
                     const float* __restrict bias, const float* __restrict alpha, const float* __restrict beta,
                     bool relu, float* __restrict y, double* __restrict acc) {
  for (int m = 0; m < M; ++m) {
    const float* a = A + size_t(m) * K;
    for (int j = 0; j < N; ++j) acc[j] = 0;
    for (int k = 0; k < K; ++k) {
      const double av = a[k];
      const double* wk = wt + size_t(k) * N;
#pragma omp simd
      for (int j = 0; j < N; ++j) acc[j] += av * wk[j];
    }
    float* d = y + size_t(m) * N;
    for (int j = 0; j < N; ++j) {
      const float v = float(bias ? acc[j] + double(bias[j]) : acc[j]) * alpha[j] + beta[j];
      d[j] = relu ? std::max(v, 0.0f) : v;
    }
  }
}

struct Scratch {
  std::vector<uint8_t> col, q0, q1, q2;
  const std::vector<std::vector<int8_t>>* unpacked = nullptr;  // per op index: int8 panels of this call
  std::vector<const uint8_t*> rows;  // per output pixel: its first input row (implicit GEMM)
  std::vector<float> in;
  std::vector<int32_t> acc;
  std::vector<float> fcol, f0, f1, f2;
  std::vector<double> dacc;
};

template <typename T>
T* sized(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Splits [0, rows) over `threads` (OpenMP) when threads > 1.
void parallel_rows(int rows, int threads, const std::function<void(int, int)>& fn) {
  if (threads <= 1 || rows < 256) {
    fn(0, rows);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int per = (rows + nt - 1) / nt;
    const int r0 = std::min(rows, t * per), r1 = std::min(rows, r0 + per);
    if (r0 < r1) fn(r0, r1);
  }
}

}  // namespace

struct Runtime::Impl {
  Artifact meta;  // geometry and names only (codes live in ops)
  std::map<std::string, Op> ops;
  int threads = 1;
  QgemmIsa isa = QgemmIsa::kAuto;
  int tile = 4;
  size_t weight_bytes = 0;

  void prepare(const Artifact& a);
  bool unpack_in_gemm = false;
  // Low-bit panels of every op, unpacked to int8 for one inference call.
  std::vector<std::vector<int8_t>> unpack_all() const {
    std::vector<std::vector<int8_t>> out(ops.size());
    if (unpack_in_gemm) return out;
    for (const auto& [_, o] : ops)
      if (o.integer && o.bits != 8 && !o.panels.empty()) {
        auto& u = out[size_t(o.index)];
        u.resize(qgemm_panels_bytes(o.out, o.K()));
        qgemm_unpack_panels(reinterpret_cast<const uint8_t*>(o.panels.data()), o.out, o.K(), o.bits, u.data());
      }
    return out;
  }
  bool use_panels(const Op& o) const { return isa == QgemmIsa::kAvx512Vnni && qgemm_panels_usable(o.out, o.K()); }
  const Op& op(const std::string& name) const { return ops.at(name); }

  // ---- layer executions over a tile of n images (inner_threads split GEMM rows) ----

  // Integer conv/linear on uint8 codes [n,h,w,C] -> int32 acc [n*ho*wo, N].
  void gemm_int(const Op& o, const uint8_t* x, int n, int h, int w, Scratch& s, int inner) const {
    const int ho = o.out_dim(h), wo = o.out_dim(w), M = n * ho * wo, K = o.K();
    int32_t* C = sized(s.acc, size_t(M) * o.out);
    if (use_panels(o) && (o.kernel * o.in) % 4 == 0) {
      const int8_t* panels = o.panels.data();
      int panel_bits = 8;
      if (o.bits != 8) {
        if (unpack_in_gemm) {
          panel_bits = o.bits;  // packed panels, unpacked inside the GEMM's K loop
        } else {
          // Unpacked once per inference call (Runtime::forward), shared by its tiles and threads.
          panels = s.unpacked->at(size_t(o.index)).data();
        }
      }
      // No im2col: each output pixel reads its k rows of k*C input codes in place, from a
      // zero-padded copy of the input when the conv pads.
      const uint8_t* src = x;
      int hp = h, wp = w;
      if (o.padding > 0) {
        hp = h + 2 * o.padding, wp = w + 2 * o.padding;
        uint8_t* pad = sized(s.col, size_t(n) * hp * wp * o.in);
        const size_t row = size_t(w) * o.in;
        for (int b = 0; b < n; ++b) {
          uint8_t* img = pad + size_t(b) * hp * wp * o.in;
          std::memset(img, 0, size_t(o.padding) * wp * o.in);
          for (int y = 0; y < h; ++y) {
            uint8_t* r = img + (size_t(y + o.padding) * wp) * o.in;
            std::memset(r, 0, size_t(o.padding) * o.in);
            std::memcpy(r + size_t(o.padding) * o.in, x + (size_t(b) * h + y) * row, row);
            std::memset(r + size_t(o.padding) * o.in + row, 0, size_t(o.padding) * o.in);
          }
          std::memset(img + size_t(h + o.padding) * wp * o.in, 0, size_t(o.padding) * wp * o.in);
        }
        src = pad;
      }
      std::vector<const uint8_t*>& rows = s.rows;
      rows.resize(size_t(M));
      for (int b = 0, m = 0; b < n; ++b)
        for (int oy = 0; oy < ho; ++oy)
          for (int ox = 0; ox < wo; ++ox, ++m)
            rows[size_t(m)] = src + ((size_t(b) * hp + size_t(oy) * o.stride) * wp + size_t(ox) * o.stride) * o.in;
      const PanelRows pr{nullptr, o.kernel, o.kernel * o.in / 4, size_t(wp) * o.in};
      parallel_rows(M, inner, [&](int r0, int r1) {
        PanelRows part = pr;
        part.rows = rows.data() + r0;
        qgemm_u8_panels_rows_s32(r1 - r0, o.out, part, panels, C + size_t(r0) * o.out, panel_bits);
      });
      return;
    }
    const uint8_t* A = x;
    if (!(o.kernel == 1 && o.stride == 1 && o.padding == 0)) {
      uint8_t* col = sized(s.col, size_t(M) * K);
      im2col(x, n, h, w, o.in, o, col);
      A = col;
    }
    parallel_rows(M, inner, [&](int r0, int r1) {
      if (o.bits == 8)
        qgemm_u8s8_s32(r1 - r0, o.out, K, A + size_t(r0) * K, reinterpret_cast<const int8_t*>(o.wq.data()),
                       C + size_t(r0) * o.out, isa);
      else
        qgemm_u8_packed_s32(r1 - r0, o.out, K, A + size_t(r0) * K, o.wq.data(), o.bits, C + size_t(r0) * o.out, isa);
    });
  }

  // Float conv/linear (full-precision layers) on float [n,h,w,C] -> float [n*ho*wo, N], epilogue applied.
  void conv_float(const Op& o, const float* x, int n, int h, int w, float* y, Scratch& s, bool relu) const {
    const int ho = o.out_dim(h), wo = o.out_dim(w), M = n * ho * wo, K = o.K(), N = o.out;
    const float* A = x;
    if (!(o.kernel == 1 && o.stride == 1 && o.padding == 0)) {
      float* col = sized(s.fcol, size_t(M) * K);
      im2col(x, n, h, w, o.in, o, col);
      A = col;
    }
    // Double accumulation (float products are exact in double), one rounding to float, then
    // BN: the arithmetic of nn::set_integer_eval for full-precision layers.
    conv_float_rows(A, M, K, N, o.wt.data(), o.bias_fp.empty() ? nullptr : o.bias_fp.data(), o.alpha.data(),
                    o.beta.data(), relu, y, sized(s.dacc, size_t(N)));
  }

  static Epi epi(const Op& o) { return Epi{o.as.data(), o.bias.data(), o.alpha.data(), o.beta.data()}; }
  static void epi_float(const Op& o, const int32_t* acc, int M, float* y, bool relu) {
    epilogue_float(acc, M, o.out, epi(o), relu ? 0.0f : -INFINITY, y);
  }
  static void epi_requant(const Op& o, const int32_t* acc, int M, const Op& next, uint8_t* q) {
    epilogue_requant(acc, M, o.out, epi(o), next.act_inv, next.act_qmax, q);
  }
  static void epi_residual(const Op& o, const int32_t* acc, int M, const float* shortcut, float* y) {
    epilogue_residual(acc, M, o.out, epi(o), shortcut, y);
  }

  // A layer whose input is a float tensor: quantized (integer) or full precision. Output float.
  void layer_from_float(const Op& o, const float* x, int n, int h, int w, float* y, bool relu, Scratch& s,
                        int inner) const {
    if (!o.integer) return conv_float(o, x, n, h, w, y, s, relu);
    uint8_t* q = sized(s.q0, size_t(n) * h * w * o.in);
    quantize(x, size_t(n) * h * w * o.in, o.act_inv, o.act_qmax, q);
    gemm_int(o, q, n, h, w, s, inner);
    epi_float(o, s.acc.data(), n * o.out_dim(h) * o.out_dim(w), y, relu);
  }

  void forward_resnet20(const float* x, int n, int h, int w, float* logits, Scratch& s, int inner) const;
  void forward_smallcnn(const float* x, int n, int h, int w, float* logits, Scratch& s, int inner) const;
  void head(const float* feat, int n, int c, float* logits, Scratch& s, int inner) const;
  void forward_tile(const float* x_nchw, int n, int h, int w, float* logits, Scratch& s, int inner) const;
};

void Runtime::Impl::prepare(const Artifact& a) {
  BS_CHECK(a.arch == "resnet20" || a.arch == "smallcnn", "the integer runtime supports resnet20 and smallcnn; this artifact is '",
           a.arch, "'");
  meta.arch = a.arch;
  meta.in_channels = a.in_channels;
  meta.num_classes = a.num_classes;
  std::map<std::string, const BnRecord*> bn_of;
  for (const auto& b : a.bns) bn_of[b.source] = &b;
  for (const auto& l : a.layers) {
    Op o;
    o.name = l.name;
    o.out = int(l.out), o.in = int(l.in), o.kernel = int(l.kernel), o.stride = int(l.stride), o.padding = int(l.padding);
    const int K = o.K();
    // Reorder weight rows from PyTorch's (c, ky, kx) to im2col's (ky, kx, c).
    auto reorder = [&](auto get, auto& dst) {
      for (int r = 0; r < o.out; ++r)
        for (int c = 0; c < o.in; ++c)
          for (int ky = 0; ky < o.kernel; ++ky)
            for (int kx = 0; kx < o.kernel; ++kx)
              dst[size_t(r) * K + (size_t(ky) * o.kernel + kx) * o.in + c] =
                  get(size_t(r) * K + (size_t(c) * o.kernel + ky) * o.kernel + kx);
    };
    o.as.assign(size_t(o.out), 1.0f);
    o.bias.assign(size_t(o.out), 0.0f);
    o.alpha.assign(size_t(o.out), 1.0f);
    o.beta.assign(size_t(o.out), 0.0f);
    if (l.quantized && l.quantize_input) {
      o.integer = true;
      o.bits = l.bits;
      const float a_in = l.act_scale.at(l.bits);
      o.act_inv = 1.0f / a_in;  // as the activation quantizer computes it
      o.act_qmax = float(quant::unsigned_qmax(l.bits));
      std::vector<int8_t> codes(l.codes.size());
      reorder([&](size_t i) { return l.codes[i]; }, codes);
      if (o.bits == 8) o.wq.assign(codes.begin(), codes.end());
      else o.wq = pack_rows(codes.data(), size_t(o.out), size_t(K), o.bits);
      for (int c = 0; c < o.out; ++c) o.as[c] = l.scale[c] * a_in;
      if (!l.bias.empty()) o.bias = l.bias;
      weight_bytes += o.wq.size();
    } else {
      // Full precision, or quantized weights on a float input (an 8-bit first layer): the
      // dequantized weight code * scale, exactly the training forward.
      o.wf.resize(size_t(o.out) * K);
      if (l.quantized) reorder([&](size_t i) { return float(l.codes[i]) * l.scale[i / size_t(K)]; }, o.wf);
      else reorder([&](size_t i) { return l.weight[i]; }, o.wf);
      o.bias_fp = l.bias;
      o.wt.resize(o.wf.size());
      for (int r = 0; r < o.out; ++r)
        for (int k = 0; k < K; ++k) o.wt[size_t(k) * o.out + r] = double(o.wf[size_t(r) * K + k]);
      weight_bytes += o.wf.size() * sizeof(float);
    }
    if (auto it = bn_of.find(l.name); it != bn_of.end()) {
      const BnRecord& b = *it->second;
      std::string key = active_bn_key(a, b);
      if (!b.by_key.count(key)) key = std::to_string(l.bits);  // no transitional BN trained
      BS_CHECK(b.by_key.count(key), "BatchNorm '", b.name, "' has no parameters for key '", key, "'");
      const BnParams& p = b.by_key.at(key);
      const float eps = float(b.eps);
      for (int c = 0; c < o.out; ++c) {
        o.alpha[c] = p.weight[c] / std::sqrt(p.var[c] + eps);
        o.beta[c] = p.bias[c] - p.mean[c] * o.alpha[c];
      }
    }
    ops.emplace(o.name, std::move(o));
  }
}

void Runtime::Impl::head(const float* feat, int n, int c, float* logits, Scratch& s, int inner) const {
  // Global average pooling was done by the caller; the classifier is a linear layer.
  const Op& fc = op("fc");
  BS_CHECK(fc.in == c, "fc expects ", fc.in, " features, got ", c);
  layer_from_float(fc, feat, n, 1, 1, logits, false, s, inner);
}

namespace {
// Global average pooling over NHWC float: [n, h*w, c] -> [n, c].
void global_avg_pool(const float* x, int n, int hw, int c, float* y) {
  for (int b = 0; b < n; ++b)
    for (int j = 0; j < c; ++j) {
      float acc = 0;
      for (int p = 0; p < hw; ++p) acc += x[(size_t(b) * hw + p) * c + j];
      y[size_t(b) * c + j] = acc / float(hw);
    }
}
// 2x2 max pooling, stride 2, over NHWC (floor of odd sizes, as max_pool2d).
template <typename T>
void max_pool2(const T* x, int n, int h, int w, int c, T* y) {
  const int ho = h / 2, wo = w / 2;
  for (int b = 0; b < n; ++b)
    for (int oy = 0; oy < ho; ++oy)
      for (int ox = 0; ox < wo; ++ox)
        for (int j = 0; j < c; ++j) {
          auto at = [&](int yy, int xx) { return x[((size_t(b) * h + yy) * w + xx) * c + j]; };
          y[((size_t(b) * ho + oy) * wo + ox) * c + j] =
              std::max(std::max(at(2 * oy, 2 * ox), at(2 * oy, 2 * ox + 1)), std::max(at(2 * oy + 1, 2 * ox), at(2 * oy + 1, 2 * ox + 1)));
        }
}
}  // namespace

void Runtime::Impl::forward_resnet20(const float* x, int n, int h, int w, float* logits, Scratch& s, int inner) const {
  // stem -> BN -> ReLU (float residual stream)
  const Op& stem = op("stem");
  float* cur = sized(s.f0, size_t(n) * stem.out_dim(h) * stem.out_dim(w) * stem.out);
  layer_from_float(stem, x, n, h, w, cur, true, s, inner);
  h = stem.out_dim(h), w = stem.out_dim(w);
  int c = stem.out;
  for (int blk = 0;; ++blk) {
    const std::string p = "blocks." + std::to_string(blk) + ".";
    if (!ops.count(p + "conv1")) break;
    const Op &c1 = op(p + "conv1"), &c2 = op(p + "conv2");
    const int ho = c1.out_dim(h), wo = c1.out_dim(w);
    const size_t out_elems = size_t(n) * ho * wo * c2.out;
    // Shortcut first (it reads the block input).
    const float* shortcut = cur;
    if (ops.count(p + "down_conv")) {
      float* sc = sized(s.f1, out_elems);
      layer_from_float(op(p + "down_conv"), cur, n, h, w, sc, false, s, inner);
      shortcut = sc;
    }
    // conv1 -> BN1 -> ReLU -> requantized for conv2.
    BS_CHECK(c1.integer && c2.integer, "block ", blk, ": quantized convs expected");
    uint8_t* q = sized(s.q0, size_t(n) * h * w * c);
    quantize(cur, size_t(n) * h * w * c, c1.act_inv, c1.act_qmax, q);
    gemm_int(c1, q, n, h, w, s, inner);
    uint8_t* q2 = sized(s.q1, size_t(n) * ho * wo * c1.out);
    epi_requant(c1, s.acc.data(), n * ho * wo, c2, q2);
    gemm_int(c2, q2, n, ho, wo, s, inner);
    // relu(BN2 + shortcut): written into the buffer not holding the shortcut.
    // (With a projection shortcut, the block input in f0 has been read by both convs already.)
    float* out = (shortcut == s.f0.data()) ? sized(s.f2, out_elems) : sized(s.f0, out_elems);
    epi_residual(c2, s.acc.data(), n * ho * wo, shortcut, out);
    // Keep the stream in f0.
    if (out != s.f0.data()) std::swap(s.f0, s.f2);
    cur = s.f0.data();
    h = ho, w = wo, c = c2.out;
  }
  float* feat = sized(s.f1, size_t(n) * c);
  global_avg_pool(cur, n, h * w, c, feat);
  head(feat, n, c, logits, s, inner);
}

void Runtime::Impl::forward_smallcnn(const float* x, int n, int h, int w, float* logits, Scratch& s, int inner) const {
  const Op &c1 = op("conv1"), &c2 = op("conv2"), &c3 = op("conv3");
  // conv1 (float input) -> BN -> ReLU -> max pool -> quantized for conv2 (pooling and the
  // monotone quantizer commute, so the codes are pooled).
  float* y1 = sized(s.f0, size_t(n) * c1.out_dim(h) * c1.out_dim(w) * c1.out);
  layer_from_float(c1, x, n, h, w, y1, true, s, inner);
  h = c1.out_dim(h), w = c1.out_dim(w);
  float* p1 = sized(s.f1, size_t(n) * (h / 2) * (w / 2) * c1.out);
  max_pool2(y1, n, h, w, c1.out, p1);
  h /= 2, w /= 2;
  BS_CHECK(c2.integer && c3.integer, "smallcnn: quantized conv2/conv3 expected");
  uint8_t* q = sized(s.q0, size_t(n) * h * w * c1.out);
  quantize(p1, size_t(n) * h * w * c1.out, c2.act_inv, c2.act_qmax, q);
  gemm_int(c2, q, n, h, w, s, inner);
  const int h2 = c2.out_dim(h), w2 = c2.out_dim(w);
  uint8_t* q2 = sized(s.q1, size_t(n) * h2 * w2 * c2.out);
  epi_requant(c2, s.acc.data(), n * h2 * w2, c3, q2);
  uint8_t* pooled = sized(s.q2, size_t(n) * (h2 / 2) * (w2 / 2) * c2.out);
  max_pool2(q2, n, h2, w2, c2.out, pooled);
  h = h2 / 2, w = w2 / 2;
  gemm_int(c3, pooled, n, h, w, s, inner);
  const int h3 = c3.out_dim(h), w3 = c3.out_dim(w);
  float* y3 = sized(s.f2, size_t(n) * h3 * w3 * c3.out);
  epi_float(c3, s.acc.data(), n * h3 * w3, y3, true);
  float* feat = sized(s.f1, size_t(n) * c3.out);
  global_avg_pool(y3, n, h3 * w3, c3.out, feat);
  head(feat, n, c3.out, logits, s, inner);
}

void Runtime::Impl::forward_tile(const float* x_nchw, int n, int h, int w, float* logits, Scratch& s, int inner) const {
  // NCHW -> NHWC.
  const int c = int(meta.in_channels);
  float* x = sized(s.in, size_t(n) * h * w * c);
  for (int b = 0; b < n; ++b)
    for (int j = 0; j < c; ++j)
      for (int p = 0; p < h * w; ++p) x[(size_t(b) * h * w + p) * c + j] = x_nchw[(size_t(b) * c + j) * h * w + p];
  if (meta.arch == "resnet20") forward_resnet20(x, n, h, w, logits, s, inner);
  else forward_smallcnn(x, n, h, w, logits, s, inner);
}

Runtime::Runtime(const Artifact& model, RuntimeOptions options) : impl_(std::make_unique<Impl>()) {
  if (model.master) {
    impl_->prepare(switch_uniform(model, model.high_bits, options.threads));
  } else {
    impl_->prepare(model);
  }
  impl_->threads = options.threads > 0 ? options.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  impl_->isa = options.isa == QgemmIsa::kAuto ? qgemm_auto_isa(false) : options.isa;
  BS_CHECK(qgemm_isa_supported(impl_->isa), "GEMM path '", qgemm_isa_name(impl_->isa), "' is not supported on this CPU");
  for (auto& [_, o] : impl_->ops) {
    if (!o.integer || !impl_->use_panels(o)) continue;
    if (o.bits == 8) {
      o.panels.resize(qgemm_panels_bytes(o.out, o.K()));
      qgemm_panels_from_rows(reinterpret_cast<const int8_t*>(o.wq.data()), o.out, o.K(), o.panels.data());
    } else {
      // The l-bit codes re-ordered into panel order, still l bits each: the resident weights
      // (and the bytes read from memory per inference) fall with the width.
      std::vector<int8_t> tmp(qgemm_panels_bytes(o.out, o.K()));
      qgemm_panels_from_packed(o.wq.data(), o.bits, o.out, o.K(), tmp.data());
      o.panels.resize(qgemm_packed_panels_bytes(o.out, o.K(), o.bits));
      qgemm_pack_panels(tmp.data(), o.out, o.K(), o.bits, reinterpret_cast<uint8_t*>(o.panels.data()));
    }
  }
  impl_->unpack_in_gemm = options.unpack_in_gemm && qgemm_packed_panels_supported();
  int index = 0;
  for (auto& [_, o] : impl_->ops) o.index = index++;
  BS_CHECK(options.tile >= 1, "runtime tile must be >= 1");
  impl_->tile = options.tile;
}

Runtime::~Runtime() = default;
Runtime::Runtime(Runtime&&) noexcept = default;
Runtime& Runtime::operator=(Runtime&&) noexcept = default;

int64_t Runtime::num_classes() const { return impl_->meta.num_classes; }
int64_t Runtime::in_channels() const { return impl_->meta.in_channels; }
int Runtime::threads() const { return impl_->threads; }
QgemmIsa Runtime::isa() const { return impl_->isa; }
size_t Runtime::weight_bytes() const { return impl_->weight_bytes; }

std::vector<float> Runtime::forward(const float* images, int n, int height, int width) const {
  std::vector<float> logits(size_t(n) * size_t(num_classes()));
  forward(images, n, height, width, logits.data());
  return logits;
}

void Runtime::forward(const float* images, int n, int height, int width, float* logits) const {
  BS_CHECK(n >= 0 && height > 0 && width > 0, "runtime: bad input size ", n, " x ", height, " x ", width);
  if (n == 0) return;
  const Impl& im = *impl_;
  const size_t in_elems = size_t(im.meta.in_channels) * height * width;
  const size_t out_elems = size_t(im.meta.num_classes);
  const int T = im.threads;
  // Packed low-bit weights, unpacked once for this call (the bytes read fall with the width).
  const auto unpacked = im.unpack_all();
  if (n < T * 2) {
    // Few images: one tile at a time, GEMM rows split over the threads.
    Scratch s;
    s.unpacked = &unpacked;
    for (int b = 0; b < n; b += im.tile) {
      const int m = std::min(im.tile, n - b);
      im.forward_tile(images + size_t(b) * in_elems, m, height, width, logits + size_t(b) * out_elems, s, T);
    }
    return;
  }
  // Many images: each thread runs whole tiles (no synchronisation inside the network).
  const int tiles = (n + im.tile - 1) / im.tile;
#pragma omp parallel num_threads(T)
  {
    Scratch s;
    s.unpacked = &unpacked;
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < tiles; ++t) {
      const int b = t * im.tile, m = std::min(im.tile, n - b);
      im.forward_tile(images + size_t(b) * in_elems, m, height, width, logits + size_t(b) * out_elems, s, 1);
    }
  }
}

}  // namespace bitswitch::deploy
