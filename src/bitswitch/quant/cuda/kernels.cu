// Fused CUDA kernels of the Double Rounding fake-quantizers (SPEC.md Sec. 2; paper Sec. 3.1,
// LSQ gradients of Esser et al. 2020). See kernels.h. Each element is computed by the same
// scalar definitions as on the CPU (quant/double_rounding.h: weight_code, derive_code,
// act_code), in the same order of float operations as the CPU kernels (quant/kernels.cpp);
// products and differences that the CPU rounds separately use __fmul_rn/__fsub_rn so that nvcc
// does not contract them into fused multiply-adds.
//
// Work split: one thread block per tile of kTile elements of one channel (an activation tensor
// is one channel), kThreads threads, kTile / kThreads elements per thread, coalesced. Backward:
// each block sums its tile's g * e (float per thread, double across the block) into one double;
// a channel with one tile writes its scale gradient directly, otherwise a second kernel adds the
// tiles' partial sums in index order. Nothing depends on the GPU's size: results are the same on
// every run and every GPU.
#include "bitswitch/quant/cuda/kernels.h"

#include <cuda_runtime.h>

#include "bitswitch/quant/double_rounding.h"

namespace bitswitch::quant::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = static_cast<int>(kTile / kThreads);
static_assert(kTile % kThreads == 0, "a tile is a whole number of rounds of the block");

// ---- element operations: the CPU kernels' loop bodies ----

struct ActArgs {
  float qp;
  bool relu;
};

struct ActOp {
  float a, inv, qp;
  bool relu;
  __device__ ActOp(const float* scale, int64_t /*channel*/, ActArgs args)
      : a(scale[0]), inv(1.0f / scale[0]), qp(args.qp), relu(args.relu) {}
  __device__ float forward(float x) const { return __fmul_rn(act_code(x, inv, qp), a); }
  // Returns g * e (the scale-gradient term) and stores the input gradient.
  __device__ float backward(float g, float x, float* gx) const {
    const float v = __fmul_rn(x, inv);
    const bool below = relu ? v <= 0.0f : v < 0.0f;
    const bool above = v > qp;
    const float q = round_half_even_small(std::min(std::max(v, 0.0f), qp));
    const float e = below ? 0.0f : (above ? qp : __fsub_rn(q, v));
    *gx = __fmul_rn(g, static_cast<float>(!(below || above)));
    return __fmul_rn(g, e);
  }
};

struct WeightOp {
  float inv, seff, pow2neg;
  int high, bits;
  SecondRounding mode;
  __device__ WeightOp(const float* scale, int64_t channel, WeightArgs args)
      : high(args.high_bits), bits(args.bits), mode(static_cast<SecondRounding>(args.rounding)) {
    const float s = scale[channel];
    const int d = args.high_bits - args.bits;
    inv = 1.0f / s;
    seff = ldexpf(s, d);
    pow2neg = ldexpf(1.0f, -d);
  }
  __device__ int32_t low_code(float w) const { return derive_code(weight_code(w, inv, high), high, bits, mode); }
  __device__ float forward(float w) const { return __fmul_rn(static_cast<float>(low_code(w)), seff); }
  __device__ float backward(float g, float w, float* gw) const {
    const float qn = static_cast<float>(signed_qmin(bits)), qp = static_cast<float>(signed_qmax(bits));
    const float v = __fmul_rn(__fmul_rn(w, inv), pow2neg);
    const bool below = v < qn;
    const bool above = v > qp;
    const float e = below ? qn : (above ? qp : __fsub_rn(static_cast<float>(low_code(w)), v));
    *gw = __fmul_rn(g, static_cast<float>(!(below || above)));
    return __fmul_rn(g, e);
  }
};

// ---- kernels ----

// Sum over the block in a fixed order; the result is valid in thread 0.
__device__ double block_sum(double v) {
  __shared__ double warp_sums[kThreads / 32];
  for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? warp_sums[lane] : 0.0;
    for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  }
  return v;
}

template <class Op, class Args>
__global__ void __launch_bounds__(kThreads) forward_kernel(const float* __restrict__ x, float* __restrict__ y,
                                                           int64_t per, int64_t tiles,
                                                           const float* __restrict__ scale, Args args) {
  const int64_t c = blockIdx.x / tiles, t = blockIdx.x % tiles;
  const Op op(scale, c, args);
  const int64_t begin = t * kTile, end = per < begin + kTile ? per : begin + kTile;
  const float* xc = x + c * per;
  float* yc = y + c * per;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = begin + k * kThreads + threadIdx.x;
    if (i < end) yc[i] = op.forward(xc[i]);
  }
}

template <class Op, class Args>
__global__ void __launch_bounds__(kThreads) backward_kernel(const float* __restrict__ g, const float* __restrict__ x,
                                                            float* __restrict__ gx, int64_t per, int64_t tiles,
                                                            const float* __restrict__ scale, Args args,
                                                            double* __restrict__ partial,
                                                            float* __restrict__ grad_scale, double gscale) {
  const int64_t c = blockIdx.x / tiles, t = blockIdx.x % tiles;
  const Op op(scale, c, args);
  const int64_t begin = t * kTile, end = per < begin + kTile ? per : begin + kTile;
  const float* gc = g + c * per;
  const float* xc = x + c * per;
  float* gxc = gx + c * per;
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = begin + k * kThreads + threadIdx.x;
    if (i < end) s += op.backward(gc[i], xc[i], gxc + i);
  }
  const double total = block_sum(static_cast<double>(s));
  if (threadIdx.x == 0) {
    if (tiles == 1) grad_scale[c] = static_cast<float>(total * gscale);
    else partial[blockIdx.x] = total;
  }
}

// One block per channel: the channel's tile sums in index order (strided per thread, then the
// fixed tree of block_sum).
__global__ void __launch_bounds__(kThreads) reduce_tiles_kernel(const double* __restrict__ partial, int64_t tiles,
                                                                float* __restrict__ grad_scale, double gscale) {
  const int64_t c = blockIdx.x;
  double v = 0.0;
  for (int64_t t = threadIdx.x; t < tiles; t += kThreads) v += partial[c * tiles + t];
  const double total = block_sum(v);
  if (threadIdx.x == 0) grad_scale[c] = static_cast<float>(total * gscale);
}

// ---- launchers ----

constexpr int64_t kMaxBlocks = 2147483647;  // gridDim.x

cudaError_t check_grid(int64_t blocks) {
  return blocks > kMaxBlocks ? cudaErrorInvalidConfiguration : cudaSuccess;
}

template <class Op, class Args>
cudaError_t launch_forward(const float* x, float* y, int64_t channels, int64_t per, const float* scale, Args args,
                           cudaStream_t stream) {
  if (channels == 0 || per == 0) return cudaSuccess;
  const int64_t tiles = tiles_per_channel(per), blocks = channels * tiles;
  if (auto e = check_grid(blocks); e != cudaSuccess) return e;
  forward_kernel<Op, Args><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, y, per, tiles, scale, args);
  return cudaGetLastError();
}

template <class Op, class Args>
cudaError_t launch_backward(const float* g, const float* x, float* gx, float* grad_scale, double* partial,
                            int64_t channels, int64_t per, const float* scale, Args args, double gscale,
                            cudaStream_t stream) {
  if (channels == 0) return cudaSuccess;
  if (per == 0) return cudaMemsetAsync(grad_scale, 0, sizeof(float) * channels, stream);
  const int64_t tiles = tiles_per_channel(per), blocks = channels * tiles;
  if (auto e = check_grid(blocks); e != cudaSuccess) return e;
  backward_kernel<Op, Args><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(g, x, gx, per, tiles, scale, args,
                                                                                   partial, grad_scale, gscale);
  if (auto e = cudaGetLastError(); e != cudaSuccess || tiles == 1) return e;
  reduce_tiles_kernel<<<static_cast<unsigned>(channels), kThreads, 0, stream>>>(partial, tiles, grad_scale, gscale);
  return cudaGetLastError();
}

}  // namespace

cudaError_t act_forward(const float* x, float* y, int64_t n, const float* scale, int bits, cudaStream_t stream) {
  const ActArgs args{static_cast<float>(unsigned_qmax(bits)), false};
  return launch_forward<ActOp>(x, y, 1, n, scale, args, stream);
}

cudaError_t act_backward(const float* g, const float* x, float* gx, float* grad_scale, double* partial, int64_t n,
                         const float* scale, int bits, bool relu, double gscale, cudaStream_t stream) {
  const ActArgs args{static_cast<float>(unsigned_qmax(bits)), relu};
  return launch_backward<ActOp>(g, x, gx, grad_scale, partial, 1, n, scale, args, gscale, stream);
}

cudaError_t weight_forward(const float* w, float* y, int64_t channels, int64_t per, const float* scale,
                           WeightArgs args, cudaStream_t stream) {
  return launch_forward<WeightOp>(w, y, channels, per, scale, args, stream);
}

cudaError_t weight_backward(const float* g, const float* w, float* gw, float* grad_scale, double* partial,
                            int64_t channels, int64_t per, const float* scale, WeightArgs args, double gscale,
                            cudaStream_t stream) {
  return launch_backward<WeightOp>(g, w, gw, grad_scale, partial, channels, per, scale, args, gscale, stream);
}

}  // namespace bitswitch::quant::cuda
