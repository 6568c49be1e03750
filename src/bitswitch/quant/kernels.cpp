// Fused CPU kernels of the Double Rounding fake-quantizers (SPEC.md Sec. 2; paper Sec. 3.1).
// Forward: one pass producing the fake-quantized output. Backward: one pass over (x, grad)
// producing the input gradient and the scale-gradient sum. The inner loops are compiled for
// AVX-512, AVX2 and baseline x86-64 and picked at run time (GCC target_clones); chunked
// partial sums make the scale gradient independent of the thread count.
// The composed-ATen reference in fake_quant.cpp defines the expected results.
#include <ATen/Parallel.h>
#include <torch/types.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define BS_HAVE_X86_INTRINSICS 1
#endif

#include "bitswitch/quant/fake_quant.h"
#include "bitswitch/util/cpu_features.h"
#include "bitswitch/util/error.h"
#if BITSWITCH_CUDA_KERNELS
#include "bitswitch/quant/cuda/fused_cuda.h"  // CUDA tensors (CMake option BITSWITCH_CUDA)
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BS_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BS_MULTIVERSION
#endif

namespace bitswitch::quant::detail {
namespace {

constexpr int64_t kChunk = 16384;  // elements per partial sum (fixed: deterministic results)
constexpr int64_t kBlock = 1024;   // elements per float partial sum inside a chunk

// ---- activations: unsigned, range [0, qp] ----

BS_MULTIVERSION
void act_fwd_span(const float* __restrict x, float* __restrict y, int64_t n, float inv, float a,
                  float qp) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    y[i] = act_code(x[i], inv, qp) * a;
  }
}

// `relu`: x is the input of a ReLU fused into the quantizer (fake_quant_act), so v <= 0 is below
// the range: no input gradient where the ReLU's is zero, v == 0 included.
BS_MULTIVERSION
double act_bwd_span_portable(const float* __restrict g, const float* __restrict x, float* __restrict gx,
                    int64_t n, float inv, float qp, bool relu) {
  // Float sums over short blocks (vectorised), double across blocks.
  double acc = 0.0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t end = std::min(n, b + kBlock);
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = b; i < end; ++i) {
      const float v = x[i] * inv;
      const bool below = relu ? v <= 0.0f : v < 0.0f;
      const bool above = v > qp;
      const float q = round_half_even_small(std::min(std::max(v, 0.0f), qp));
      const float e = below ? 0.0f : (above ? qp : q - v);
      // A multiply keeps the store unconditional (no masked store).
      gx[i] = g[i] * static_cast<float>(!(below || above));
      s += g[i] * e;
    }
    acc += s;
  }
  return acc;
}

// ---- weights: signed, per channel, double rounding h -> l ----

struct WeightParams {
  float inv;       // 1 / s
  float seff;      // s * 2^d
  float pow2neg;   // 2^-d
  float qmin_h, qmax_h;
  int32_t qmin_l, qmax_l;
  int d;
  int32_t half;    // second_round_offset(d, rounding)
};

// The l-bit code of v_h = w / s: first rounding to h bits, then the integer second rounding
// (double_rounding.h's definitions, with the loop-invariant bounds and offset precomputed).
inline int32_t low_code(float vh, const WeightParams& p) {
  const int32_t q = static_cast<int32_t>(round_half_even_small(std::min(std::max(vh, p.qmin_h), p.qmax_h)));
  return std::min(std::max(second_round(q, p.d, p.half), p.qmin_l), p.qmax_l);
}

BS_MULTIVERSION
void weight_fwd_span(const float* __restrict w, float* __restrict y, int64_t n,
                     const WeightParams p) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    y[i] = static_cast<float>(low_code(w[i] * p.inv, p)) * p.seff;
  }
}

BS_MULTIVERSION
double weight_bwd_span_portable(const float* __restrict g, const float* __restrict w,
                       float* __restrict gw, int64_t n, const WeightParams p) {
  const float qn = static_cast<float>(p.qmin_l), qp = static_cast<float>(p.qmax_l);
  double acc = 0.0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t end = std::min(n, b + kBlock);
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = b; i < end; ++i) {
      const float vh = w[i] * p.inv;
      const float v = vh * p.pow2neg;
      const int32_t q = low_code(vh, p);
      const bool below = v < qn;
      const bool above = v > qp;
      const float e = below ? qn : (above ? qp : static_cast<float>(q) - v);
      gw[i] = g[i] * static_cast<float>(!(below || above));  // unconditional store
      s += g[i] * e;
    }
    acc += s;
  }
  return acc;
}

// ---- explicit AVX-512 backward kernels ----
// The portable loops above vectorise, yet GCC 12 turns their selects + reduction into code that
// runs ~8x slower than these intrinsics on this machine (AMD Zen 4); the results are the same:
// identical dx and the scale-gradient sum with a different (fixed) summation order.
#ifdef BS_HAVE_X86_INTRINSICS
__attribute__((target("avx512f"))) double act_bwd_span_avx512(const float* __restrict g,
                                                              const float* __restrict x,
                                                              float* __restrict gx, int64_t n,
                                                              float inv, float qp, bool relu) {
  const __m512 vinv = _mm512_set1_ps(inv), vqp = _mm512_set1_ps(qp), zero = _mm512_setzero_ps();
  __m512 acc = zero;
  double total = 0.0;
  int64_t i = 0;
  int count = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), vinv);
    const __m512 gv = _mm512_loadu_ps(g + i);
    const __m512 vc = _mm512_min_ps(_mm512_max_ps(v, zero), vqp);
    const __m512 q = _mm512_roundscale_ps(vc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __mmask16 inside = _mm512_cmp_ps_mask(v, vc, _CMP_EQ_OQ);
    if (relu) inside = _mm512_mask_cmp_ps_mask(inside, v, zero, _CMP_GT_OQ);
    // e = q - v inside, the clamped value (0 below, Qp above) outside.
    const __m512 e = _mm512_mask_blend_ps(inside, vc, _mm512_sub_ps(q, v));
    _mm512_storeu_ps(gx + i, _mm512_maskz_mov_ps(inside, gv));
    acc = _mm512_fmadd_ps(gv, e, acc);
    if (++count == 64) {
      total += _mm512_reduce_add_ps(acc);
      acc = zero;
      count = 0;
    }
  }
  total += _mm512_reduce_add_ps(acc);
  return total + act_bwd_span_portable(g + i, x + i, gx + i, n - i, inv, qp, relu);
}

__attribute__((target("avx512f"))) double weight_bwd_span_avx512(const float* __restrict g,
                                                                 const float* __restrict w,
                                                                 float* __restrict gw, int64_t n,
                                                                 const WeightParams p) {
  const __m512 vinv = _mm512_set1_ps(p.inv), vpow = _mm512_set1_ps(p.pow2neg);
  const __m512 qminh = _mm512_set1_ps(p.qmin_h), qmaxh = _mm512_set1_ps(p.qmax_h);
  const __m512 qn = _mm512_set1_ps(float(p.qmin_l)), qp = _mm512_set1_ps(float(p.qmax_l));
  const __m512i half = _mm512_set1_epi32(p.half), iqn = _mm512_set1_epi32(p.qmin_l), iqp = _mm512_set1_epi32(p.qmax_l);
  const __m128i shift = _mm_cvtsi32_si128(p.d);
  __m512 acc = _mm512_setzero_ps();
  double total = 0.0;
  int64_t i = 0;
  int count = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 vh = _mm512_mul_ps(_mm512_loadu_ps(w + i), vinv);
    const __m512 v = _mm512_mul_ps(vh, vpow);
    const __m512 gv = _mm512_loadu_ps(g + i);
    const __m512 vhc = _mm512_min_ps(_mm512_max_ps(vh, qminh), qmaxh);
    __m512i q = _mm512_cvtps_epi32(_mm512_roundscale_ps(vhc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    q = _mm512_sra_epi32(_mm512_add_epi32(q, half), shift);
    q = _mm512_min_epi32(_mm512_max_epi32(q, iqn), iqp);
    const __m512 vc = _mm512_min_ps(_mm512_max_ps(v, qn), qp);
    const __mmask16 inside = _mm512_cmp_ps_mask(v, vc, _CMP_EQ_OQ);
    const __m512 e = _mm512_mask_blend_ps(inside, vc, _mm512_sub_ps(_mm512_cvtepi32_ps(q), v));
    _mm512_storeu_ps(gw + i, _mm512_maskz_mov_ps(inside, gv));
    acc = _mm512_fmadd_ps(gv, e, acc);
    if (++count == 64) {
      total += _mm512_reduce_add_ps(acc);
      acc = _mm512_setzero_ps();
      count = 0;
    }
  }
  total += _mm512_reduce_add_ps(acc);
  return total + weight_bwd_span_portable(g + i, w + i, gw + i, n - i, p);
}
#endif

// BITSWITCH_QUANT_ISA=portable (or detail::force_portable_kernels) skips the explicit AVX-512
// backward kernels, so the portable loops run whole tensors: what a CPU without AVX-512 runs.
// Read at start-up, so a bad value is a warning rather than an exception before main().
std::atomic<bool> g_force_portable{[] {
  const char* v = std::getenv("BITSWITCH_QUANT_ISA");
  if (v == nullptr || *v == '\0') return false;
  const std::string s(v);
  if (s != "portable" && s != "auto")
    std::fprintf(stderr, "bitswitch: ignoring BITSWITCH_QUANT_ISA='%s' (expected 'portable' or 'auto')\n", v);
  return s == "portable";
}()};

bool use_avx512() { return avx512_backward_available() && !g_force_portable.load(std::memory_order_relaxed); }

// How many backward spans each path ran (BackwardPathCounts in fake_quant.h): one relaxed
// increment per span of up to kChunk elements or per weight channel.
std::atomic<int64_t> g_spans_avx512{0}, g_spans_portable{0};

double act_bwd_span(const float* g, const float* x, float* gx, int64_t n, float inv, float qp, bool relu) {
#ifdef BS_HAVE_X86_INTRINSICS
  if (use_avx512()) {
    g_spans_avx512.fetch_add(1, std::memory_order_relaxed);
    return act_bwd_span_avx512(g, x, gx, n, inv, qp, relu);
  }
#endif
  g_spans_portable.fetch_add(1, std::memory_order_relaxed);
  return act_bwd_span_portable(g, x, gx, n, inv, qp, relu);
}

double weight_bwd_span(const float* g, const float* w, float* gw, int64_t n, const WeightParams& p) {
#ifdef BS_HAVE_X86_INTRINSICS
  if (use_avx512()) {
    g_spans_avx512.fetch_add(1, std::memory_order_relaxed);
    return weight_bwd_span_avx512(g, w, gw, n, p);
  }
#endif
  g_spans_portable.fetch_add(1, std::memory_order_relaxed);
  return weight_bwd_span_portable(g, w, gw, n, p);
}

WeightParams weight_params(float s, const WeightQuantSpec& spec) {
  WeightParams p;
  p.d = spec.high_bits - spec.bits;
  p.inv = 1.0f / s;
  p.seff = std::ldexp(s, p.d);
  p.pow2neg = std::ldexp(1.0f, -p.d);
  p.qmin_h = static_cast<float>(signed_qmin(spec.high_bits));
  p.qmax_h = static_cast<float>(signed_qmax(spec.high_bits));
  p.qmin_l = signed_qmin(spec.bits);
  p.qmax_l = signed_qmax(spec.bits);
  p.half = second_round_offset(p.d, spec.rounding);
  return p;
}

// The kernels work on the raw buffer, so any dense layout whose first dimension is outermost
// will do: NCHW or channels-last (NHWC) tensors keep their layout, and a gradient is brought to
// its input's layout. Other strides are made contiguous.
#if BITSWITCH_CUDA_KERNELS
constexpr bool kCudaKernels = true;
#else
constexpr bool kCudaKernels = false;
#endif

c10::MemoryFormat layout_of(const torch::Tensor& t) {
  return t.dim() == 4 ? t.suggest_memory_format() : c10::MemoryFormat::Contiguous;
}

void check_fused(const torch::Tensor& t, const char* what) {
  BS_CHECK(fused_supported(t), "fused quantizer kernel needs a float32 CPU tensor",
           (kCudaKernels ? " (or a CUDA one: BITSWITCH_CUDA build)" : ""), " for `", what,
           "`, got ", t.scalar_type(), " on ", t.device());
}

}  // namespace

void force_portable_kernels(bool on) { g_force_portable.store(on, std::memory_order_relaxed); }

bool avx512_backward_available() { return cpu::features().avx512f; }

int kernel_threads(int64_t n) {
  std::atomic<int> used{0};
  at::parallel_for(0, (n + kChunk - 1) / kChunk, 1, [&](int64_t, int64_t) {
    used.fetch_add(1, std::memory_order_relaxed);
  });
  return used.load();
}

BackwardPathCounts backward_path_counts() {
  return {g_spans_avx512.load(std::memory_order_relaxed), g_spans_portable.load(std::memory_order_relaxed)};
}

bool fused_supported(const torch::Tensor& t) {
  return (t.device().is_cpu() || (kCudaKernels && t.is_cuda())) && t.scalar_type() == torch::kFloat32 && !t.is_sparse();
}

torch::Tensor act_forward_fused(const torch::Tensor& x_in, const torch::Tensor& scale, int bits) {
  check_fused(x_in, "x");
  const auto x = x_in.contiguous(layout_of(x_in));
#if BITSWITCH_CUDA_KERNELS
  if (x.is_cuda()) return cuda::act_forward(x, scale, bits);
#endif
  auto y = torch::empty_like(x);
  const float a = scale.item<float>();
  const float inv = 1.0f / a, qp = static_cast<float>(unsigned_qmax(bits));
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, x.numel(), kChunk, [&](int64_t b, int64_t e) {
    act_fwd_span(xp + b, yp + b, e - b, inv, a, qp);
  });
  return y;
}

std::pair<torch::Tensor, torch::Tensor> act_backward_fused(const torch::Tensor& grad_in,
                                                           const torch::Tensor& x_in,
                                                           const torch::Tensor& scale, int bits, bool relu) {
  check_fused(x_in, "x");
  check_fused(grad_in, "grad");
  const auto x = x_in.contiguous(layout_of(x_in));
  const auto g = grad_in.contiguous(layout_of(x));
  const int64_t n = x.numel();
  const double gscale = lsq_grad_scale(n, unsigned_qmax(bits));
#if BITSWITCH_CUDA_KERNELS
  if (x.is_cuda()) return cuda::act_backward(g, x, scale, bits, relu, gscale);
#endif
  auto gx = torch::empty_like(x);
  const float a = scale.item<float>();
  const float inv = 1.0f / a, qp = static_cast<float>(unsigned_qmax(bits));
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  const float* xp = x.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  float* gxp = gx.data_ptr<float>();
  at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t b = c * kChunk, e = std::min(n, b + kChunk);
      partial[c] = act_bwd_span(gp + b, xp + b, gxp + b, e - b, inv, qp, relu);
    }
  });
  double acc = 0.0;
  for (double v : partial) acc += v;
  auto gs = torch::full_like(scale, static_cast<float>(acc * gscale));
  return {gx, gs};
}

torch::Tensor weight_forward_fused(const torch::Tensor& w_in, const torch::Tensor& scale_in,
                                   const WeightQuantSpec& spec) {
  check_fused(w_in, "w");
  const auto w = w_in.contiguous(layout_of(w_in));
  const auto scale = scale_in.contiguous().to(torch::kFloat32);
#if BITSWITCH_CUDA_KERNELS
  if (w.is_cuda()) return cuda::weight_forward(w, scale, spec);
#endif
  auto y = torch::empty_like(w);
  const int64_t channels = w.size(0);
  const int64_t per = channels ? w.numel() / channels : 0;
  const float* wp = w.data_ptr<float>();
  const float* sp = scale.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, kChunk / std::max<int64_t>(per, 1));
  at::parallel_for(0, channels, grain, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c)
      weight_fwd_span(wp + c * per, yp + c * per, per, weight_params(sp[c], spec));
  });
  return y;
}

std::pair<torch::Tensor, torch::Tensor> weight_backward_fused(const torch::Tensor& grad_in,
                                                              const torch::Tensor& w_in,
                                                              const torch::Tensor& scale_in,
                                                              const WeightQuantSpec& spec) {
  check_fused(w_in, "w");
  check_fused(grad_in, "grad");
  const auto w = w_in.contiguous(layout_of(w_in));
  const auto g = grad_in.contiguous(layout_of(w));
  const auto scale = scale_in.contiguous().to(torch::kFloat32);
  auto gw = torch::empty_like(w);
  auto gs = torch::empty({w.size(0)}, scale.options());
  const int64_t channels = w.size(0);
  const int64_t per = channels ? w.numel() / channels : 0;
  const double gscale = weight_grad_scale(per, spec);
#if BITSWITCH_CUDA_KERNELS
  if (w.is_cuda()) {
    auto r = cuda::weight_backward(g, w, scale, spec, gscale);
    return {r.first, r.second.view(scale_in.sizes())};
  }
#endif
  const float* wp = w.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  const float* sp = scale.data_ptr<float>();
  float* gwp = gw.data_ptr<float>();
  float* gsp = gs.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, kChunk / std::max<int64_t>(per, 1));
  at::parallel_for(0, channels, grain, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const double acc =
          weight_bwd_span(gp + c * per, wp + c * per, gwp + c * per, per, weight_params(sp[c], spec));
      gsp[c] = static_cast<float>(acc * gscale);
    }
  });
  return {gw, gs.view(scale_in.sizes())};
}

}  // namespace bitswitch::quant::detail
