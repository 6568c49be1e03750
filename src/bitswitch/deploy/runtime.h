// The integer runtime: inference from a switched artifact with integer arithmetic, no LibTorch.
// (SPEC.md Sec. 7; paper Sec. 3.1: the deployed l-bit model is the trained l-bit model.)
//
// The runtime interprets the artifact's op graph (format/graph.h); it knows no architecture.
// At load it fuses every conv/linear with the nodes that only it feeds: BatchNorm, ReLU/ReLU6, a
// residual add (and the ReLU after it), and the next layers' input quantizer. Every quantized
// conv/linear then runs as: input activation codes (unsigned: clamp(x / a, 0, 2^b - 1); signed:
// clamp(x / a, -2^(b-1), 2^(b-1) - 1), stored +128 as u8; both rounded half to even, exactly the
// training quantizer), int8 or bit-packed l-bit weight codes, an integer GEMM with int32
// accumulation (qgemm.h: AVX-512 VNNI / AVX2 / scalar chosen at run time; 1x1 convs read the
// activations in place; depthwise convs use dwconv.h), plus the signed-input correction
// -128 sum_k w (exact), then a per-channel epilogue with BN folded in:
// y = (acc * a s_c + bias_c) * alpha_c + beta_c, alpha_c = gamma_c / sqrt(var_c + eps),
// beta_c = beta_bn_c - mean_c alpha_c, then the activations, the residual add, and either the
// next layer's codes or float32. Full-precision layers (the FP first conv and last linear) run in
// double and are rounded to float once. This is the arithmetic of nn::set_integer_eval, so the
// outputs match the integer-exact evaluation of the checkpoint up to the summation order of
// global average pooling (tests/test_deploy_equivalence.cpp).
//
// Values live in buffers planned at load (a buffer is reused once its value is dead).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "bitswitch/deploy/artifact.h"
#include "bitswitch/deploy/qgemm.h"

namespace bitswitch::deploy {

struct RuntimeOptions {
  int threads = 0;                   // 0: all hardware threads
  QgemmIsa isa = QgemmIsa::kAuto;    // force a GEMM path (tests, benchmarks)
  // Images per working tile of one thread; 0: up to 4, fewer when a thread would otherwise go
  // without its share of the batch. Within a tile of large images (over 256 KiB as floats, e.g.
  // 224x224x3) each image runs alone through the layers before the first whose input is at most
  // 1/1024 of the image's pixels (7x7 at 224x224), so their megabyte activations stay in the
  // caches; the later layers run on the whole tile.
  int tile = 0;
  // Low-bit weights stay bit-packed in memory (in panel order on AVX-512 VNNI + VBMI CPUs, in rows
  // otherwise). By default each inference call unpacks them once into int8 panels or rows shared
  // by its tiles; with unpack_in_gemm the GEMM unpacks them inside its K loop instead (less
  // memory, slower: on Zen 4 with VBMI, and on AVX2 where it costs ~1.3-1.5x at ImageNet shapes).
  bool unpack_in_gemm = false;
  // Time every step of the plan (two clock reads per step and tile); read with Runtime::profile().
  bool profile = false;
};

// One step of the plan as timed by a profiling runtime (RuntimeOptions::profile), summed over the
// forward calls since the runtime was made or last reset.
struct StepProfile {
  std::string step;      // the plan line of the step (Runtime::plan())
  int64_t macs = 0;      // multiply-accumulates per image (conv/linear steps; 0 for the others)
  double thread_ms = 0;  // wall time summed over the threads that ran the step
  int64_t images = 0;    // images the step ran on
};

// Throws bitswitch::Error naming the layer and the reason when `a` holds something the runtime
// cannot run (a grouped conv that is not depthwise, a depthwise conv on a float input, ...).
// `bitswitch export` calls it, so such a model is refused at export time.
void check_deployable(const Artifact& a);

class Runtime {
 public:
  // `model` must be a switched artifact (every switchable layer at one width); a master artifact
  // is run at its highest width.
  explicit Runtime(const Artifact& model, RuntimeOptions options = {});
  ~Runtime();
  Runtime(Runtime&&) noexcept;
  Runtime& operator=(Runtime&&) noexcept;

  // images: n x C x H x W float32 (NCHW, normalised as in training); returns n x num_classes
  // logits, row-major.
  std::vector<float> forward(const float* images, int n, int height, int width) const;
  void forward(const float* images, int n, int height, int width, float* logits) const;

  int64_t num_classes() const;
  int64_t in_channels() const;
  int threads() const;
  QgemmIsa isa() const;          // the GEMM path in use
  size_t weight_bytes() const;   // resident weight bytes (codes, packed codes, FP weights)
  // The execution plan, one line per step (fused nodes, value kinds, buffers).
  std::vector<std::string> plan() const;
  // Per-step times of the calls so far (empty unless made with RuntimeOptions::profile), and
  // the time of the calls' other work (unpacking low-bit weights for many-images calls) as a last
  // entry named "unpack"; reset_profile() zeroes them.
  std::vector<StepProfile> profile() const;
  void reset_profile();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bitswitch::deploy
