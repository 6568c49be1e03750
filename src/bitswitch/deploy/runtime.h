// The integer runtime: inference from a switched artifact with integer arithmetic, no LibTorch.
// (SPEC.md Sec. 7; paper Sec. 3.1: the deployed l-bit model is the trained l-bit model.)
//
// Every quantized conv/linear runs as: input activations quantized to uint8 codes at the layer's
// width and scale (exactly the training quantizer: clamp(x / a, 0, 2^b - 1) rounded half to
// even), int8 or bit-packed l-bit weight codes, an integer GEMM with int32 accumulation
// (qgemm.h: AVX-512 VNNI / AVX2 / scalar chosen at run time; packed codes unpacked inside the
// GEMM loop), then a per-channel epilogue with BN folded in: y = acc * M_c + B_c with
// M_c = a * s_c * gamma_c / sqrt(var_c + eps), B_c = beta_c - mean_c * gamma_c / sqrt(var_c + eps).
// Where the consumer is another quantized layer (conv -> BN -> ReLU -> conv), the epilogue
// requantizes straight to the next layer's uint8 codes. Residual streams (block outputs, which
// training keeps in float and each consumer quantizes with its own scale) are float32, as are
// the full-precision first conv and last linear layer, pooling and the logits.
//
// Outputs match the trained fake-quant network up to float rounding (the integer GEMM is exact;
// training computes the same sums in float): see tests/test_deploy_equivalence.cpp.
// Architectures: resnet20, smallcnn (the graph is built from the artifact's arch).
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
  int tile = 4;                      // images per working tile of one thread
  // Low-bit weights (AVX-512 VNNI + VBMI CPUs) stay bit-packed in panel order. By default each
  // inference call unpacks them once into int8 panels shared by its tiles; with unpack_in_gemm
  // the GEMM unpacks 64 codes at a time inside its K loop instead (less memory, slower on Zen 4).
  bool unpack_in_gemm = false;
};

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
  size_t weight_bytes() const;   // resident weight bytes (packed codes, FP weights)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bitswitch::deploy
