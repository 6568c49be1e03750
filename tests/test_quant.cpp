// Tests of the Double Rounding quantizers (SPEC.md Sec. 2): the integer second rounding, the
// fused kernels against the composed reference, LSQ gradients against numerical derivatives of
// the straight-through surrogate, and agreement with LibTorch's own fake quantization.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "bitswitch/quant/fake_quant.h"
#include "bitswitch/util/error.h"
#include "test_util.h"

using namespace bitswitch;
using namespace bitswitch::quant;

TEST(SecondRounding, EveryCodeEveryWidthPair) {
  for (int h = kMinBits; h <= kMaxBits; ++h) {
    for (int l = kMinBits; l <= h; ++l) {
      const int d = h - l;
      for (int q = signed_qmin(h); q <= signed_qmax(h); ++q) {
        const double x = std::ldexp(double(q), -d);
        const double up = std::min<double>(std::max<double>(std::floor(x + 0.5), signed_qmin(l)), signed_qmax(l));
        const double fl = std::min<double>(std::max<double>(std::floor(x), signed_qmin(l)), signed_qmax(l));
        ASSERT_EQ(derive_code(q, h, l, SecondRounding::kHalfUp), int32_t(up)) << "h=" << h << " l=" << l << " q=" << q;
        ASSERT_EQ(derive_code(q, h, l, SecondRounding::kFloor), int32_t(fl)) << "h=" << h << " l=" << l << " q=" << q;
      }
    }
  }
}

TEST(SecondRounding, TensorVersionMatchesScalar) {
  auto codes = torch::arange(-128, 128, torch::kInt32).to(torch::kInt8);
  for (int l = 2; l <= 8; ++l) {
    auto low = derive_codes(codes, 8, l, SecondRounding::kHalfUp);
    for (int i = 0; i < 256; ++i)
      ASSERT_EQ(low[i].item<int>(), derive_code(i - 128, 8, l, SecondRounding::kHalfUp));
  }
}

namespace {
// Weights with exact rounding ties and out-of-range values mixed in.
torch::Tensor test_weights(std::vector<int64_t> shape, const torch::Tensor& scale, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<int64_t> bshape(shape.size(), 1);
  bshape[0] = shape[0];
  auto s = scale.reshape(bshape);
  auto w = torch::randn(shape) * s * 40;
  auto ties = (torch::randint(-140, 140, shape).to(torch::kFloat32) + 0.5f) * s;
  auto pick = torch::rand(shape) < 0.2;
  return torch::where(pick, ties, w);
}
torch::Tensor test_scale(int64_t c, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::rand({c}) * 0.05 + 0.01;
}
// Runs the portable backward loops (what CPUs without AVX-512 run) for its lifetime, and
// checks that the backward spans since its construction ran on the selected path only.
struct PortableKernels {
  explicit PortableKernels(bool on) : on(on), before(quant::detail::backward_path_counts()) {
    quant::detail::force_portable_kernels(on);
  }
  ~PortableKernels() { quant::detail::force_portable_kernels(false); }
  void expect_selected_path_ran() const {
    const auto now = quant::detail::backward_path_counts();
    const int64_t avx512 = now.avx512 - before.avx512, portable = now.portable - before.portable;
    if (on || !quant::detail::avx512_backward_available()) {
      EXPECT_EQ(avx512, 0);
      EXPECT_GT(portable, 0);
    } else {
      EXPECT_GT(avx512, 0);
      EXPECT_EQ(portable, 0);
    }
  }
  bool on;
  quant::detail::BackwardPathCounts before;
};
}  // namespace

// Both backward paths (explicit AVX-512 where the CPU has it, and the portable loops) are
// checked over whole tensors, not only on vector tails.
class FusedKernel : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(Backward, FusedKernel, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Portable" : "Native"; });

TEST_P(FusedKernel, WeightForwardBitExactAndBackwardMatches) {
  PortableKernels portable(GetParam());
  const std::vector<std::vector<int64_t>> shapes = {{16, 3, 3, 3}, {64, 32, 3, 3}, {7, 5}, {33, 17, 1, 1}, {1, 1000}};
  uint64_t seed = 1;
  for (const auto& shape : shapes) {
    for (int h : {8, 4}) {
      for (int l = 2; l <= h; ++l) {
        for (auto mode : {SecondRounding::kHalfUp, SecondRounding::kFloor}) {
          for (bool exact : {false, true}) {
            WeightQuantSpec spec{h, l, mode, exact};
            auto s = test_scale(shape[0], seed);
            auto w = test_weights(shape, s, seed++);
            auto yf = quant::detail::weight_forward_fused(w, s, spec);
            auto yr = quant::detail::weight_forward_reference(w, s, spec);
            ASSERT_TRUE(torch::equal(yf, yr)) << "shape " << w.sizes() << " h=" << h << " l=" << l;
            auto g = torch::randn(shape);
            auto [gwf, gsf] = quant::detail::weight_backward_fused(g, w, s, spec);
            auto [gwr, gsr] = quant::detail::weight_backward_reference(g, w, s, spec);
            ASSERT_TRUE(torch::equal(gwf, gwr));
            ASSERT_TRUE(torch::allclose(gsf, gsr, 1e-4, 1e-6)) << gsf - gsr;
          }
        }
      }
    }
  }
  portable.expect_selected_path_ran();
}

TEST_P(FusedKernel, ActivationForwardBitExactAndBackwardMatches) {
  PortableKernels portable(GetParam());
  const std::vector<std::vector<int64_t>> shapes = {{2, 16, 28, 28}, {3, 7, 5, 5}, {1, 1}, {128, 64, 7, 7}, {100003}};
  uint64_t seed = 7;
  for (const auto& shape : shapes) {
    for (int b = 2; b <= 8; ++b) {
      torch::manual_seed(seed++);
      auto a = torch::rand({1}) * 0.1 + 0.02;
      auto x = torch::relu(torch::randn(shape)) * a * (1 << b) * 0.7;
      auto ties = torch::relu(torch::randint(-10, 300, shape).to(torch::kFloat32) + 0.5f) * a;
      x = torch::where(torch::rand(shape) < 0.2, ties, x);
      auto yf = quant::detail::act_forward_fused(x, a, b);
      auto yr = quant::detail::act_forward_reference(x, a, b);
      ASSERT_TRUE(torch::equal(yf, yr)) << "shape " << x.sizes() << " b=" << b;
      auto g = torch::randn(shape);
      auto [gxf, gaf] = quant::detail::act_backward_fused(g, x, a, b);
      auto [gxr, gar] = quant::detail::act_backward_reference(g, x, a, b);
      ASSERT_TRUE(torch::equal(gxf, gxr));
      ASSERT_TRUE(torch::allclose(gaf, gar, 1e-4, 1e-6)) << gaf.item<float>() << " vs " << gar.item<float>();
    }
  }
  portable.expect_selected_path_ran();
}

// Every path of the second rounding against its one scalar definition (derive_code), on every
// h-bit code (plus clamped values beyond the range) and every shift d = h - l, in both modes:
// the fused forward, the reference forward, and the backward paths (portable loops and, where
// the CPU has it, the explicit AVX-512 kernel), whose scale gradient with one element per
// channel (16 copies of one code: a whole AVX-512 vector) is exactly 16 e g (e = q_l - v inside
// the l-bit range, the bound outside) with g the shared LSQ gradient scale (lsq_grad_scale).
TEST_P(FusedKernel, EveryCodeEveryShiftMatchesTheScalarDefinition) {
  PortableKernels portable(GetParam());
  for (int h = kMinBits; h <= kMaxBits; ++h) {
    const int lo = signed_qmin(h) - 3, hi = signed_qmax(h) + 3;
    const int64_t n = hi - lo + 1;
    auto codes = torch::arange(lo, hi + 1, torch::kInt32);
    auto s = torch::full({n}, 0.015625f);  // 2^-6: w / s is the code exactly
    auto w = (codes.to(torch::kFloat32) * 0.015625f).reshape({n, 1}).expand({n, 16}).contiguous();
    for (int l = kMinBits; l <= h; ++l) {
      const int d = h - l;
      for (auto mode : {SecondRounding::kHalfUp, SecondRounding::kFloor}) {
        WeightQuantSpec spec{h, l, mode, /*exact_scale_grad=*/d % 2 == 1};
        auto yf = quant::detail::weight_forward_fused(w, s, spec);
        auto yr = quant::detail::weight_forward_reference(w, s, spec);
        auto [gwf, gsf] = quant::detail::weight_backward_fused(torch::ones_like(w), w, s, spec);
        auto [gwr, gsr] = quant::detail::weight_backward_reference(torch::ones_like(w), w, s, spec);
        const double g = lsq_grad_scale(16, signed_qmax(l), spec.exact_scale_grad ? d : 0);
        ASSERT_EQ(weight_grad_scale(16, spec), g);
        for (int64_t i = 0; i < n; ++i) {
          const int32_t qh = clamp_signed(lo + int32_t(i), h);
          const int32_t ql = derive_code(qh, h, l, mode);
          const float want = float(ql) * 0.015625f * std::ldexp(1.0f, d);
          const auto where = ::testing::Message() << "h=" << h << " l=" << l << " code " << lo + i << " mode " << int(mode);
          ASSERT_EQ(yf[i][0].item<float>(), want) << where;
          ASSERT_EQ(yr[i][0].item<float>(), want) << where;
          const float v = float(lo + int32_t(i)) * std::ldexp(1.0f, -d);
          const bool inside = v >= signed_qmin(l) && v <= signed_qmax(l);
          const float e = inside ? float(ql) - v : float(v < 0 ? signed_qmin(l) : signed_qmax(l));
          ASSERT_EQ(gwf[i][0].item<float>(), inside ? 1.0f : 0.0f) << where;
          ASSERT_EQ(gwr[i][0].item<float>(), inside ? 1.0f : 0.0f) << where;
          ASSERT_TRUE(torch::equal(yf[i], torch::full({16}, want))) << where;
          ASSERT_TRUE(torch::equal(gwf[i], torch::full({16}, inside ? 1.0f : 0.0f))) << where;
          ASSERT_EQ(gsf[i].item<float>(), float(16.0 * e * g)) << where;
          ASSERT_FLOAT_EQ(gsr[i].item<float>(), float(16.0 * e * g)) << where;
        }
      }
    }
  }
  portable.expect_selected_path_ran();
}

// The offset form and the mode form of the second rounding are one function; the offsets are
// 2^(d-1) for half-up and 0 for floor (and d = 0).
TEST(SecondRounding, OffsetFormIsTheModeForm) {
  EXPECT_EQ(second_round_offset(0, SecondRounding::kHalfUp), 0);
  EXPECT_EQ(second_round_offset(1, SecondRounding::kHalfUp), 1);
  EXPECT_EQ(second_round_offset(6, SecondRounding::kHalfUp), 32);
  EXPECT_EQ(second_round_offset(6, SecondRounding::kFloor), 0);
  for (int d = 0; d <= 6; ++d)
    for (int q = -128; q <= 127; ++q)
      for (auto mode : {SecondRounding::kHalfUp, SecondRounding::kFloor})
        ASSERT_EQ(second_round(q, d, mode), second_round(q, d, second_round_offset(d, mode)));
  // LSQ's gradient scale: 1 / sqrt(N Qp), times 2^extra.
  EXPECT_EQ(lsq_grad_scale(9, 4), 1.0 / 6.0);
  EXPECT_EQ(lsq_grad_scale(9, 4, 2), 4.0 / 6.0);
}

// The fused kernels split large tensors over LibTorch's threads (the library is built with
// OpenMP; without it at::parallel_for silently runs on one thread).
TEST(FusedKernelThreads, LargeTensorsUseEveryThread) {
  const int before = torch::get_num_threads();
  torch::set_num_threads(2);
  EXPECT_EQ(quant::detail::kernel_threads(int64_t{1} << 20), 2);
  EXPECT_EQ(quant::detail::kernel_threads(1000), 1);  // one chunk
  torch::set_num_threads(before);
}

// The ReLU fused into the activation quantizer (fake_quant_act's `relu`): the same forward, and
// the backward of relu followed by the quantizer: input gradient zero where x <= 0 (exact zeros
// included, where the unfused quantizer alone would pass the gradient), the same scale gradient.
TEST_P(FusedKernel, ActivationWithFusedReluIsReluThenQuantizer) {
  PortableKernels portable(GetParam());
  uint64_t seed = 21;
  for (const auto& shape : std::vector<std::vector<int64_t>>{{2, 16, 28, 28}, {3, 7, 5, 5}, {100003}}) {
    for (int b = 2; b <= 8; b += 2) {
      torch::manual_seed(seed++);
      auto a = torch::rand({1}) * 0.1 + 0.02;
      auto x = torch::randn(shape) * a * (1 << b) * 0.7;  // about half negative
      x = torch::where(torch::rand(shape) < 0.1, torch::zeros(shape), x);  // exact zeros
      auto ties = (torch::randint(-300, 300, shape).to(torch::kFloat32) + 0.5f) * a;
      x = torch::where(torch::rand(shape) < 0.2, ties, x);
      auto r = torch::relu(x);
      ASSERT_TRUE(torch::equal(quant::detail::act_forward_fused(x, a, b), quant::detail::act_forward_reference(r, a, b)));
      auto g = torch::randn(shape);
      auto [gx, ga] = quant::detail::act_backward_fused(g, x, a, b, /*relu=*/true);
      auto [gr, gar] = quant::detail::act_backward_reference(g, r, a, b);
      ASSERT_TRUE(torch::equal(gx, gr * (x > 0)));
      ASSERT_TRUE(torch::allclose(ga, gar, 1e-4, 1e-6)) << ga.item<float>() << " vs " << gar.item<float>();
      // Through autograd: the fused op against torch::relu + the reference quantizer.
      auto xf = x.clone().requires_grad_(), af = a.clone().requires_grad_();
      auto xr = x.clone().requires_grad_(), ar = a.clone().requires_grad_();
      auto yf = quant::fake_quant_act(xf, af, b, quant::Impl::kFused, /*relu=*/true);
      auto yr = quant::fake_quant_act(xr, ar, b, quant::Impl::kReference, /*relu=*/true);
      ASSERT_TRUE(torch::equal(yf, yr));
      (yf * g).sum().backward();
      (yr * g).sum().backward();
      ASSERT_TRUE(torch::equal(xf.grad(), xr.grad()));
      ASSERT_TRUE(torch::allclose(af.grad(), ar.grad(), 1e-4, 1e-6));
    }
  }
  portable.expect_selected_path_ran();
}

TEST(FusedKernelLayout, NonContiguousInputMatches) {
  auto s = test_scale(8, 3);
  auto w = test_weights({8, 4, 3, 3}, s, 3);
  auto wt = w.transpose(2, 3);  // non-contiguous view
  WeightQuantSpec spec{8, 4};
  EXPECT_TRUE(torch::equal(quant::detail::weight_forward_fused(wt, s, spec), quant::detail::weight_forward_reference(wt, s, spec)));
}

TEST(FusedKernelLayout, ChannelsLastTensorsKeepTheirLayoutAndMatch) {
  const auto cl = torch::MemoryFormat::ChannelsLast;
  torch::manual_seed(11);
  for (int b : {8, 4, 2}) {
    auto a = torch::full({1}, 0.03f);
    auto x = (torch::relu(torch::randn({4, 16, 7, 7})) * 0.03f * (1 << b) * 0.6f).contiguous(cl);
    auto y = quant::detail::act_forward_fused(x, a, b);
    EXPECT_TRUE(y.is_contiguous(cl));
    EXPECT_TRUE(torch::equal(y, quant::detail::act_forward_reference(x, a, b)));
    auto g = torch::randn({4, 16, 7, 7});  // NCHW gradient for a channels-last input
    auto [gx, ga] = quant::detail::act_backward_fused(g, x, a, b);
    auto [gxr, gar] = quant::detail::act_backward_reference(g, x, a, b);
    EXPECT_TRUE(gx.is_contiguous(cl));
    EXPECT_TRUE(torch::equal(gx, gxr));
    EXPECT_TRUE(torch::allclose(ga, gar, 1e-4, 1e-6));

    WeightQuantSpec spec{8, b};
    auto s = test_scale(32, b);
    auto w = test_weights({32, 16, 3, 3}, s, b).contiguous(cl);
    auto yw = quant::detail::weight_forward_fused(w, s, spec);
    EXPECT_TRUE(yw.is_contiguous(cl));
    EXPECT_TRUE(torch::equal(yw, quant::detail::weight_forward_reference(w, s, spec)));
    auto gw_in = torch::randn({32, 16, 3, 3}).contiguous(cl);
    auto [gw, gs] = quant::detail::weight_backward_fused(gw_in, w, s, spec);
    auto [gwr, gsr] = quant::detail::weight_backward_reference(gw_in, w, s, spec);
    EXPECT_TRUE(torch::equal(gw, gwr));
    EXPECT_TRUE(torch::allclose(gs, gsr, 1e-4, 1e-6));
  }
}

// LSQ gradients are the exact derivatives of the straight-through surrogate
//   out_i(W, s) = s_eff * (v_i + c_i) inside, s_eff * Qn below, s_eff * Qp above,
// with v = W / s_eff, s_eff = s * 2^d and c_i = q_i - v_i frozen at the evaluation point,
// scaled by g = 1 / sqrt(N * Qp) (and by 2^-d unless exact_scale_grad).
// Central differences of L = sum(R * out) in double precision check the backward pass.
TEST(Gradients, WeightQuantizerMatchesNumericalDerivativeOfSurrogate) {
  for (auto impl : {Impl::kFused, Impl::kReference}) {
    for (int l : {8, 6, 4, 3, 2}) {
      for (bool exact : {false, true}) {
        const int h = 8, d = h - l;
        WeightQuantSpec spec{h, l, SecondRounding::kHalfUp, exact};
        auto s = test_scale(4, 11).requires_grad_(true);
        auto w = (torch::randn({4, 3, 2, 2}) * 0.03 * (1 << d)).requires_grad_(true);
        auto r = torch::randn({4, 3, 2, 2});
        auto out = fake_quant_weight(w, s, spec, impl);
        (out * r).sum().backward();

        auto wd = w.detach().to(torch::kFloat64), sd = s.detach().to(torch::kFloat64), rd = r.to(torch::kFloat64);
        const double qn = signed_qmin(l), qp = signed_qmax(l);
        auto seff0 = sd * std::ldexp(1.0, d);
        auto v0 = wd / seff0.view({4, 1, 1, 1});
        auto q0 = out.detach().to(torch::kFloat64) / seff0.view({4, 1, 1, 1});  // the codes
        auto c = q0 - v0;
        auto below = v0 < qn, above = v0 > qp;
        auto surrogate = [&](const torch::Tensor& W, const torch::Tensor& S) {
          auto se = (S * std::ldexp(1.0, d)).view({4, 1, 1, 1});
          auto v = W / se;
          auto o = torch::where(below, se * qn, torch::where(above, se * qp, se * (v + c)));
          return (o * rd).sum().item<double>();
        };
        const double eps = 1e-6;
        auto num_w = torch::zeros_like(wd);
        for (int64_t i = 0; i < wd.numel(); ++i) {
          auto wp = wd.clone(), wm = wd.clone();
          wp.view(-1)[i] += eps;
          wm.view(-1)[i] -= eps;
          num_w.view(-1)[i] = (surrogate(wp, sd) - surrogate(wm, sd)) / (2 * eps);
        }
        EXPECT_TRUE(torch::allclose(w.grad().to(torch::kFloat64), num_w, 1e-4, 1e-5)) << "l=" << l;
        const double g = 1.0 / std::sqrt(12.0 * qp) * (exact ? 1.0 : std::ldexp(1.0, -d));
        for (int64_t ch = 0; ch < 4; ++ch) {
          const double e = 1e-7;
          auto sp = sd.clone(), sm = sd.clone();
          sp[ch] += e;
          sm[ch] -= e;
          const double num = (surrogate(wd, sp) - surrogate(wd, sm)) / (2 * e) * g;
          EXPECT_NEAR(s.grad()[ch].item<double>(), num, 1e-4 * std::max(1.0, std::abs(num)))
              << "channel " << ch << " l=" << l << " exact=" << exact;
        }
      }
    }
  }
}

TEST(Gradients, ActivationQuantizerMatchesNumericalDerivativeOfSurrogate) {
  for (auto impl : {Impl::kFused, Impl::kReference}) {
    for (int b : {8, 4, 2}) {
      torch::manual_seed(b);
      auto a = torch::full({1}, 0.05f).requires_grad_(true);
      auto x = (torch::randn({2, 3, 4, 4}) * 0.05 * (1 << b) * 0.5).requires_grad_(true);  // some negative, some above
      auto r = torch::randn({2, 3, 4, 4});
      auto out = fake_quant_act(x, a, b, impl);
      (out * r).sum().backward();
      auto xd = x.detach().to(torch::kFloat64), rd = r.to(torch::kFloat64);
      const double qp = unsigned_qmax(b), a0 = 0.05f;
      auto v0 = xd / a0;
      auto c = out.detach().to(torch::kFloat64) / a0 - v0;
      auto below = v0 < 0, above = v0 > qp;
      auto surrogate = [&](const torch::Tensor& X, double A) {
        auto v = X / A;
        auto o = torch::where(below, torch::zeros_like(v), torch::where(above, torch::full_like(v, A * qp), A * (v + c)));
        return (o * rd).sum().item<double>();
      };
      const double eps = 1e-7;
      auto num_x = torch::zeros_like(xd);
      for (int64_t i = 0; i < xd.numel(); ++i) {
        auto xp = xd.clone(), xm = xd.clone();
        xp.view(-1)[i] += eps;
        xm.view(-1)[i] -= eps;
        num_x.view(-1)[i] = (surrogate(xp, a0) - surrogate(xm, a0)) / (2 * eps);
      }
      EXPECT_TRUE(torch::allclose(x.grad().to(torch::kFloat64), num_x, 1e-4, 1e-5));
      const double g = 1.0 / std::sqrt(double(xd.numel()) * qp);
      const double num_a = (surrogate(xd, a0 + 1e-8) - surrogate(xd, a0 - 1e-8)) / 2e-8 * g;
      EXPECT_NEAR(a.grad().item<double>(), num_a, 1e-3 * std::max(1.0, std::abs(num_a))) << "b=" << b;
    }
  }
}

TEST(Agreement, EightBitWeightsMatchLibTorchFakeQuantize) {
  for (uint64_t seed = 0; seed < 5; ++seed) {
    auto s = test_scale(32, seed);
    auto w = test_weights({32, 16, 3, 3}, s, seed);
    auto zp = torch::zeros({32}, torch::kInt32);
    auto expected = torch::fake_quantize_per_channel_affine(w, s, zp, 0, -128, 127);
    for (auto impl : {Impl::kFused, Impl::kReference})
      EXPECT_TRUE(torch::equal(fake_quant_weight(w, s, WeightQuantSpec{8, 8}, impl), expected)) << "seed " << seed;
  }
}

TEST(Agreement, FakeQuantEqualsIntegerCodesTimesEffectiveScale) {
  // The trained l-bit weights are exactly the deployed integer codes times s * 2^(h-l).
  auto s = test_scale(24, 5);
  auto w = test_weights({24, 8, 3, 3}, s, 5);
  auto codes8 = weight_codes(w, s, 8);
  for (int l = 2; l <= 8; ++l) {
    for (auto mode : {SecondRounding::kHalfUp, SecondRounding::kFloor}) {
      auto fq = fake_quant_weight(w, s, WeightQuantSpec{8, l, mode});
      auto deployed = derive_codes(codes8, 8, l, mode).to(torch::kFloat32) * (s * std::ldexp(1.0f, 8 - l)).view({24, 1, 1, 1});
      EXPECT_TRUE(torch::equal(fq, deployed)) << "l=" << l;
    }
  }
}

TEST(Errors, BadWidthsAndShapes) {
  auto w = torch::randn({4, 3});
  auto s = torch::ones({4});
  EXPECT_ERROR_CONTAINS(fake_quant_weight(w, s, WeightQuantSpec{8, 9}), "`bits` must be in [2, 8], got 9");
  EXPECT_ERROR_CONTAINS(fake_quant_weight(w, s, WeightQuantSpec{4, 6}), "must not exceed `high_bits`");
  EXPECT_ERROR_CONTAINS(fake_quant_weight(w, torch::ones({3}), WeightQuantSpec{8, 4}), "weight scale must have shape [4]");
  EXPECT_ERROR_CONTAINS(fake_quant_act(w, torch::ones({2}), 4), "activation scale must have one element");
  EXPECT_ERROR_CONTAINS(fake_quant_act(w, torch::ones({1}), 1), "`bits` must be in [2, 8], got 1");
  EXPECT_ERROR_CONTAINS(quant::detail::act_forward_fused(w.to(torch::kFloat64), torch::ones({1}), 4), "float32 CPU tensor");
}

TEST(Init, ScalesFollowSpecFormulas) {
  torch::manual_seed(0);
  auto w = torch::randn({3, 50}) + torch::tensor({0.5f, -1.0f, 0.0f}).view({3, 1});
  auto s = init_weight_scale(w, 8);
  for (int c = 0; c < 3; ++c) {
    const double mu = w[c].mean().item<double>(), sd = w[c].std().item<double>();
    EXPECT_NEAR(s[c].item<double>(), std::max(std::abs(mu - 3 * sd), std::abs(mu + 3 * sd)) / 128.0, 1e-6);
  }
  auto x = torch::rand({1000});
  EXPECT_NEAR(init_act_scale(x, 4).item<double>(), 2 * x.abs().mean().item<double>() / std::sqrt(15.0), 1e-6);
}

TEST(Init, MseActivationScaleBeatsLsqAtLowWidths) {
  torch::manual_seed(3);
  auto x = torch::relu(torch::randn({20000}));
  auto mse = [&](const torch::Tensor& a, int b) {
    return (quant::detail::act_forward_reference(x, a, b) - x).pow(2).mean().item<double>();
  };
  for (int b : {2, 3, 4}) {
    auto a_mse = init_act_scale_mse(x, b);
    EXPECT_LE(mse(a_mse, b), mse(init_act_scale(x, b), b)) << "b=" << b;
    // No other range on a finer grid does markedly better.
    const double hi = x.max().item<double>();
    for (int k = 1; k <= 400; ++k)
      EXPECT_LE(mse(a_mse, b), mse(torch::full({1}, float(hi * k / 400.0 / unsigned_qmax(b))), b) * 1.01);
  }
}
