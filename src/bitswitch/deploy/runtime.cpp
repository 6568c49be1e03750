// Integer runtime (SPEC.md Sec. 7; paper Sec. 3.1): an interpreter of the artifact's op graph;
// see runtime.h for the arithmetic.
// Layout: activations NHWC, so a conv is im2col (rows of kh*kw*C input codes, channel fastest)
// followed by one GEMM against weight rows reordered to the same (ky, kx, c) order at load.
#include "bitswitch/deploy/runtime.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <type_traits>

#include "bitswitch/deploy/dwconv.h"
#include "bitswitch/deploy/float_conv.h"
#include "bitswitch/deploy/packing.h"
#include "bitswitch/deploy/qgemm_pairs.h"
#include "bitswitch/deploy/qgemm_panels.h"
#include "bitswitch/deploy/x86_simd.h"
#include "bitswitch/util/error.h"

namespace bitswitch::deploy {

using format::GraphNode;
using format::InputQuant;
using format::OpKind;

namespace {

// An activation quantizer: code = round_half_even(clamp(x * inv, lo, hi)), stored as u8 code +
// offset (offset 128 for signed codes, so the u8 x s8 GEMMs apply).
struct Quant {
  float inv = 1, lo = 0, hi = 255;
  int offset = 0;
  bool same(const Quant& o) const { return inv == o.inv && lo == o.lo && hi == o.hi && offset == o.offset; }
};

// The activation quantizers of training (quant::act_code / quant::signed_act_code), as u8.
inline uint8_t code_of(float x, const Quant& q) {
  const float c = q.offset ? quant::signed_act_code(x, q.inv, q.lo, q.hi) : quant::act_code(x, q.inv, q.hi);
  return uint8_t(int(c) + q.offset);
}

// Hot loops, compiled for AVX-512 / AVX2 / baseline and picked at load time. (GCC only: clang,
// which builds the fuzzer, does not multiversion function templates; it gets the baseline.)
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BS_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define BS_CLONES
#endif

BS_CLONES
void quantize_unsigned(const float* __restrict x, size_t n, float inv, float qmax, uint8_t* __restrict q) {
#pragma omp simd
  for (size_t i = 0; i < n; ++i) q[i] = uint8_t(int(quant::act_code(x[i], inv, qmax)));
}
BS_CLONES
void quantize_signed(const float* __restrict x, size_t n, float inv, float lo, float hi, uint8_t* __restrict q) {
#pragma omp simd
  for (size_t i = 0; i < n; ++i) q[i] = uint8_t(int(quant::signed_act_code(x[i], inv, lo, hi)) + 128);
}
void quantize(const float* x, size_t n, const Quant& q, uint8_t* out) {
  if (q.offset) quantize_signed(x, n, q.inv, q.lo, q.hi, out);
  else quantize_unsigned(x, n, q.inv, q.hi, out);
}

// A copy of n bytes as constant-size pieces the compiler inlines: im2col copies runs of k*C
// bytes (48 for ResNet-20's 16-channel 3x3 convs), where a libc memcpy call per run cost more
// than the bytes.
inline void copy_bytes(void* dst, const void* src, size_t n) {
  auto* d = static_cast<uint8_t*>(dst);
  const auto* s = static_cast<const uint8_t*>(src);
  if (n > 512) {
    std::memcpy(d, s, n);
    return;
  }
  for (; n >= 32; n -= 32, d += 32, s += 32) std::memcpy(d, s, 32);
  for (; n >= 8; n -= 8, d += 8, s += 8) std::memcpy(d, s, 8);
  for (; n > 0; --n) *d++ = *s++;
}

// im2col over NHWC: one row of kernel*kernel*C values per output pixel; pixels outside the image
// are `pad` (the code of 0, or 0.0f).
template <typename T>
void im2col(const T* x, int n, int h, int w, int c, int k, int stride, int padding, T pad, T* col) {
  const int ho = (h + 2 * padding - k) / stride + 1, wo = (w + 2 * padding - k) / stride + 1;
  const size_t row = size_t(k) * k * c;
  for (int b = 0; b < n; ++b)
    for (int oy = 0; oy < ho; ++oy)
      for (int ox = 0; ox < wo; ++ox) {
        T* dst = col + ((size_t(b) * ho + oy) * wo + ox) * row;
        const int ix0 = ox * stride - padding;
        const bool x_inside = ix0 >= 0 && ix0 + k <= w;
        for (int ky = 0; ky < k; ++ky) {
          const int iy = oy * stride - padding + ky;
          if (x_inside && iy >= 0 && iy < h) {
            // The k input pixels of this kernel row are contiguous in NHWC: one copy.
            copy_bytes(dst, x + ((size_t(b) * h + iy) * w + ix0) * c, sizeof(T) * size_t(k) * c);
            dst += size_t(k) * c;
            continue;
          }
          for (int kx = 0; kx < k; ++kx, dst += c) {
            const int ix = ix0 + kx;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) std::fill(dst, dst + c, pad);
            else copy_bytes(dst, x + ((size_t(b) * h + iy) * w + ix) * c, sizeof(T) * size_t(c));
          }
        }
      }
}

// The fused epilogue of a layer step: per channel j of M rows of N,
//   v = base(j)                       (integer: (float(acc + corr) * as + bias) * alpha + beta;
//                                      float layer: y * alpha + beta)
//   v = clamp(v, lo1, hi1)            (ReLU: [0, inf), ReLU6: [0, 6], none: (-inf, inf))
//   v = v + other; v = clamp(v, lo2, hi2)   (a fused residual add, then its activation)
//   out = v, or the next layer's code of v.
// What an epilogue writes: floats (yf), the codes of its quantizer (yq), or both (a float value
// whose integer readers share one quantizer: the residual stream of a ResNet, read as floats by
// the next add and as codes by the next convolutions).
constexpr int kOutFloat = 1, kOutCodes = 2, kOutBoth = 3;

struct Epi {
  const float* __restrict as;
  const float* __restrict bias;
  const float* __restrict alpha;
  const float* __restrict beta;
  const int32_t* __restrict corr;
  float lo1, hi1, lo2, hi2;
};

// `other` may be `yf` (a residual add computed in place, plan_memory): each value is stored where
// its operand was just read, so neither is restrict.
// The portable loop; kFloatIn: the base is y0 * alpha + beta from float results (FP layers) in
// place of the int32 sums' (float(acc + corr) * as + bias) * alpha + beta.
template <bool kFloatIn, bool kAdd, int kOut>
BS_CLONES void epilogue_loop(const void* __restrict in, int M, int N, Epi e, const float* other, Quant q,
                             float* yf, uint8_t* __restrict yq) {
  const int32_t* __restrict acc = static_cast<const int32_t*>(in);
  const float* __restrict y0 = static_cast<const float*>(in);
  for (int m = 0; m < M; ++m) {
    const size_t r = size_t(m) * N;
#pragma omp simd
    for (int j = 0; j < N; ++j) {
      float v = kFloatIn ? y0[r + j] : (float(acc[r + j] + e.corr[j]) * e.as[j] + e.bias[j]);
      v = v * e.alpha[j] + e.beta[j];
      v = std::min(std::max(v, e.lo1), e.hi1);
      if (kAdd) v = std::min(std::max(v + other[r + j], e.lo2), e.hi2);
      if (kOut & kOutCodes) yq[r + j] = code_of(v, q);
      if (kOut & kOutFloat) yf[r + j] = v;
    }
  }
}

#if BS_DEPLOY_X86
// epilogue_loop with AVX-512, 16 channels per step, the last N % 16 masked; used on the runtime's
// VNNI path (the other paths keep epilogue_loop, so the whole-network scalar-vs-VNNI tests compare
// the two). The same operations in the same order, each rounded as the scalar loop's: multiply
// and add separately (no FMA), max(lo, v) / min(hi, v) with the operand order that gives
// std::max(v, lo) / std::min(v, hi) on equal or unordered inputs, the quantizer's clamp and
// magic-number rounding (quant::act_code / signed_act_code). The compiler's loop over N channels
// left rows of 16-31 channels (ResNet-20's first stage; MobileNetV2's 24-channel layers) to its
// scalar remainder: the epilogue was 37% of ResNet-20's batch-64 profile.
template <bool kFloatIn, bool kAdd, int kOut>
BS_TARGET_VNNI void epilogue_avx512(const void* __restrict in, int M, int N, Epi e, const float* other,
                                        Quant q, float* yf, uint8_t* __restrict yq) {
  const int32_t* __restrict acc = static_cast<const int32_t*>(in);
  const float* __restrict y0 = static_cast<const float*>(in);
  const __m512 lo1 = _mm512_set1_ps(e.lo1), hi1 = _mm512_set1_ps(e.hi1), lo2 = _mm512_set1_ps(e.lo2),
               hi2 = _mm512_set1_ps(e.hi2), inv = _mm512_set1_ps(q.inv), qlo = _mm512_set1_ps(q.offset ? q.lo : 0.0f),
               qhi = _mm512_set1_ps(q.hi), magic = _mm512_set1_ps(12582912.0f);
  const __m512i off = _mm512_set1_epi32(q.offset);
  // Rows in fours, each 16 channels' parameters loaded once for the four (six loads per result
  // vector before; with the unmasked stores below, ResNet-50 all-integer at batch 16 on 1 thread,
  // alternating binaries: 14.5-16.0 -> 13.3-13.9 ms per image).
  constexpr int kRows = 4;
  for (int m0 = 0; m0 < M; m0 += kRows) {
    const int rows = std::min(kRows, M - m0);
    for (int j0 = 0; j0 < N; j0 += 16) {
      const __mmask16 k = N - j0 >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (N - j0)) - 1);
      const __m512 alpha = _mm512_maskz_loadu_ps(k, e.alpha + j0), beta = _mm512_maskz_loadu_ps(k, e.beta + j0);
      __m512i corr = _mm512_setzero_si512();
      __m512 as = alpha, bias = beta;
      if constexpr (!kFloatIn) {
        corr = _mm512_maskz_loadu_epi32(k, e.corr + j0);
        as = _mm512_maskz_loadu_ps(k, e.as + j0), bias = _mm512_maskz_loadu_ps(k, e.bias + j0);
      }
      for (int i = 0; i < rows; ++i) {
        const size_t r = size_t(m0 + i) * N + j0;
        __m512 v;
        if constexpr (kFloatIn) {
          v = _mm512_maskz_loadu_ps(k, y0 + r);
        } else {
          v = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_maskz_loadu_epi32(k, acc + r), corr));
          v = _mm512_add_ps(_mm512_mul_ps(v, as), bias);
        }
        v = _mm512_add_ps(_mm512_mul_ps(v, alpha), beta);
        v = _mm512_min_ps(hi1, _mm512_max_ps(lo1, v));
        if constexpr (kAdd)
          v = _mm512_min_ps(hi2, _mm512_max_ps(lo2, _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, other + r))));
        // Whole vectors are stored unmasked, the codes narrowed in a register (alone, against the
        // masked stores, this was within the machine's noise).
        if constexpr ((kOut & kOutCodes) != 0) {
          __m512 c = _mm512_min_ps(qhi, _mm512_max_ps(qlo, _mm512_mul_ps(v, inv)));
          c = _mm512_sub_ps(_mm512_add_ps(c, magic), magic);
          const __m512i ci = _mm512_add_epi32(_mm512_cvttps_epi32(c), off);
          if (k == 0xFFFF) _mm_storeu_si128(reinterpret_cast<__m128i*>(yq + r), _mm512_cvtepi32_epi8(ci));
          else _mm512_mask_cvtepi32_storeu_epi8(yq + r, k, ci);
        }
        if constexpr ((kOut & kOutFloat) != 0) {
          if (k == 0xFFFF) _mm512_storeu_ps(yf + r, v);
          else _mm512_mask_storeu_ps(yf + r, k, v);
        }
      }
    }
  }
}
#endif

// The epilogue of M rows of N: `in` the int32 sums (kFloatIn false) or the float results of an
// FP layer; the residual add when `other`, floats to yf and / or codes to yq where given;
// epilogue_avx512 where `wide` (the runtime's VNNI path) and the build has it, else epilogue_loop.
template <bool kFloatIn, bool kAdd, int kOut>
void epilogue_on(bool wide, const void* in, int M, int N, const Epi& e, const float* other, const Quant& q, float* yf,
                 uint8_t* yq) {
#if BS_DEPLOY_X86
  if (wide) {
    epilogue_avx512<kFloatIn, kAdd, kOut>(in, M, N, e, other, q, yf, yq);
    return;
  }
#endif
  (void)wide;
  epilogue_loop<kFloatIn, kAdd, kOut>(in, M, N, e, other, q, yf, yq);
}

template <bool kFloatIn>
void epilogue_rows(bool wide, const void* in, int M, int N, const Epi& e, const float* other, const Quant& q,
                   float* yf, uint8_t* yq) {
  const int out = (yf ? kOutFloat : 0) | (yq ? kOutCodes : 0);
  if (other) {
    if (out == kOutBoth) epilogue_on<kFloatIn, true, kOutBoth>(wide, in, M, N, e, other, q, yf, yq);
    else if (out == kOutCodes) epilogue_on<kFloatIn, true, kOutCodes>(wide, in, M, N, e, other, q, yf, yq);
    else epilogue_on<kFloatIn, true, kOutFloat>(wide, in, M, N, e, other, q, yf, yq);
  } else {
    if (out == kOutBoth) epilogue_on<kFloatIn, false, kOutBoth>(wide, in, M, N, e, other, q, yf, yq);
    else if (out == kOutCodes) epilogue_on<kFloatIn, false, kOutCodes>(wide, in, M, N, e, other, q, yf, yq);
    else epilogue_on<kFloatIn, false, kOutFloat>(wide, in, M, N, e, other, q, yf, yq);
  }
}

// One row of a max-pool over NHWC values (codes, floats, or the sums or FP results of a layer
// whose epilogue follows): output row `py` of image `b`, po_w pixels of N channels, the largest
// value of each window, or the smallest in the channels of `dec`; pixels outside the map are
// ignored (PyTorch's -inf padding).
template <typename T>
BS_CLONES void pool_row(const T* __restrict x, int b, int py, int h, int w, int N, int k, int stride, int pad,
                        int po_w, const uint8_t* __restrict dec, T* __restrict y) {
  const int y0 = std::max(0, py * stride - pad), y1 = std::min(h, py * stride - pad + k);
  for (int px = 0; px < po_w; ++px) {
    T* __restrict d = y + size_t(px) * N;
    const int x0 = std::max(0, px * stride - pad), x1 = std::min(w, px * stride - pad + k);
    std::memcpy(d, x + ((size_t(b) * h + y0) * w + x0) * N, sizeof(T) * size_t(N));
    for (int iy = y0; iy < y1; ++iy)
      for (int ix = x0; ix < x1; ++ix) {
        const T* __restrict v = x + ((size_t(b) * h + iy) * w + ix) * N;
#pragma omp simd
        for (int j = 0; j < N; ++j) d[j] = dec[j] ? std::min(d[j], v[j]) : std::max(d[j], v[j]);
      }
  }
}

// Splits [0, rows) over `threads` (OpenMP) when threads > 1 and there are at least `least` rows
// (GEMM rows: 64, fewer are not worth a fork; depthwise output rows, each a whole image row).
void parallel_rows(int rows, int threads, const std::function<void(int, int)>& fn, int least = 64) {
  if (threads <= 1 || rows < least) {
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

template <typename T>
T* sized(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// A conv/linear layer prepared for inference, with its fused epilogue.
struct Layer {
  std::string name;
  bool linear = false;
  int out = 0, in = 0, kernel = 1, stride = 1, padding = 0, groups = 1;
  bool depthwise = false;     // groups == in == out
  bool integer = false;       // quantized input and weights: integer GEMM
  int bits = 8;               // weight code width (integer layers)
  Quant in_q;                 // the quantizer of the input (integer layers)
  std::vector<uint8_t> wq;    // integer, not depthwise: N rows of K codes, int8 or packed `bits`-bit
  std::vector<int8_t> wdw;    // depthwise: k*k x C codes, tap-major
  std::vector<int8_t> panels; // panel-kernel layers: int8 panels (8 bits) or packed panels
  // AVX2 pair-panel layers (qgemm_pairs.h; short K): 8 bits: the resident weights in pair panels
  // (wq is dropped); below 8 bits the weights stay packed rows and are unpacked into pair panels
  // per call.
  bool pairs = false;
  std::vector<int8_t> wpairs;
  int index = 0;              // position in Impl::layers
  std::vector<float> bias_fp; // float layers: bias, added in double
  std::vector<float> wt;      // float layers: the weights transposed, K x N
  std::vector<float> as, bias, alpha, beta;
  std::vector<int32_t> corr;  // signed-input correction (0 for unsigned inputs)

  // Panel-GEMM layers whose k * in is not a multiple of 4 (the 7x7 conv on a 3-channel image):
  // each kernel row of k * in codes is read as `kpad` bytes, the next multiple of 4, with zero
  // weights for the bytes past it (the first pixels of the next kernel row, or the slack after
  // the input copy); the sums are unchanged (0: not padded). K 147 -> 168 for the 7x7 stem.
  int kpad = 0;
  int K() const { return kpad ? kernel * kpad : in / groups * kernel * kernel; }
  int K_real() const { return in / groups * kernel * kernel; }
  int out_dim(int d) const { return (d + 2 * padding - kernel) / stride + 1; }
};

enum class StepKind { kInput, kLayer, kBatchNorm, kAct, kAdd, kMaxPool, kAvgPool, kFlatten };

struct Step {
  StepKind kind = StepKind::kInput;
  int value = -1;          // graph node whose value the step computes
  std::vector<int> in;     // graph nodes read (kAdd: two)
  std::vector<std::string> fused;  // names of the graph nodes the step computes
  int layer = -1;          // kLayer
  float lo1 = -INFINITY, hi1 = INFINITY, lo2 = -INFINITY, hi2 = INFINITY;  // kLayer / kAct
  int add_other = -1;      // kLayer: the other operand of a fused add
  int kernel = 1, stride = 1, padding = 0;  // kMaxPool, and kLayer with `pool`
  // kLayer: a max-pool fused after the activation, run on the sums ahead of the epilogue. Each
  // channel's epilogue is monotone in its sum, so the pool of the epilogue's values is the
  // epilogue of the largest sum, or of the smallest where it decreases (pool_dec: its scale
  // as * alpha is negative). The epilogue then runs on a quarter of the pixels (3x3/2).
  bool pool = false;
  std::vector<uint8_t> pool_dec;
  int pooled_dim(int d) const { return (d + 2 * padding - kernel) / stride + 1; }
  std::vector<float> alpha, beta;           // kBatchNorm (standalone)
};

struct Value {
  bool codes = false;  // u8 codes of `q` (else float32)
  Quant q;
  int slot = -1;       // buffer
  // A float value of a layer step whose integer readers share one input quantizer: the step
  // also writes those codes, into twin_slot (-1: none), and the readers skip their quantize pass.
  int twin_slot = -1;
  Quant twin_q;
  // A layer with input quantizer `q` reads this value's twin instead of quantizing it.
  bool twin_serves(const Quant& q) const { return !codes && twin_slot >= 0 && twin_q.same(q); }
};

struct Dims {
  int h = 0, w = 0, c = 0;
};

struct Scratch {
  std::vector<std::vector<uint8_t>> slots;
  std::vector<Dims> dims;
  std::vector<uint8_t> col, qin;
  std::vector<std::vector<uint8_t>> gather;  // per-image runs: the live values of the tile's images
  std::vector<float> f0;
  std::vector<int32_t> acc;
  const std::vector<std::vector<int8_t>>* unpacked = nullptr;  // per layer: int8 panels of this call
  std::vector<int8_t> w8;  // one layer's low-bit rows unpacked to int8 rows or pair panels (few images)
  std::vector<const uint8_t*> rows;  // per output pixel: its first input row (panel GEMM)
  // Profiling runtimes: per step, the milliseconds, images and MACs per image of this call.
  std::vector<double> step_ms;
  std::vector<int64_t> step_images, step_macs;
};

void act_bounds(OpKind k, float& lo, float& hi) {
  lo = 0;
  hi = k == OpKind::kRelu6 ? 6.0f : INFINITY;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

void check_deployable(const Artifact& a) {
  for (const auto& n : a.graph.nodes) {
    BS_CHECK(!format::is_lm_op(n.op), "node '", n.name, "': op '", format::op_name(n.op),
             "' belongs to a language model, which this image runtime does not run (use `bitswitch generate` or "
             "`bitswitch perplexity`)");
    if (n.op != OpKind::kConv && n.op != OpKind::kLinear) continue;
    const LayerRecord& l = a.layer(n.layer);
    const bool integer = l.quantized && l.quantize_input;
    if (l.groups > 1) {
      BS_CHECK(l.groups == l.in && l.groups == l.out, "layer '", l.name, "': a grouped convolution with ", l.groups,
               " groups of ", l.in / l.groups, " -> ", l.out / l.groups,
               " channels cannot be deployed (the runtime runs dense and depthwise convolutions only)");
      BS_CHECK(integer, "layer '", l.name,
               "': a depthwise convolution on a full-precision input cannot be deployed (the runtime's depthwise "
               "kernel is integer only)");
    }
    BS_CHECK(l.row_elems() <= kQgemmMaxK, "layer '", l.name, "': ", l.row_elems(),
             " weights per output exceed the int32 accumulator's limit ", kQgemmMaxK);
    BS_CHECK(!l.signed_input || l.quantized, "layer '", l.name, "': a signed input quantizer on a full-precision layer");
  }
}

struct Runtime::Impl {
  int64_t in_channels = 0, num_classes = 0;
  format::Graph graph;
  std::vector<Layer> layers;
  std::vector<Step> steps;
  std::vector<Value> values;      // by graph node
  int num_slots = 0;
  // By value: the step computing it (-1: none) and the last step reading it (by its buffer's root;
  // steps.size() for the output).
  std::vector<int> value_step, last_read;
  int output = -1;
  int threads = 1;
  QgemmIsa isa = QgemmIsa::kAuto;
  int tile = 0;  // 0: up to 4 images (RuntimeOptions::tile)
  size_t weight_bytes = 0;
  bool unpack_in_gemm = false;
  bool profile = false;
  mutable std::mutex prof_mutex;
  mutable std::vector<StepProfile> prof;  // per step, then "unpack"
  bool panels_unpack_in_gemm() const { return unpack_in_gemm && qgemm_packed_panels_supported(); }

  void prepare(const Artifact& a);
  void plan_memory();
  bool use_panels(const Layer& o) const {
    return !o.depthwise && isa == QgemmIsa::kAvx512Vnni && qgemm_panels_usable(o.out, o.K());
  }
  // Layers whose GEMM reads each output pixel's k kernel rows in place (whole groups of 4 bytes).
  bool panels_in_place(const Layer& o) const { return use_panels(o) && (o.kpad || (o.kernel * o.in) % 4 == 0); }
  // A low-bit row-GEMM layer's packed rows as the int8 operand of its GEMM: pair panels for
  // pair-panel layers, else int8 rows.
  static void unpack_layer(const Layer& o, std::vector<int8_t>& u) {
    const int K = o.K();
    if (o.pairs) {
      u.resize(qgemm_pairs_bytes(o.out, K));
      qgemm_pairs_from_packed(o.wq.data(), o.bits, o.out, K, u.data());
    } else {
      u.resize(size_t(o.out) * size_t(K));
      unpack_rows_into(o.wq.data(), 0, size_t(o.out), size_t(K), o.bits, u.data());
    }
  }

  // With `rows` (a call of many images), every low-bit layer's panels or rows unpacked to int8
  // once for the call (without: gemm_int unpacks each layer into the scratch just before its
  // GEMM, the few-images path, where the unpacked layer is still in cache when the GEMM reads
  // it). Layers are split over the threads.
  // `out` keeps its buffers from earlier calls (no new pages per call).
  void unpack_all(bool rows, std::vector<std::vector<int8_t>>& out) const {
    out.resize(layers.size());
    for (auto& u : out) u.resize(0);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (size_t li = 0; li < layers.size(); ++li) {
      const Layer& o = layers[li];
      if (o.integer && o.bits != 8 && !o.panels.empty()) {
        if (panels_unpack_in_gemm() || !rows) continue;
        auto& u = out[size_t(o.index)];
        u.resize(qgemm_panels_bytes(o.out, o.K()));
        qgemm_unpack_panels(reinterpret_cast<const uint8_t*>(o.panels.data()), o.out, o.K(), o.bits, u.data());
      } else if (rows && o.integer && o.bits != 8 && !o.depthwise && !unpack_in_gemm) {
        // Row GEMMs (AVX2 / scalar): the packed rows unpacked once per call to int8 rows (or
        // pair panels), so the GEMM runs at the 8-bit speed while the resident weights stay packed.
        unpack_layer(o, out[size_t(o.index)]);
      }
    }
  }

  // Working memory of forward calls, kept between calls so that a call does not fault in fresh
  // pages for every buffer: one Scratch per thread of a call, plus the call's unpacked weights.
  // Concurrent calls each take their own set from the pool.
  struct CallMemory {
    std::vector<Scratch> scratch;
    std::vector<std::vector<int8_t>> unpacked;
  };
  mutable std::mutex pool_mutex;
  mutable std::vector<std::unique_ptr<CallMemory>> pool;
  std::unique_ptr<CallMemory> take_memory() const {
    std::lock_guard<std::mutex> lock(pool_mutex);
    if (pool.empty()) return std::make_unique<CallMemory>();
    auto m = std::move(pool.back());
    pool.pop_back();
    return m;
  }
  void give_memory(std::unique_ptr<CallMemory> m) const {
    std::lock_guard<std::mutex> lock(pool_mutex);
    pool.push_back(std::move(m));
  }
  // A call's set, returned to the pool when the call ends (also by an exception).
  struct MemoryLease {
    const Impl& im;
    std::unique_ptr<CallMemory> mem;
    explicit MemoryLease(const Impl& i) : im(i), mem(i.take_memory()) {}
    ~MemoryLease() { im.give_memory(std::move(mem)); }
    MemoryLease(const MemoryLease&) = delete;
    MemoryLease& operator=(const MemoryLease&) = delete;
  };

  // Integer conv/linear on u8 codes [n,h,w,C] -> int32 sums [n*ho*wo, N]; epilogue(first, c0, c1,
  // sums) is called by each thread after the GEMM of rows [c0, c1) of its range, which starts at
  // row `first`, in increasing order, with the sums of those rows. Panel layers keep them in a
  // per-thread chunk buffer that stays in cache, unless `whole`: then (as on the other paths) the
  // sums of row m are at s.acc + m * N, and stay there for the call.
  // `xf` (panel layers that pad): the float input instead, quantized with o.in_q into the padded copy.
  void gemm_int(const Layer& o, const uint8_t* x, const float* xf, int n, int h, int w, Scratch& s, int inner,
                bool whole, const std::function<void(int, int, int, const int32_t*)>& epilogue) const;
  void run_layer(const Step& st, int n, Scratch& s, int inner) const;
  void forward_tile(const float* x_nchw, int n, int h, int w, float* logits, Scratch& s, int inner) const;
  void run_step(const Step& st, const float* x_nchw, int n, int h, int w, Scratch& s, int inner) const;
};

void Runtime::Impl::gemm_int(const Layer& o, const uint8_t* x, const float* xf, int n, int h, int w, Scratch& s,
                             int inner, bool whole,
                             const std::function<void(int, int, int, const int32_t*)>& epilogue) const {
  const int ho = o.out_dim(h), wo = o.out_dim(w), M = n * ho * wo, K = o.K();
  const uint8_t padv = uint8_t(o.in_q.offset);
  if (o.depthwise) {
    int32_t* C = sized(s.acc, size_t(M) * o.out);
    // Output rows in chunks of about 32 KiB of int32 results, as the panel GEMM below. Split over
    // the threads from 2 image rows each (MobileNetV2's 7x7 to 56x56 maps at batch 1).
    const int chunk = std::max(1, 8192 / std::max(1, wo * o.out));
    parallel_rows(n * ho, inner, [&](int r0, int r1) {
      for (int c0 = r0; c0 < r1; c0 += chunk) {
        const int c1 = std::min(r1, c0 + chunk);
        dwconv_u8s8_s32(n, h, w, o.in, o.kernel, o.stride, o.padding, padv, x, o.wdw.data(), C, c0, c1);
        epilogue(r0 * wo, c0 * wo, c1 * wo, C + size_t(c0) * wo * o.out);
      }
    }, 2 * inner);
    return;
  }
  const int cin = o.in;
  if (panels_in_place(o)) {
    const int8_t* panels = o.panels.data();
    int panel_bits = 8;
    if (o.bits != 8) {
      if (panels_unpack_in_gemm()) {
        panel_bits = o.bits;  // packed panels, unpacked inside the GEMM's K loop
      } else if (!s.unpacked->at(size_t(o.index)).empty()) {
        panels = s.unpacked->at(size_t(o.index)).data();  // unpacked once for this call (many images)
      } else {
        // Few images: this layer now, into the scratch the next layer reuses, panels split over
        // the threads. (Unpacking every layer up front wrote ResNet-50's 40 MB of int8 panels
        // to memory and read them back: w4 was 10% slower than w8 at batch 1.)
        const int K = o.K(), nbs = (o.out + 15) / 16;
        const size_t packed_stride = qgemm_packed_panels_bytes(16, K, o.bits), stride = qgemm_panels_bytes(16, K);
        int8_t* u = sized(s.w8, qgemm_panels_bytes(o.out, K));
        const auto* packed = reinterpret_cast<const uint8_t*>(o.panels.data());
#pragma omp parallel for schedule(static) num_threads(inner) if (inner > 1 && nbs > 1)
        for (int nb = 0; nb < nbs; ++nb)
          qgemm_unpack_panels(packed + size_t(nb) * packed_stride, std::min(16, o.out - nb * 16), K, o.bits,
                              u + size_t(nb) * stride);
        panels = u;
      }
    }
    // No im2col: each output pixel reads its k rows of k*C input codes in place, from a padded
    // copy of the input when the conv pads, quantized into it from floats with `xf`. Padded kernel
    // rows (kpad) read up to 3 bytes past the last pixel: the copy has 4 bytes of slack.
    const uint8_t* src = x;
    int hp = h, wp = w;
    if (o.padding > 0 || o.kpad || xf) {
      hp = h + 2 * o.padding, wp = w + 2 * o.padding;
      const size_t bytes = size_t(n) * hp * wp * cin;
      uint8_t* pad = sized(s.col, bytes + 4);
      if (o.padding > 0) std::memset(pad, padv, bytes + 4);
      else std::memset(pad + bytes, padv, 4);
      const size_t row = size_t(w) * cin;
      for (int b = 0; b < n; ++b)
        for (int y = 0; y < h; ++y) {
          uint8_t* d = pad + ((size_t(b) * hp + y + o.padding) * wp + o.padding) * cin;
          if (xf) quantize(xf + (size_t(b) * h + y) * row, row, o.in_q, d);
          else std::memcpy(d, x + (size_t(b) * h + y) * row, row);
        }
      src = pad;
    }
    std::vector<const uint8_t*>& rows = s.rows;
    rows.resize(size_t(M));
    for (int b = 0, m = 0; b < n; ++b)
      for (int oy = 0; oy < ho; ++oy)
        for (int ox = 0; ox < wo; ++ox, ++m)
          rows[size_t(m)] = src + ((size_t(b) * hp + size_t(oy) * o.stride) * wp + size_t(ox) * o.stride) * cin;
    const PanelRows pr{nullptr, o.kernel, (o.kpad ? o.kpad : o.kernel * cin) / 4, size_t(wp) * cin};
    // Rows in chunks whose int32 results (about 32 KiB) are still in L1 when the epilogue reads
    // them, a multiple of 48 rows (whole blocks of the kernel's 6/12/16 rows). Measured on
    // MobileNetV2, batch 16, 1 thread, alternating in one process: best 131 vs 144 ms, median 158
    // vs 179 (its expand layers' results are megabytes per layer); ResNets unchanged.
    // The sums go to a per-thread chunk buffer, not a whole-call one (ResNet-50's layer1: 3.2 MB
    // per image); measured level in time, it keeps the call's scratch smaller.
    const int nbs = (o.out + 15) / 16;
    if (inner > 1 && M < 64 * inner && nbs >= 2) {
      // Few rows (the 7x7 maps of ResNet's last stage at batch 1: 49): the threads split the
      // channels, so each reads only its part of the weights and every row block runs in full;
      // (below 64 rows parallel_rows gives the whole layer to one thread). Panels in whole
      // groups of 4 (the 6 x 64 kernel) where each thread gets one. Then, once all sums are in,
      // each thread runs the epilogue of its share of the rows.
      int32_t* C = sized(s.acc, size_t(M) * o.out);
      PanelRows all = pr;
      all.rows = rows.data();
#pragma omp parallel num_threads(inner)
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int per = (nbs + nt - 1) / nt;
        if (nbs >= 4 * nt) per = (per + 3) / 4 * 4;
        const int b0 = std::min(nbs, t * per), b1 = std::min(nbs, b0 + per);
        if (b0 < b1) qgemm_u8_panels_rows_s32(M, o.out, all, panels, C, panel_bits, b0, b1);
#pragma omp barrier
        const int rper = (M + nt - 1) / nt;
        const int r0 = std::min(M, t * rper), r1 = std::min(M, r0 + rper);
        if (r0 < r1) epilogue(r0, r0, r1, C + size_t(r0) * o.out);
      }
      return;
    }
    const int chunk = std::max(48, (8192 / o.out) / 48 * 48);
    int32_t* C = whole ? sized(s.acc, size_t(M) * o.out) : nullptr;
    parallel_rows(M, inner, [&](int r0, int r1) {
      thread_local std::vector<int32_t> local;
      for (int c0 = r0; c0 < r1; c0 += chunk) {
        const int c1 = std::min(r1, c0 + chunk);
        PanelRows part = pr;
        part.rows = rows.data() + c0;
        int32_t* dst = whole ? C + size_t(c0) * o.out : sized(local, size_t(chunk) * o.out);
        qgemm_u8_panels_rows_s32(c1 - c0, o.out, part, panels, dst, panel_bits);
        epilogue(r0, c0, c1, dst);
      }
    });
    return;
  }
  const uint8_t* A = x;
  if (!(o.kernel == 1 && o.stride == 1 && o.padding == 0)) {
    uint8_t* col = sized(s.col, size_t(M) * K);
    im2col(x, n, h, w, o.in, o.kernel, o.stride, o.padding, padv, col);
    A = col;
  }
  // Low-bit rows as int8 rows for the 8-bit GEMM (not for panel layers: theirs are in panel
  // order): unpacked once for this call when the call did (many images), else now, into the
  // scratch that the next layer reuses (few images: no per-call copy of every layer).
  const int8_t* rows8 = nullptr;
  if (o.bits != 8 && o.panels.empty() && !unpack_in_gemm) {
    if (s.unpacked && !s.unpacked->at(size_t(o.index)).empty()) {
      rows8 = s.unpacked->at(size_t(o.index)).data();
    } else if (o.pairs) {
      unpack_layer(o, s.w8);
      rows8 = s.w8.data();
    } else {
      int8_t* u = sized(s.w8, size_t(o.out) * K);
      parallel_rows(o.out, inner, [&](int r0, int r1) {
        unpack_rows_into(o.wq.data(), size_t(r0), size_t(r1), size_t(K), o.bits, u);
      });
      rows8 = u;
    }
  }
  // Pair-panel layers: the 8-bit pair panels, or the low-bit ones of this call (rows8).
  const int8_t* pairs = o.pairs ? (o.bits == 8 ? o.wpairs.data() : rows8) : nullptr;
  int32_t* C = sized(s.acc, size_t(M) * o.out);
  parallel_rows(M, inner, [&](int r0, int r1) {
    if (pairs)
      qgemm_u8_pairs_s32(r1 - r0, o.out, K, A + size_t(r0) * K, size_t(K), pairs, C + size_t(r0) * o.out);
    else if (o.bits == 8)
      qgemm_u8s8_s32(r1 - r0, o.out, K, A + size_t(r0) * K, reinterpret_cast<const int8_t*>(o.wq.data()),
                     C + size_t(r0) * o.out, isa);
    else if (rows8)
      qgemm_u8s8_s32_narrow(r1 - r0, o.out, K, A + size_t(r0) * K, rows8, o.bits, C + size_t(r0) * o.out, isa);
    else
      qgemm_u8_packed_s32(r1 - r0, o.out, K, A + size_t(r0) * K, o.wq.data(), o.bits, C + size_t(r0) * o.out, isa);
    epilogue(r0, r0, r1, C + size_t(r0) * o.out);
  });
}

void Runtime::Impl::run_layer(const Step& st, int n, Scratch& s, int inner) const {
  const Layer& o = layers[size_t(st.layer)];
  const int vin = st.in[0];
  const Dims din = s.dims[size_t(vin)];
  BS_CHECK(din.c == o.in, "node '", o.name, "': input has ", din.c, " channels, the layer takes ", o.in);
  const int h = din.h, w = din.w;
  const int ho = o.out_dim(h), wo = o.out_dim(w);
  BS_CHECK(ho >= 1 && wo >= 1, "node '", o.name, "': a ", h, " x ", w, " input is smaller than its ", o.kernel, " x ",
           o.kernel, " kernel");
  const int M = n * ho * wo, N = o.out;
  // The step's output map: the conv's, or the fused max-pool's.
  const int oh = st.pool ? st.pooled_dim(ho) : ho, ow = st.pool ? st.pooled_dim(wo) : wo, Mo = n * oh * ow;
  BS_CHECK(oh >= 1 && ow >= 1, "node '", st.fused.back(), "': a ", ho, " x ", wo, " input is smaller than its kernel");
  const Value& vo = values[size_t(st.value)];
  uint8_t* out_bytes = sized(s.slots[size_t(vo.slot)], size_t(Mo) * N * (vo.codes ? 1 : sizeof(float)));
  float* yf = vo.codes ? nullptr : reinterpret_cast<float*>(out_bytes);
  uint8_t* yq = vo.codes ? out_bytes : vo.twin_slot >= 0 ? sized(s.slots[size_t(vo.twin_slot)], size_t(Mo) * N) : nullptr;
  const float* other = nullptr;
  if (st.add_other >= 0) {
    const Dims d = s.dims[size_t(st.add_other)];
    BS_CHECK(d.h == ho && d.w == wo && d.c == N, "node '", st.fused.back(), "': adds ", ho, " x ", wo, " x ", N, " to ",
             d.h, " x ", d.w, " x ", d.c, " (shape mismatch)");
    other = reinterpret_cast<const float*>(s.slots[size_t(values[size_t(st.add_other)].slot)].data());
  }
  const Epi e{o.as.data(), o.bias.data(), o.alpha.data(), o.beta.data(), o.corr.data(), st.lo1, st.hi1, st.lo2, st.hi2};
  const Quant q = vo.codes ? vo.q : vo.twin_q;
  const uint8_t* in_bytes = s.slots[size_t(values[size_t(vin)].slot)].data();
  const bool wide = isa == QgemmIsa::kAvx512Vnni;
  // The fused max-pool, fed by each thread's chunks of conv rows while they are in cache: after
  // rows [c0, c1) of a thread's range starting at `first`, the pool rows whose window lies in
  // [first, c1) and ends after c0 are pooled and their epilogue run. The few pool rows whose
  // window spans two threads' ranges are done after the conv (`left`).
  std::vector<char> pooled_done(st.pool ? size_t(n) * oh : 0, 0);
  const int PR = n * oh;
  auto win = [&](int P, bool end) {  // first / one past the last conv pixel row of pool row P's window
    const int b = P / oh, y = (P % oh) * st.stride - st.padding;
    return (b * ho + (end ? std::min(ho, y + st.kernel) : std::max(0, y))) * wo;
  };
  auto pool_one = [&](auto tag, const auto* x, int P) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    thread_local std::vector<T> buf;
    T* pr = sized(buf, size_t(ow) * N);
    pool_row(x, P / oh, P % oh, ho, wo, N, st.kernel, st.stride, st.padding, ow, st.pool_dec.data(), pr);
    const size_t off = size_t(P) * ow * N;
    epilogue_rows<decltype(tag)::value>(wide, pr, ow, N, e, nullptr, q, yf ? yf + off : nullptr,
                                        yq ? yq + off : nullptr);
    pooled_done[size_t(P)] = 1;
  };
  auto pool_chunk = [&](auto tag, const auto* x, int first, int c0, int c1) {
    int P = 0, hi = PR;  // the first pool row whose window ends after c0 (win is monotone in P)
    while (P < hi) {
      const int mid = (P + hi) / 2;
      if (win(mid, true) <= c0) P = mid + 1;
      else hi = mid;
    }
    for (; P < PR && win(P, true) <= c1; ++P)
      if (win(P, false) >= first) pool_one(tag, x, P);
  };
  auto pool_left = [&](auto tag, const auto* x) {
    for (int P = 0; P < PR; ++P)
      if (!pooled_done[size_t(P)]) pool_one(tag, x, P);
  };
  if (o.integer) {
    const uint8_t* xq = in_bytes;
    const Value& vi = values[size_t(vin)];
    const float* xf = nullptr;
    if (vi.twin_serves(o.in_q)) {
      xq = s.slots[size_t(vi.twin_slot)].data();  // the codes its producer wrote beside the floats
    } else if (!vi.codes && panels_in_place(o) && (o.padding > 0 || o.kpad)) {
      xf = reinterpret_cast<const float*>(in_bytes);  // quantized by gemm_int into its padded copy
    } else if (!vi.codes) {
      const size_t elems = size_t(n) * h * w * o.in;
      uint8_t* t = sized(s.qin, elems);
      quantize(reinterpret_cast<const float*>(in_bytes), elems, o.in_q, t);
      xq = t;
    }
    auto epi = [&](int first, int r0, int r1, const int32_t* a) {
      if (st.pool) return pool_chunk(std::false_type(), s.acc.data(), first, r0, r1);
      const float* ot = other ? other + size_t(r0) * N : nullptr;
      float* f = yf ? yf + size_t(r0) * N : nullptr;
      uint8_t* c = yq ? yq + size_t(r0) * N : nullptr;
      epilogue_rows<false>(wide, a, r1 - r0, N, e, ot, q, f, c);
    };
    gemm_int(o, xq, xf, n, h, w, s, inner, st.pool, epi);
    if (st.pool) pool_left(std::false_type(), static_cast<const int32_t*>(s.acc.data()));
  } else {
    BS_CHECK(!values[size_t(vin)].codes, "node '", o.name, "': a full-precision layer reads codes");
    const float* x = reinterpret_cast<const float*>(in_bytes);
    const int K = o.K();
    float* y0 = sized(s.f0, size_t(M) * N);
    const float* bias = o.bias_fp.empty() ? nullptr : o.bias_fp.data();
    const bool dense = o.kernel == 1 && o.stride == 1 && o.padding == 0;
    const FconvInput fin{x, n, h, w, o.in, o.kernel, o.stride, o.padding};
    // Rows in chunks of about 256 KiB of float results, each chunk's epilogue right after its
    // rows, while they are still in L2 (ResNet-18's stem writes 3.2 MB per image).
    const int chunk = std::max(64, (256 << 10) / int(sizeof(float)) / N);
    parallel_rows(M, inner, [&](int r0, int r1) {
      for (int c0 = r0; c0 < r1; c0 += chunk) {
        const int c1 = std::min(r1, c0 + chunk), m = c1 - c0;
        if (dense) fconv_rows(x + size_t(c0) * K, m, K, N, o.wt.data(), bias, y0 + size_t(c0) * N, isa);
        else fconv_conv(fin, c0, c1, N, o.wt.data(), bias, y0, isa);
        if (st.pool) {
          pool_chunk(std::true_type(), static_cast<const float*>(y0), r0, c0, c1);
          continue;
        }
        const size_t off = size_t(c0) * N;
        epilogue_rows<true>(wide, y0 + off, m, N, e, other ? other + off : nullptr, q, yf ? yf + off : nullptr,
                            yq ? yq + off : nullptr);
      }
    });
    if (st.pool) pool_left(std::true_type(), static_cast<const float*>(y0));
  }
  s.dims[size_t(st.value)] = Dims{o.linear ? 1 : oh, o.linear ? 1 : ow, N};
}

// ---------------------------------------------------------------------------------------------
// Load: layers, fusion, value kinds, memory plan.

void Runtime::Impl::prepare(const Artifact& a) {
  check_graph(a, "runtime");
  check_deployable(a);
  in_channels = a.in_channels;
  num_classes = a.num_classes;
  graph = a.graph;
  const auto order = format::validate_graph(graph, "runtime");
  const size_t V = graph.nodes.size();
  const auto users = graph.consumers();
  std::map<std::string, const BnRecord*> bn_by_name;
  for (const auto& b : a.bns) bn_by_name[b.name] = &b;
  auto folded_bn = [&](const BnRecord& b, std::vector<float>& alpha, std::vector<float>& beta) {
    std::string key = active_bn_key(a, b);
    if (!b.by_key.count(key)) key = std::to_string(a.layer(b.source).bits);  // no transitional BN trained
    BS_CHECK(b.by_key.count(key), "BatchNorm '", b.name, "' has no parameters for key '", key, "'");
    const BnParams& p = b.by_key.at(key);
    const float eps = float(b.eps);
    alpha.resize(size_t(b.channels)), beta.resize(size_t(b.channels));
    for (int64_t c = 0; c < b.channels; ++c) {
      alpha[size_t(c)] = p.weight[size_t(c)] / std::sqrt(p.var[size_t(c)] + eps);
      beta[size_t(c)] = p.bias[size_t(c)] - p.mean[size_t(c)] * alpha[size_t(c)];
    }
  };

  // Layers.
  std::map<std::string, int> layer_of_node;
  for (int i : order) {
    const GraphNode& nd = graph.nodes[size_t(i)];
    if (nd.op != OpKind::kConv && nd.op != OpKind::kLinear) continue;
    const LayerRecord& l = a.layer(nd.layer);
    Layer o;
    o.name = nd.name;
    o.linear = nd.op == OpKind::kLinear;
    o.out = int(l.out), o.in = int(l.in), o.kernel = int(l.kernel), o.stride = int(l.stride), o.padding = int(l.padding);
    o.groups = int(l.groups);
    o.depthwise = o.groups > 1;
    const int K = o.K();
    // Reorder weight rows from PyTorch's (c, ky, kx) to im2col's (ky, kx, c).
    const int cin = o.in / o.groups;
    auto reorder = [&](auto get, auto& dst) {
      for (int r = 0; r < o.out; ++r)
        for (int c = 0; c < cin; ++c)
          for (int ky = 0; ky < o.kernel; ++ky)
            for (int kx = 0; kx < o.kernel; ++kx)
              dst[size_t(r) * K + (size_t(ky) * o.kernel + kx) * cin + c] =
                  get(size_t(r) * K + (size_t(c) * o.kernel + ky) * o.kernel + kx);
    };
    o.as.assign(size_t(o.out), 1.0f);
    o.bias.assign(size_t(o.out), 0.0f);
    o.alpha.assign(size_t(o.out), 1.0f);
    o.beta.assign(size_t(o.out), 0.0f);
    o.corr.assign(size_t(o.out), 0);
    if (l.quantized && l.quantize_input) {
      o.integer = true;
      o.bits = l.bits;
      const float a_in = l.act_scale.at(l.bits);
      o.in_q.inv = 1.0f / a_in;  // as the activation quantizer computes it
      if (l.signed_input) {
        o.in_q.lo = float(quant::signed_qmin(l.bits)), o.in_q.hi = float(quant::signed_qmax(l.bits));
        o.in_q.offset = 128;
      } else {
        o.in_q.lo = 0, o.in_q.hi = float(quant::unsigned_qmax(l.bits));
      }
      if (o.depthwise) {
        // [C][1][k][k] -> tap-major [k*k][C].
        o.wdw.resize(l.codes.size());
        for (int c = 0; c < o.out; ++c)
          for (int t = 0; t < K; ++t) o.wdw[size_t(t) * o.out + c] = l.codes[size_t(c) * K + t];
        weight_bytes += o.wdw.size();
        if (o.in_q.offset)
          for (int c = 0; c < o.out; ++c) {
            int32_t s = 0;
            for (int t = 0; t < K; ++t) s += l.codes[size_t(c) * K + t];
            o.corr[size_t(c)] = -128 * s;
          }
      } else {
        std::vector<int8_t> codes(l.codes.size());
        reorder([&](size_t i) { return l.codes[i]; }, codes);
        if (o.in_q.offset) signed_input_correction(codes.data(), o.out, K, o.corr.data());
        if (o.bits == 8) o.wq.assign(codes.begin(), codes.end());
        else o.wq = pack_rows(codes.data(), size_t(o.out), size_t(K), o.bits);
        weight_bytes += o.wq.size();
      }
      for (int c = 0; c < o.out; ++c) o.as[size_t(c)] = l.scale[size_t(c)] * a_in;
      if (!l.bias.empty()) o.bias = l.bias;
    } else {
      // Full precision, or quantized weights on a float input (an 8-bit first layer): the
      // dequantized weight code * scale, exactly the training forward, in double.
      std::vector<float> wf(size_t(o.out) * K);
      if (l.quantized) reorder([&](size_t i) { return float(l.codes[i]) * l.scale[i / size_t(K)]; }, wf);
      else reorder([&](size_t i) { return l.weight[i]; }, wf);
      o.bias_fp = l.bias;
      o.wt.resize(wf.size());
      for (int r = 0; r < o.out; ++r)
        for (int k = 0; k < K; ++k) o.wt[size_t(k) * o.out + r] = wf[size_t(r) * K + k];
      weight_bytes += o.wt.size() * sizeof(float);
    }
    o.index = int(layers.size());
    layer_of_node[nd.name] = o.index;
    layers.push_back(std::move(o));
  }

  // Steps: each conv/linear absorbs the chain of nodes only it feeds.
  std::vector<Step> pending;
  // The one node reading node i, if that node is not yet part of a step (else -1).
  std::vector<char> absorbed(V, 0);
  auto sole_user = [&](int i) {
    if (users[size_t(i)].size() != 1 || graph.output == graph.nodes[size_t(i)].name) return -1;
    const int u = users[size_t(i)][0];
    return absorbed[size_t(u)] ? -1 : u;
  };
  for (int i : order) {
    const GraphNode& nd = graph.nodes[size_t(i)];
    if (absorbed[size_t(i)]) continue;
    Step st;
    st.value = i;
    st.fused = {nd.name};
    for (const auto& in : nd.inputs) st.in.push_back(graph.index(in));
    switch (nd.op) {
      case OpKind::kInput: st.kind = StepKind::kInput; break;
      case OpKind::kConv:
      case OpKind::kLinear: {
        st.kind = StepKind::kLayer;
        st.layer = layer_of_node.at(nd.name);
        Layer& o = layers[size_t(st.layer)];
        int cur = i, u = sole_user(cur);
        if (u >= 0 && graph.nodes[size_t(u)].op == OpKind::kBatchNorm) {
          folded_bn(*bn_by_name.at(graph.nodes[size_t(u)].layer), o.alpha, o.beta);
          absorbed[size_t(u)] = 1, st.fused.push_back(graph.nodes[size_t(u)].name), cur = u, u = sole_user(cur);
        }
        if (u >= 0 && (graph.nodes[size_t(u)].op == OpKind::kRelu || graph.nodes[size_t(u)].op == OpKind::kRelu6)) {
          act_bounds(graph.nodes[size_t(u)].op, st.lo1, st.hi1);
          absorbed[size_t(u)] = 1, st.fused.push_back(graph.nodes[size_t(u)].name), cur = u, u = sole_user(cur);
        }
        if (u >= 0 && graph.nodes[size_t(u)].op == OpKind::kMaxPool) {
          const auto& mp = graph.nodes[size_t(u)];
          st.pool = true;
          st.kernel = int(mp.kernel), st.stride = int(mp.stride), st.padding = int(mp.padding);
          st.pool_dec.resize(size_t(o.out));
          for (size_t c = 0; c < size_t(o.out); ++c) st.pool_dec[c] = (o.as[c] < 0) != (o.alpha[c] < 0);
          absorbed[size_t(u)] = 1, st.fused.push_back(mp.name), cur = u;
        } else if (u >= 0 && graph.nodes[size_t(u)].op == OpKind::kAdd) {
          const auto& add = graph.nodes[size_t(u)];
          const int a0 = graph.index(add.inputs[0]), a1 = graph.index(add.inputs[1]);
          const int other = a0 == cur ? a1 : a0;
          if (a0 != a1) {
            st.add_other = other;
            st.in.push_back(other);
            absorbed[size_t(u)] = 1, st.fused.push_back(add.name), cur = u, u = sole_user(cur);
            if (u >= 0 && (graph.nodes[size_t(u)].op == OpKind::kRelu || graph.nodes[size_t(u)].op == OpKind::kRelu6)) {
              act_bounds(graph.nodes[size_t(u)].op, st.lo2, st.hi2);
              absorbed[size_t(u)] = 1, st.fused.push_back(graph.nodes[size_t(u)].name), cur = u;
            }
          }
        }
        st.value = cur;
        break;
      }
      case OpKind::kBatchNorm:
        st.kind = StepKind::kBatchNorm;
        folded_bn(*bn_by_name.at(nd.layer), st.alpha, st.beta);
        break;
      case OpKind::kRelu:
      case OpKind::kRelu6:
        st.kind = StepKind::kAct;
        act_bounds(nd.op, st.lo1, st.hi1);
        break;
      case OpKind::kAdd: st.kind = StepKind::kAdd; break;
      case OpKind::kMaxPool:
        st.kind = StepKind::kMaxPool;
        st.kernel = int(nd.kernel), st.stride = int(nd.stride), st.padding = int(nd.padding);
        break;
      case OpKind::kGlobalAvgPool: st.kind = StepKind::kAvgPool; break;
      case OpKind::kFlatten: st.kind = StepKind::kFlatten; break;
      default: fail("runtime: node '", nd.name, "': op '", format::op_name(nd.op), "' is not an image-model op");
    }
    pending.push_back(std::move(st));
  }
  // A step runs where its last fused node stands in the topological order (its other inputs are
  // computed before that node; the fused nodes feed nothing else).
  std::vector<int> pos(V, 0);
  for (size_t k = 0; k < order.size(); ++k) pos[size_t(order[k])] = int(k);
  std::stable_sort(pending.begin(), pending.end(), [&](const Step& x, const Step& y) { return pos[size_t(x.value)] < pos[size_t(y.value)]; });
  steps = std::move(pending);

  // Value kinds: a value is stored as the codes of a quantizer when every reader is a quantized
  // layer with that input quantizer, or a max-pool whose value is stored so (max commutes with
  // the monotone quantizer).
  values.assign(V, Value());
  std::vector<std::vector<int>> readers(V);  // by value: steps reading it
  for (size_t k = 0; k < steps.size(); ++k)
    for (int v : steps[k].in) readers[size_t(v)].push_back(int(k));
  std::vector<char> want_set(V, 0);
  std::vector<Quant> want(V);
  for (size_t kk = steps.size(); kk-- > 0;) {
    const int v = steps[kk].value;
    if (v == graph.index(graph.output) || readers[size_t(v)].empty()) continue;
    bool ok = true, first = true;
    Quant q;
    for (int r : readers[size_t(v)]) {
      const Step& rs = steps[size_t(r)];
      Quant rq;
      if (rs.kind == StepKind::kLayer && rs.in[0] == v && layers[size_t(rs.layer)].integer && rs.add_other != v) {
        rq = layers[size_t(rs.layer)].in_q;
      } else if (rs.kind == StepKind::kMaxPool && want_set[size_t(rs.value)]) {
        rq = want[size_t(rs.value)];
      } else {
        ok = false;
        break;
      }
      if (!first && !rq.same(q)) ok = false;
      q = rq, first = false;
    }
    if (ok && !first) want_set[size_t(v)] = 1, want[size_t(v)] = q;
  }
  // Float values of layer steps: a codes twin when their integer readers (as the GEMM input) share
  // one quantizer. twin_slot is set to 0 here as a mark; plan_memory gives the slot.
  std::vector<char> twin(V, 0);
  std::vector<Quant> twin_q(V);
  for (const auto& st : steps) {
    const int v = st.value;
    if (st.kind != StepKind::kLayer || want_set[size_t(v)] || v == graph.index(graph.output)) continue;
    bool ok = true, any = false;
    Quant q;
    for (int r : readers[size_t(v)]) {
      const Step& rs = steps[size_t(r)];
      if (!(rs.kind == StepKind::kLayer && rs.in[0] == v && layers[size_t(rs.layer)].integer)) continue;
      const Quant rq = layers[size_t(rs.layer)].in_q;
      if (any && !rq.same(q)) ok = false;
      q = rq, any = true;
    }
    if (ok && any) twin[size_t(v)] = 1, twin_q[size_t(v)] = q;
  }
  for (const auto& st : steps) {
    const int v = st.value;
    Value& val = values[size_t(v)];
    if (twin[size_t(v)]) val.twin_slot = 0, val.twin_q = twin_q[size_t(v)];
    if (st.kind == StepKind::kLayer) val.codes = want_set[size_t(v)];
    else if (st.kind == StepKind::kMaxPool || st.kind == StepKind::kFlatten) val.codes = values[size_t(st.in[0])].codes;
    if (val.codes) val.q = st.kind == StepKind::kLayer ? want[size_t(v)] : values[size_t(st.in[0])].q;
  }
  output = graph.index(graph.output);
  plan_memory();
}

void Runtime::Impl::plan_memory() {
  // Buffer slots by liveness: a value's slot is free after the last step reading it (flatten
  // shares its input's slot).
  const size_t V = graph.nodes.size();
  std::vector<int> last(V, -1), root(V);
  for (size_t v = 0; v < V; ++v) root[v] = int(v);
  for (const auto& st : steps)
    if (st.kind == StepKind::kFlatten) root[size_t(st.value)] = root[size_t(st.in[0])];
  for (size_t k = 0; k < steps.size(); ++k)
    for (int v : steps[k].in) last[size_t(root[size_t(v)])] = std::max(last[size_t(root[size_t(v)])], int(k));
  last[size_t(root[size_t(output)])] = int(steps.size());
  value_step.assign(V, -1);
  for (size_t k = 0; k < steps.size(); ++k) value_step[size_t(steps[k].value)] = int(k);
  last_read.assign(V, -1);
  for (size_t v = 0; v < V; ++v) last_read[v] = root[v] == int(v) ? last[v] : -1;
  std::vector<int> free_slots;
  for (size_t k = 0; k < steps.size(); ++k) {
    const Step& st = steps[k];
    // A residual add whose other operand is last read here writes its result in place of it: the
    // epilogue stores each value where it has just read the operand's (ResNet-50 all-integer at
    // batch 16 on 1 thread, alternating binaries: layer1 conv3 0.90-0.99 -> 0.58-0.79 ms per image).
    int in_place = -1;
    if (st.kind == StepKind::kLayer && st.add_other >= 0 && root[size_t(st.add_other)] == st.add_other &&
        last[size_t(st.add_other)] == int(k) && st.add_other != st.in[0] && !values[size_t(st.add_other)].codes &&
        !values[size_t(st.value)].codes)
      in_place = st.add_other;
    if (st.kind == StepKind::kFlatten) {
      values[size_t(st.value)].slot = values[size_t(st.in[0])].slot;
    } else {
      int slot;
      if (in_place >= 0) slot = values[size_t(in_place)].slot;
      else if (!free_slots.empty()) slot = free_slots.back(), free_slots.pop_back();
      else slot = num_slots++;
      values[size_t(st.value)].slot = slot;
      if (values[size_t(st.value)].twin_slot >= 0) {
        if (!free_slots.empty()) slot = free_slots.back(), free_slots.pop_back();
        else slot = num_slots++;
        values[size_t(st.value)].twin_slot = slot;
      }
      if (last[size_t(st.value)] < 0) last[size_t(st.value)] = int(k);  // read by nobody
    }
    auto release = [&](const Value& val) {
      free_slots.push_back(val.slot);
      if (val.twin_slot >= 0) free_slots.push_back(val.twin_slot);
    };
    std::set<int> done;
    for (int v : st.in) {
      const int r = root[size_t(v)];
      if (last[size_t(r)] != int(k) || !done.insert(r).second) continue;
      if (r != in_place) release(values[size_t(r)]);
      else if (values[size_t(r)].twin_slot >= 0) free_slots.push_back(values[size_t(r)].twin_slot);  // its slot lives on
    }
    if (st.kind != StepKind::kFlatten && last[size_t(st.value)] == int(k)) release(values[size_t(st.value)]);
  }
}

// ---------------------------------------------------------------------------------------------
// Execution.

namespace {
// Global average pooling over NHWC float: [n, h*w, c] -> [n, c].
void global_avg_pool(const float* x, int n, int hw, int c, float* y) {
  for (int b = 0; b < n; ++b) {
    float* d = y + size_t(b) * c;
    std::fill(d, d + c, 0.0f);
    for (int p = 0; p < hw; ++p) {
      const float* s = x + (size_t(b) * hw + p) * c;
      for (int j = 0; j < c; ++j) d[j] += s[j];
    }
    for (int j = 0; j < c; ++j) d[j] /= float(hw);
  }
}
}  // namespace

void Runtime::Impl::forward_tile(const float* x_nchw, int n, int h, int w, float* logits, Scratch& s, int inner) const {
  s.slots.resize(size_t(num_slots));
  s.dims.assign(graph.nodes.size(), Dims());
  if (profile) {
    s.step_ms.assign(steps.size(), 0.0);
    s.step_images.assign(steps.size(), 0);
    s.step_macs.assign(steps.size(), 0);
  }
  auto timed = [&](size_t si, const float* x, int images) {
    const Step& st = steps[si];
    const auto t0 = profile ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    run_step(st, x, images, h, w, s, inner);
    if (profile) {
      s.step_ms[si] += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      s.step_images[si] += images;
      if (st.kind == StepKind::kLayer) {
        const Layer& o = layers[size_t(st.layer)];
        const Dims d = s.dims[size_t(st.in[0])];  // the conv's output pixels (before a fused pool)
        s.step_macs[si] = o.linear ? int64_t(o.out) * o.K_real()
                                   : int64_t(o.out_dim(d.h)) * o.out_dim(d.w) * o.out * o.K_real();
      }
    }
  };
  size_t batched_from = 0;  // steps from here run on the whole tile
  const size_t image_elems = size_t(in_channels) * h * w;
  if (n > 1 && image_elems * sizeof(float) > (256u << 10)) {
    // Large images (224x224x3): each image runs alone through the steps before the first one
    // whose input is at most 1/1024 of the image's pixels (7x7 at 224x224), so that the
    // megabyte activations of the early layers stay in the caches between layers; the later
    // layers, whose weights are the large operand, then run on the whole tile (ResNet-18 at batch
    // 16, 1 thread, per step: layer4 0.35 ms per image faster with 4 images than with 1, layer1
    // 0.24 ms slower). The values live across that point are gathered per image.
    std::vector<int> live;
    for (int b = 0; b < n; ++b) {
      const float* xb = x_nchw + size_t(b) * image_elems;
      size_t si = 0;
      for (; si < steps.size(); ++si) {
        if (b > 0 && si == batched_from) break;
        if (b == 0 && si > 0) {
          const Step& st = steps[si];
          const Dims d = st.in.empty() ? Dims() : s.dims[size_t(st.in[0])];
          if (!st.in.empty() && size_t(d.h) * d.w * 1024 <= size_t(h) * w) break;
        }
        timed(si, xb, 1);
      }
      if (b == 0) {
        batched_from = si;
        for (size_t v = 0; v < values.size(); ++v)
          if (value_step[v] >= 0 && size_t(value_step[v]) < batched_from && last_read[v] >= int(batched_from))
            live.push_back(int(v));
        s.gather.resize(2 * live.size());
      }
      for (size_t k = 0; k < live.size(); ++k) {
        const Value& val = values[size_t(live[k])];
        const Dims d = s.dims[size_t(live[k])];
        const size_t elems = size_t(d.h) * d.w * d.c, bytes = elems * (val.codes ? 1 : sizeof(float));
        std::memcpy(sized(s.gather[2 * k], size_t(n) * bytes) + size_t(b) * bytes, s.slots[size_t(val.slot)].data(),
                    bytes);
        if (val.twin_slot >= 0)
          std::memcpy(sized(s.gather[2 * k + 1], size_t(n) * elems) + size_t(b) * elems,
                      s.slots[size_t(val.twin_slot)].data(), elems);
      }
    }
    for (size_t k = 0; k < live.size(); ++k) {
      const Value& val = values[size_t(live[k])];
      std::swap(s.slots[size_t(val.slot)], s.gather[2 * k]);
      if (val.twin_slot >= 0) std::swap(s.slots[size_t(val.twin_slot)], s.gather[2 * k + 1]);
    }
  }
  for (size_t si = batched_from; si < steps.size(); ++si) timed(si, x_nchw, n);
  const Dims d = s.dims[size_t(output)];
  BS_CHECK(d.c == num_classes && d.h == 1 && d.w == 1 && !values[size_t(output)].codes, "runtime: output '",
           graph.output, "' is not ", num_classes, " logits per image");
  std::memcpy(logits, s.slots[size_t(values[size_t(output)].slot)].data(), sizeof(float) * size_t(n) * d.c);
  if (profile) {
    std::lock_guard<std::mutex> lock(prof_mutex);
    for (size_t si = 0; si < steps.size(); ++si) {
      prof[si].thread_ms += s.step_ms[si];
      prof[si].images += s.step_images[si];
      prof[si].macs = s.step_macs[si];
    }
  }
}

void Runtime::Impl::run_step(const Step& st, const float* x_nchw, int n, int h, int w, Scratch& s, int inner) const {
  auto fbuf = [&](int v, size_t elems) {
    return reinterpret_cast<float*>(sized(s.slots[size_t(values[size_t(v)].slot)], elems * sizeof(float)));
  };
  auto fin = [&](int v) { return reinterpret_cast<const float*>(s.slots[size_t(values[size_t(v)].slot)].data()); };
  const Dims d = st.in.empty() ? Dims() : s.dims[size_t(st.in[0])];
  const size_t elems = size_t(n) * d.h * d.w * d.c;
  const std::string& name = st.fused.front();
  switch (st.kind) {
    case StepKind::kInput: {
      const int c = int(in_channels);
      float* x = fbuf(st.value, size_t(n) * h * w * c);
      for (int b = 0; b < n; ++b)
        for (int j = 0; j < c; ++j)
          for (int p = 0; p < h * w; ++p) x[(size_t(b) * h * w + p) * c + j] = x_nchw[(size_t(b) * c + j) * h * w + p];
      s.dims[size_t(st.value)] = Dims{h, w, c};
      break;
    }
    case StepKind::kLayer: run_layer(st, n, s, inner); break;
    case StepKind::kBatchNorm: {
      BS_CHECK(int(st.alpha.size()) == d.c, "node '", name, "': ", d.c, " channels for a BatchNorm of ", st.alpha.size());
      const float* x = fin(st.in[0]);
      float* y = fbuf(st.value, elems);
      for (size_t i = 0; i < elems; ++i) y[i] = x[i] * st.alpha[i % size_t(d.c)] + st.beta[i % size_t(d.c)];
      s.dims[size_t(st.value)] = d;
      break;
    }
    case StepKind::kAct: {
      const float* x = fin(st.in[0]);
      float* y = fbuf(st.value, elems);
      for (size_t i = 0; i < elems; ++i) y[i] = std::min(std::max(x[i], st.lo1), st.hi1);
      s.dims[size_t(st.value)] = d;
      break;
    }
    case StepKind::kAdd: {
      const Dims d1 = s.dims[size_t(st.in[1])];
      BS_CHECK(d1.h == d.h && d1.w == d.w && d1.c == d.c, "node '", name, "': adds ", d.h, " x ", d.w, " x ", d.c,
               " to ", d1.h, " x ", d1.w, " x ", d1.c, " (shape mismatch)");
      const float *x = fin(st.in[0]), *x1 = fin(st.in[1]);
      float* y = fbuf(st.value, elems);
      for (size_t i = 0; i < elems; ++i) y[i] = x[i] + x1[i];
      s.dims[size_t(st.value)] = d;
      break;
    }
    case StepKind::kMaxPool: {
      const int ho = st.pooled_dim(d.h), wo = st.pooled_dim(d.w);
      BS_CHECK(ho >= 1 && wo >= 1, "node '", name, "': a ", d.h, " x ", d.w, " input is smaller than its kernel");
      const size_t oe = size_t(n) * ho * wo * d.c;
      const auto& src = s.slots[size_t(values[size_t(st.in[0])].slot)];
      const std::vector<uint8_t> largest(size_t(d.c), 0);  // every channel's largest value
      auto pool = [&](const auto* x, auto* y) {
        for (int r = 0; r < n * ho; ++r)
          pool_row(x, r / ho, r % ho, d.h, d.w, d.c, st.kernel, st.stride, st.padding, wo, largest.data(),
                   y + size_t(r) * wo * d.c);
      };
      if (values[size_t(st.value)].codes) pool(src.data(), sized(s.slots[size_t(values[size_t(st.value)].slot)], oe));
      else pool(reinterpret_cast<const float*>(src.data()), fbuf(st.value, oe));
      s.dims[size_t(st.value)] = Dims{ho, wo, d.c};
      break;
    }
    case StepKind::kAvgPool:
      BS_CHECK(!values[size_t(st.in[0])].codes, "node '", name, "': average pooling reads codes");
      global_avg_pool(fin(st.in[0]), n, d.h * d.w, d.c, fbuf(st.value, size_t(n) * d.c));
      s.dims[size_t(st.value)] = Dims{1, 1, d.c};
      break;
    case StepKind::kFlatten:
      BS_CHECK(d.h == 1 && d.w == 1, "node '", name, "': flattens a ", d.h, " x ", d.w, " map");
      s.dims[size_t(st.value)] = d;
      break;
  }
}

// ---------------------------------------------------------------------------------------------

Runtime::Runtime(const Artifact& model, RuntimeOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->isa = options.isa == QgemmIsa::kAuto ? qgemm_auto_isa(false) : options.isa;
  BS_CHECK(qgemm_isa_supported(impl_->isa), "GEMM path '", qgemm_isa_name(impl_->isa), "' is not supported on this CPU");
  if (model.master) impl_->prepare(switch_uniform(model, model.high_bits, options.threads));
  else impl_->prepare(model);
  impl_->threads = options.threads > 0 ? options.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  // AVX2 without VNNI: short-K layers use the pair-panel GEMM (qgemm_pairs.h), where it beats
  // the row GEMMs: up to K = 576 at 8 bits; below K = 256 at lower widths (from there the
  // vpmaddubsw row kernel for narrow codes is faster).
  // (With unpack_in_gemm, low-bit layers keep the row GEMM that unpacks in its K loop.)
  if (impl_->isa == QgemmIsa::kAvx2 && qgemm_pairs_supported())
    for (auto& o : impl_->layers) {
      if (!o.integer || o.depthwise || o.K() > (o.bits == 8 ? 576 : 255)) continue;
      if (o.bits != 8 && options.unpack_in_gemm) continue;
      o.pairs = true;
      if (o.bits != 8) continue;
      o.wpairs.resize(qgemm_pairs_bytes(o.out, o.K()));
      qgemm_pairs_from_rows(reinterpret_cast<const int8_t*>(o.wq.data()), o.out, o.K(), o.wpairs.data());
      impl_->weight_bytes += o.wpairs.size();
      impl_->weight_bytes -= o.wq.size();
      std::vector<uint8_t>().swap(o.wq);
    }
  if (impl_->isa == QgemmIsa::kAvx512Vnni)
    for (const auto& st : impl_->steps) {
      if (st.kind != StepKind::kLayer) continue;
      Layer& o = impl_->layers[size_t(st.layer)];
      const Value& vi = impl_->values[size_t(st.in[0])];
      const bool quantizes_here = !vi.codes && !vi.twin_serves(o.in_q);
      if (!o.integer || o.depthwise || o.linear || o.groups != 1 || (o.kernel * o.in) % 4 == 0 || !quantizes_here)
        continue;
      const int row = o.kernel * o.in, kp = (row + 3) / 4 * 4, K = o.K();
      std::vector<int8_t> codes(size_t(o.out) * K), padded(size_t(o.out) * o.kernel * kp, 0);
      if (o.bits == 8) std::memcpy(codes.data(), o.wq.data(), codes.size());
      else unpack_rows_into(o.wq.data(), 0, size_t(o.out), size_t(K), o.bits, codes.data());
      for (int j = 0; j < o.out; ++j)
        for (int ky = 0; ky < o.kernel; ++ky)
          std::memcpy(&padded[(size_t(j) * o.kernel + ky) * kp], &codes[(size_t(j) * o.kernel + ky) * row], size_t(row));
      impl_->weight_bytes -= o.wq.size();
      o.kpad = kp;
      if (o.bits == 8) o.wq.assign(padded.begin(), padded.end());
      else o.wq = pack_rows(padded.data(), size_t(o.out), size_t(o.K()), o.bits);
      impl_->weight_bytes += o.wq.size();
    }
  for (auto& o : impl_->layers) {
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
  // In-GEMM unpacking: the VBMI panel kernel where the CPU has it, else the row GEMM's packed path.
  impl_->unpack_in_gemm = options.unpack_in_gemm;
  BS_CHECK(options.tile >= 0, "runtime tile must be >= 0 (0: up to 4 images), not ", options.tile);
  impl_->tile = options.tile;
  impl_->profile = options.profile;
  if (impl_->profile) reset_profile();
}

Runtime::~Runtime() = default;
Runtime::Runtime(Runtime&&) noexcept = default;
Runtime& Runtime::operator=(Runtime&&) noexcept = default;

int64_t Runtime::num_classes() const { return impl_->num_classes; }
int64_t Runtime::in_channels() const { return impl_->in_channels; }
int Runtime::threads() const { return impl_->threads; }
QgemmIsa Runtime::isa() const { return impl_->isa; }
size_t Runtime::weight_bytes() const { return impl_->weight_bytes; }

std::vector<std::string> Runtime::plan() const {
  static const char* kinds[] = {"input", "layer", "batchnorm", "act", "add", "maxpool", "avgpool", "flatten"};
  std::vector<std::string> out;
  for (const auto& st : impl_->steps) {
    std::ostringstream os;
    os << kinds[int(st.kind)] << " [";
    for (size_t i = 0; i < st.fused.size(); ++i) os << (i ? " -> " : "") << st.fused[i];
    os << "]";
    if (st.kind == StepKind::kLayer) {
      const Layer& o = impl_->layers[size_t(st.layer)];
      os << (o.integer ? (o.depthwise ? " int depthwise" : " int gemm") : " fp64") << " w" << (o.integer ? o.bits : 32);
      if (o.integer) os << (o.in_q.offset ? " in:s" : " in:u") << int(std::lround(std::log2(o.in_q.hi - o.in_q.lo + 1)));
    }
    const Value& v = impl_->values[size_t(st.value)];
    os << " -> " << (v.codes ? "codes" : "float") << " buf" << v.slot;
    if (v.twin_slot >= 0) os << " + codes buf" << v.twin_slot;
    out.push_back(os.str());
  }
  return out;
}

std::vector<StepProfile> Runtime::profile() const {
  std::lock_guard<std::mutex> lock(impl_->prof_mutex);
  return impl_->prof;
}

void Runtime::reset_profile() {
  const std::vector<std::string> lines = plan();
  std::lock_guard<std::mutex> lock(impl_->prof_mutex);
  impl_->prof.assign(lines.size() + 1, StepProfile());
  for (size_t i = 0; i < lines.size(); ++i) impl_->prof[i].step = lines[i];
  impl_->prof.back().step = "unpack";
  if (!impl_->profile) impl_->prof.clear();
}

std::vector<float> Runtime::forward(const float* images, int n, int height, int width) const {
  std::vector<float> logits(size_t(n) * size_t(num_classes()));
  forward(images, n, height, width, logits.data());
  return logits;
}

void Runtime::forward(const float* images, int n, int height, int width, float* logits) const {
  BS_CHECK(n >= 0 && height > 0 && width > 0, "runtime: bad input size ", n, " x ", height, " x ", width);
  if (n == 0) return;
  const Impl& im = *impl_;
  const size_t in_elems = size_t(im.in_channels) * height * width;
  const size_t out_elems = size_t(im.num_classes);
  const int T = im.threads;
  // Default tile: up to 4 images, fewer when that would leave a thread without its share.
  const int tile = im.tile > 0 ? im.tile : std::clamp((n + T - 1) / T, 1, 4);
  // Packed low-bit weights stay packed; for this call they are unpacked once (many images) or
  // layer by layer into the scratch (few images: the row GEMMs' layers).
  const bool few = n < T * 2;
  const Impl::MemoryLease lease(im);
  Impl::CallMemory* mem = lease.mem.get();
  mem->scratch.resize(size_t(T));
  const auto t0 = std::chrono::steady_clock::now();
  im.unpack_all(/*rows=*/!few, mem->unpacked);
  if (im.profile) {
    std::lock_guard<std::mutex> lock(im.prof_mutex);
    im.prof.back().thread_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    im.prof.back().images += n;
  }
  for (auto& s : mem->scratch) s.unpacked = &mem->unpacked;
  if (few) {
    // Few images: one tile at a time, GEMM rows split over the threads.
    Scratch& s = mem->scratch[0];
    for (int b = 0; b < n; b += tile) {
      const int m = std::min(tile, n - b);
      im.forward_tile(images + size_t(b) * in_elems, m, height, width, logits + size_t(b) * out_elems, s, T);
    }
    return;
  }
  // Many images: each thread runs whole tiles (no synchronisation inside the network).
  const int tiles = (n + tile - 1) / tile;
  std::string error;
#pragma omp parallel num_threads(T)
  {
    Scratch& s = mem->scratch[size_t(omp_get_thread_num())];
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < tiles; ++t) {
      const int b = t * tile, m = std::min(tile, n - b);
      try {
        im.forward_tile(images + size_t(b) * in_elems, m, height, width, logits + size_t(b) * out_elems, s, 1);
      } catch (const Error& e) {
#pragma omp critical
        error = e.what();
      }
    }
  }
  BS_CHECK(error.empty(), error);
}

}  // namespace bitswitch::deploy
