// Tests of the mixed-precision path (SPEC.md Sec. 6): Hessian traces against the exact Hessian,
// the ILP against brute force, the HASB roulette, transitional BN, search and report.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "bitswitch/data/loader.h"
#include "bitswitch/mixed/hasb.h"
#include "bitswitch/mixed/hessian.h"
#include "bitswitch/mixed/ilp.h"
#include "bitswitch/mixed/report.h"
#include "bitswitch/mixed/roulette.h"
#include "bitswitch/mixed/search.h"
#include "bitswitch/models/model.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/train/checkpoint.h"
#include "bitswitch/train/trainer.h"
#include "bitswitch/util/atomic_file.h"
#include "bitswitch/util/error.h"
#include "test_util.h"

using namespace bitswitch;
using json = nlohmann::json;

// ---------------- Hessian ----------------

namespace {

// A tiny network: a quantized 8-bit linear layer (weights and inputs through Double Rounding's
// straight-through quantizers), tanh, a plain linear layer, cross-entropy.
struct TinyNet {
  nn::QLinear q{nn::QLinearOptions(4, 3).bias(false).quant(nn::QuantOptions().bits({8}))};
  torch::Tensor w2 = torch::randn({2, 3}, torch::kFloat64).set_requires_grad(true);
  torch::Tensor x = torch::rand({6, 4}, torch::kFloat64);
  torch::Tensor y = torch::tensor({0, 1, 1, 0, 1, 0}, torch::kLong);

  TinyNet() {
    q->to(torch::kFloat64);
    nn::apply_bits(*q, nn::BitConfig::uniform(8));
    q->forward(x);  // initialises the scales
  }
  std::vector<torch::Tensor> params() { return {q->weight, w2}; }
  torch::Tensor loss(int64_t batch) {  // two batches of 3 images, each its share of the mean
    auto xb = x.slice(0, 3 * batch, 3 * batch + 3), yb = y.slice(0, 3 * batch, 3 * batch + 3);
    return torch::cross_entropy_loss(torch::tanh(q->forward(xb)).matmul(w2.t()), yb, {}, at::Reduction::Sum) / 6.0;
  }
  torch::Tensor full_loss() { return loss(0) + loss(1); }
};

// The full Hessian of `loss` over the flattened `params`, row by row with autograd.
torch::Tensor full_hessian(const torch::Tensor& loss, const std::vector<torch::Tensor>& params) {
  auto g = torch::autograd::grad({loss}, params, {}, true, true);
  std::vector<torch::Tensor> flat;
  for (auto& t : g) flat.push_back(t.reshape({-1}));
  auto gf = torch::cat(flat);
  std::vector<torch::Tensor> rows;
  for (int64_t i = 0; i < gf.numel(); ++i) {
    auto r = torch::autograd::grad({gf[i]}, params, {}, true, false, true);
    std::vector<torch::Tensor> parts;
    for (size_t k = 0; k < r.size(); ++k) parts.push_back(r[k].defined() ? r[k].reshape({-1}) : torch::zeros({params[k].numel()}, torch::kFloat64));
    rows.push_back(torch::cat(parts));
  }
  return torch::stack(rows);
}

}  // namespace

TEST(Hessian, HvpMatchesFullHessianThroughQuantizers) {
  torch::manual_seed(3);
  TinyNet net;
  auto H = full_hessian(net.full_loss(), net.params());
  ASSERT_EQ(H.size(0), 12 + 6);
  EXPECT_TRUE(torch::allclose(H, H.t(), 1e-10, 1e-12));  // symmetric
  EXPECT_GT(H.slice(0, 0, 12).slice(1, 0, 12).abs().max().item<double>(), 1e-4);  // the quantized block is not zero
  auto v1 = torch::randn({4 * 3}, torch::kFloat64), v2 = torch::randn({6}, torch::kFloat64);
  auto hv = mixed::hessian_vector_product(net.full_loss(), net.params(), {v1.view({3, 4}), v2.view({2, 3})});
  auto expect = H.matmul(torch::cat({v1, v2}));
  EXPECT_TRUE(torch::allclose(torch::cat({hv[0].reshape({-1}), hv[1].reshape({-1})}), expect, 1e-10, 1e-12));
}

TEST(Hessian, HutchinsonConvergesToTheExactTrace) {
  torch::manual_seed(4);
  TinyNet net;
  auto H = full_hessian(net.full_loss(), net.params());
  const double exact0 = H.diagonal().slice(0, 0, 12).sum().item<double>();
  const double exact1 = H.diagonal().slice(0, 12, 18).sum().item<double>();
  mixed::HutchinsonOptions o;
  o.max_probes = 400;
  o.tolerance = 0;  // run every probe
  auto r = mixed::hutchinson(net.params(), 2, [&](int64_t b) { return net.loss(b); }, o);
  EXPECT_EQ(r.probes, 400);
  EXPECT_FALSE(r.converged);
  ASSERT_EQ(r.blocks.size(), 2u);
  for (auto [est, exact] : {std::pair{r.blocks[0], exact0}, std::pair{r.blocks[1], exact1}}) {
    EXPECT_GT(est.stderr_, 0);
    EXPECT_NEAR(est.trace, exact, 4.5 * est.stderr_) << "exact " << exact;
    EXPECT_LT(est.stderr_, 0.2 * std::abs(exact));
  }
  // Each block probed alone: no cross-block noise, so fewer probes reach the same precision.
  o.per_block = true;
  o.max_probes = 100;
  auto alone = mixed::hutchinson(net.params(), 2, [&](int64_t b) { return net.loss(b); }, o);
  EXPECT_NEAR(alone.blocks[0].trace, exact0, 4.5 * alone.blocks[0].stderr_ + 1e-12);
  EXPECT_NEAR(alone.blocks[1].trace, exact1, 4.5 * alone.blocks[1].stderr_ + 1e-12);
  o.per_block = false;
  // The tolerance stops early.
  o.max_probes = 200;
  o.tolerance = 0.05;
  auto early = mixed::hutchinson(net.params(), 2, [&](int64_t b) { return net.loss(b); }, o);
  EXPECT_TRUE(early.converged);
  EXPECT_LT(early.probes, 200);
  EXPECT_GE(early.probes, 2);
}

TEST(Hessian, TracesFileRoundTripAndErrors) {
  const auto dir = bitswitch::testing::temp_dir("traces_file");
  mixed::TraceReport r;
  r.layers = {{"conv2", 100, 0.5, 50, 0.1, 0.01}, {"conv3", 200, 2.5, 500, 0.2, 0.02}};
  r.bits = 8;
  r.images = 64;
  r.probes = 7;
  write_text_atomically(dir + "/t.json", mixed::traces_to_json(r).dump());
  auto back = mixed::read_traces(dir + "/t.json");
  ASSERT_EQ(back.layers.size(), 2u);
  EXPECT_EQ(back.layers[1].name, "conv3");
  EXPECT_DOUBLE_EQ(back.layers[1].trace, 2.5);
  EXPECT_EQ(back.probes, 7);
  write_text_atomically(dir + "/bad.json", R"({"format": "bitswitch-traces", "layers": [{"name": "a", "trace": "x"}]})");
  EXPECT_ERROR_CONTAINS(mixed::read_traces(dir + "/bad.json"), "layer 'a': field 'trace' must be a finite number");
  write_text_atomically(dir + "/other.json", R"({"a": 1})");
  EXPECT_ERROR_CONTAINS(mixed::read_traces(dir + "/other.json"), "not a bitswitch traces file");
}

// ---------------- ILP ----------------

namespace {

struct Brute {
  double best = 0;
  bool found = false;
};

// Exhaustive search with costs computed here from the definitions (not by config_cost).
Brute brute_force(const mixed::IlpProblem& p) {
  const size_t L = p.layers.size(), B = p.bits.size();
  size_t total = 1;
  for (size_t l = 0; l < L; ++l) total *= B;
  Brute r;
  const bool maximise = p.objective == mixed::Objective::kMaxTraceBits;
  for (size_t code = 0; code < total; ++code) {
    size_t c = code;
    double obj = 0, sum_bits = 0, bytes = p.fixed_bytes, bitops = 0;
    for (size_t l = 0; l < L; ++l, c /= B) {
      const size_t i = c % B;
      const int b = p.bits[i];
      const auto& layer = p.layers[l];
      obj += maximise ? layer.trace * b : layer.trace * layer.quant_error[i];
      sum_bits += b;
      bytes += std::ceil(double(layer.params) * b / 8.0);
      bitops += double(layer.macs) * b * b;
    }
    const auto& bu = p.budgets;
    if (bu.avg_bits && sum_bits / double(L) > *bu.avg_bits + 1e-12) continue;
    if (bu.bytes && bytes > *bu.bytes) continue;
    if (bu.bitops && bitops > *bu.bitops) continue;
    if (!r.found || (maximise ? obj > r.best : obj < r.best)) r.best = obj, r.found = true;
  }
  return r;
}

mixed::IlpProblem random_problem(std::mt19937_64& rng, std::vector<int> bits, size_t layers) {
  std::uniform_real_distribution<double> u(0, 1);
  mixed::IlpProblem p;
  p.bits = bits;
  p.fixed_bytes = 100;
  for (size_t l = 0; l < layers; ++l) {
    mixed::IlpLayer layer;
    layer.name = "layer" + std::to_string(l);
    layer.trace = std::exp(4 * u(rng) - 2);
    layer.params = 1 + int64_t(u(rng) * 5000);
    layer.macs = 1 + int64_t(u(rng) * 1e6);
    for (int b : bits) layer.quant_error.push_back(double(layer.params) * std::pow(2.0, -2 * b) * (0.5 + u(rng)));
    p.layers.push_back(layer);
  }
  return p;
}

}  // namespace

TEST(Ilp, MatchesBruteForceForEachObjectiveAndBudget) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0, 1);
  int solved = 0;
  for (const auto& bits : {std::vector<int>{8, 6, 4, 2}, std::vector<int>{4, 3, 2}}) {
    for (int trial = 0; trial < 4; ++trial) {
      auto p = random_problem(rng, bits, 5);
      const auto lo = mixed::config_cost(p, std::vector<int>(5, bits.back()));
      const auto hi = mixed::config_cost(p, std::vector<int>(5, bits.front()));
      for (auto objective : {mixed::Objective::kMaxTraceBits, mixed::Objective::kMinTraceError}) {
        p.objective = objective;
        for (int kind = 0; kind < 4; ++kind) {  // avg bits, bytes, BitOPs, all three
          const double f = 0.1 + 0.8 * u(rng);
          p.budgets = {};
          if (kind == 0 || kind == 3) p.budgets.avg_bits = lo.avg_bits + f * (hi.avg_bits - lo.avg_bits);
          if (kind == 1 || kind == 3) p.budgets.bytes = lo.bytes + f * (hi.bytes - lo.bytes);
          if (kind == 2 || kind == 3) p.budgets.bitops = lo.bitops + f * (hi.bitops - lo.bitops);
          const auto want = brute_force(p);
          ASSERT_TRUE(want.found);
          const auto got = mixed::solve_ilp(p);
          EXPECT_NEAR(got.cost.objective, want.best, 1e-9 * std::max(1.0, std::abs(want.best)))
              << "bits " << bits.size() << " objective " << int(objective) << " budget kind " << kind;
          if (p.budgets.avg_bits) EXPECT_LE(got.cost.avg_bits, *p.budgets.avg_bits + 1e-12);
          if (p.budgets.bytes) EXPECT_LE(got.cost.bytes, *p.budgets.bytes);
          if (p.budgets.bitops) EXPECT_LE(got.cost.bitops, *p.budgets.bitops);
          ++solved;
        }
      }
    }
  }
  EXPECT_EQ(solved, 2 * 4 * 2 * 4);
}

TEST(Ilp, ReferenceObjectiveGivesHigherWidthsToSensitiveLayers) {
  mixed::IlpProblem p;
  p.bits = {4, 3, 2};
  for (double t : {1.0, 10.0, 0.1}) p.layers.push_back({"l", t, 10, 10, {}});
  p.budgets.avg_bits = 3.0;  // a sum of 9 bits
  auto s = mixed::solve_ilp(p);
  EXPECT_EQ(s.widths, (std::vector<int>{3, 4, 2}));
  EXPECT_DOUBLE_EQ(s.cost.avg_bits, 3.0);
}

TEST(Ilp, InfeasibleBudgetsGiveAClearError) {
  std::mt19937_64 rng(1);
  auto p = random_problem(rng, {8, 6, 4, 2}, 4);
  const auto lo = mixed::config_cost(p, std::vector<int>(4, 2));
  p.budgets.avg_bits = 1.5;
  EXPECT_ERROR_CONTAINS(mixed::solve_ilp(p), "infeasible budget: average bits <= 1.5 cannot be met (the smallest average is 2");
  p.budgets = {};
  p.budgets.bytes = lo.bytes - 1;
  EXPECT_ERROR_CONTAINS(mixed::solve_ilp(p), "infeasible budget: model bytes <= ");
  p.budgets = {};
  p.budgets.bitops = lo.bitops * 0.5;
  EXPECT_ERROR_CONTAINS(mixed::solve_ilp(p), "infeasible budget: BitOPs <= ");
  p.budgets = {};
  p.budgets.bytes = lo.bytes;  // exactly the smallest model: feasible, every layer at 2 bits
  EXPECT_EQ(mixed::solve_ilp(p).widths, std::vector<int>(4, 2));
  EXPECT_ERROR_CONTAINS(mixed::parse_objective("hawk"), "objective must be reference");
  EXPECT_ERROR_CONTAINS(mixed::parse_sweep("avg-bits:2:8"), "must be KIND:FROM:TO:STEPS");
  EXPECT_ERROR_CONTAINS(mixed::parse_sweep("size:2:8:3"), "budget kind 'size'");
  EXPECT_ERROR_CONTAINS(mixed::parse_sweep("bytes:2:x:3"), "TO 'x' is not a number");
  EXPECT_EQ(mixed::parse_sweep("avg-bits:2:8:4").values(), (std::vector<double>{2, 4, 6, 8}));
}

// ---------------- roulette ----------------

TEST(Roulette, ProbabilitiesFollowTheTraces) {
  auto r = mixed::Roulette::hessian({1.0, 5.0, 0.5, 10.0}, {8, 6, 4, 2});  // mean 4.125
  EXPECT_FALSE(r.sensitive(0));
  EXPECT_TRUE(r.sensitive(1));
  EXPECT_FALSE(r.sensitive(2));
  EXPECT_TRUE(r.sensitive(3));
  EXPECT_EQ(r.probabilities(0), std::vector<double>(4, 0.25));
  EXPECT_EQ(r.probabilities(3), (std::vector<double>{0.4, 0.3, 0.2, 0.1}));
  EXPECT_DOUBLE_EQ(mixed::hasb_sigma(0.5, 0, 4, 1), 0.0);  // warm-up
  EXPECT_DOUBLE_EQ(mixed::hasb_sigma(0.5, 1, 4, 1), 0.25);
  EXPECT_DOUBLE_EQ(mixed::hasb_sigma(0.5, 3, 4, 0), 0.5);
}

TEST(Roulette, EmpiricalDistributionMatchesItsProbabilities) {
  const std::vector<int> bits{8, 6, 4, 2};
  auto r = mixed::Roulette::hessian({1.0, 5.0, 0.5, 10.0}, bits);
  const double sigma = 0.4;
  const int keep = 4, n = 200000;
  std::vector<std::map<int, int>> counts(4);
  std::mt19937_64 rng(11);
  for (int k = 0; k < n; ++k) {
    auto w = mixed::draw_layer_widths(r, keep, sigma, rng);
    for (size_t l = 0; l < 4; ++l) counts[l][w[l]]++;
  }
  for (size_t l = 0; l < 4; ++l)
    for (size_t i = 0; i < bits.size(); ++i) {
      // P(width) = (1 - sigma) [width == keep] + sigma p_i
      const double p = (1 - sigma) * (bits[i] == keep) + sigma * r.probabilities(l)[i];
      const double sd = std::sqrt(n * p * (1 - p));
      EXPECT_NEAR(counts[l][bits[i]], n * p, 5 * sd) << "layer " << l << " width " << bits[i];
    }
  // Per-step draws depend only on (seed, epoch, iteration, width index).
  auto a = mixed::step_rng(1, 2, 3, 0), b = mixed::step_rng(1, 2, 3, 0), c = mixed::step_rng(1, 2, 4, 0);
  EXPECT_EQ(a(), b());
  EXPECT_NE(mixed::step_rng(1, 2, 3, 0)(), c());
}

// ---------------- transitional BN ----------------

TEST(TransitionalBn, KeysFollowThePreviousAndThisWidth) {
  models::ModelSpec spec;  // resnet20 {8,6,4,2}
  torch::manual_seed(0);
  auto m = models::create_model(spec);
  auto bn = [&](const std::string& name) { return m->named_modules()[name]->as<nn::SwitchableBatchNorm2dImpl>(); };
  // Behind the fixed-width stem: no transitional BNs. Behind conv1: every ordered pair.
  EXPECT_EQ(bn("blocks.0.bn1")->bns().size(), 5u);
  EXPECT_EQ(bn("blocks.0.bn2")->bns().size(), 5u + 12u);
  EXPECT_EQ(bn("blocks.3.down_bn")->bns().size(), 5u + 12u);
  EXPECT_TRUE(bn("blocks.0.bn2")->bns().count("8_4"));
  EXPECT_EQ(bn("blocks.3.bn1")->input_source().get(),
            static_cast<nn::QuantLayer*>(m->named_modules()["blocks.2.conv2"]->as<nn::QConv2dImpl>()));
  // Uniform configs use exactly bn_<b> (the BN behind the FP stem: always bn_fp).
  for (int b : {8, 6, 4, 2, nn::kFloatBits}) {
    nn::apply_bits(*m, nn::BitConfig::uniform(b));
    for (const auto& item : m->named_modules("", false))
      if (auto s = std::dynamic_pointer_cast<nn::SwitchableBatchNorm2dImpl>(item.value()))
        EXPECT_EQ(s->active_key(), item.key() == "stem_bn" ? "fp" : nn::bn_key(0, b)) << item.key();
  }
  // Mixed: each BN by (its input source's width, its layer's width).
  std::map<std::string, int> widths;
  for (auto& [name, q] : nn::quant_layers(*m)) widths[name] = 4;
  widths["blocks.0.conv1"] = 8;
  widths["blocks.2.conv2"] = 2;
  widths["blocks.3.conv1"] = 6;
  nn::apply_bits(*m, nn::layer_bits_config(widths, 8));
  EXPECT_EQ(bn("blocks.0.bn1")->active_key(), "8");    // fed by the FP stem
  EXPECT_EQ(bn("blocks.0.bn2")->active_key(), "8_4");  // conv1 at 8 feeds conv2 at 4
  EXPECT_EQ(bn("blocks.1.bn1")->active_key(), "4");
  EXPECT_EQ(bn("blocks.3.bn1")->active_key(), "2_6");  // blocks.2.conv2 at 2 feeds conv1 at 6
  EXPECT_EQ(bn("blocks.3.down_bn")->active_key(), "2_4");
  EXPECT_EQ(bn("blocks.3.bn2")->active_key(), "6_4");
  EXPECT_EQ(bn("stem_bn")->active_key(), "fp");
}

TEST(TransitionalBn, ForwardUsesTheActiveBnAndInitCopiesUniform) {
  models::ModelSpec spec;
  spec.name = "smallcnn";
  torch::manual_seed(0);
  auto m = models::create_model(spec);
  m->eval();
  auto bn3 = m->named_modules()["bn3"]->as<nn::SwitchableBatchNorm2dImpl>();
  EXPECT_EQ(m->named_modules()["bn2"]->as<nn::SwitchableBatchNorm2dImpl>()->bns().size(), 5u);  // conv1 is FP
  nn::apply_bits(*m, nn::layer_bits_config({{"conv2", 8}, {"conv3", 4}}, 8));
  EXPECT_EQ(bn3->active_key(), "8_4");
  auto x = torch::rand({2, 1, 28, 28});
  auto y0 = m->forward(x);
  {
    torch::NoGradGuard ng;
    bn3->bn_for(4)->running_mean.add_(1.0);  // the uniform BN is not used
  }
  EXPECT_TRUE(torch::equal(m->forward(x), y0));
  {
    torch::NoGradGuard ng;
    bn3->bn_for_key("8_4")->running_mean.add_(1.0);
  }
  EXPECT_FALSE(torch::equal(m->forward(x), y0));
  nn::init_transitional_from_uniform(*m);
  EXPECT_TRUE(torch::equal(bn3->bn_for_key("8_4")->running_mean, bn3->bn_for(4)->running_mean));
  EXPECT_TRUE(torch::equal(bn3->bn_for_key("6_4")->running_mean, bn3->bn_for(4)->running_mean));
  EXPECT_TRUE(nn::is_transitional_bn_tensor("bn3.bn_8_4.running_mean"));
  EXPECT_FALSE(nn::is_transitional_bn_tensor("bn3.bn_8.running_mean"));
  EXPECT_FALSE(nn::is_transitional_bn_tensor("blocks.0.conv1.weight"));
}

// ---------------- HASB training, search, report ----------------

namespace {

// A small synthetic dataset (class = which image quadrant is bright), so search tests run fast.
data::Dataset synthetic(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  data::Dataset d;
  d.name = "synthetic";
  d.num_classes = 4;
  d.mean = {0.3f};
  d.std = {0.3f};
  d.labels = torch::randint(0, 4, {n}, torch::kLong);
  auto img = torch::randint(0, 60, {n, 1, 16, 16}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = d.labels[i].item<int64_t>();
    img.index({i, 0, torch::indexing::Slice((c / 2) * 8, (c / 2) * 8 + 8), torch::indexing::Slice((c % 2) * 8, (c % 2) * 8 + 8)}) += 180;
  }
  d.images = img.to(torch::kUInt8);
  return d;
}

}  // namespace

TEST(Search, SweepEvaluatesCandidatesAndWritesLayerBits) {
  models::ModelSpec spec;
  spec.name = "smallcnn";
  spec.num_classes = 4;
  torch::manual_seed(0);
  auto m = models::create_model(spec);
  auto ds = synthetic(64, 1);
  data::LoaderOptions lo;
  lo.batch_size = 32;
  data::Loader test(ds, lo);
  mixed::TraceReport traces;
  traces.layers = {{"conv2", 0, 3.0, 0, 0, 0}, {"conv3", 0, 1.0, 0, 0, 0}};
  mixed::SearchOptions o;
  o.sweep = mixed::parse_sweep("avg-bits:1:8:8");  // 1 is infeasible and skipped
  o.random_configs = 2;
  auto r = mixed::run_search(*m, test, traces, o, ds.images.slice(0, 0, 1).to(torch::kFloat32));
  // 16x16 images: conv2 (32 -> 64 channels, 3x3) on 8x8; conv3 (64 -> 128) on 4x4.
  ASSERT_EQ(r.problem.layers.size(), 2u);
  EXPECT_EQ(r.problem.layers[0].macs, 64 * 8 * 8 * 32 * 9);
  EXPECT_EQ(r.problem.layers[1].macs, 128 * 4 * 4 * 64 * 9);
  EXPECT_EQ(r.problem.layers[1].params, 128 * 64 * 9);
  int ilp = 0, uniform = 0, random = 0;
  for (const auto& c : r.candidates) {
    ilp += c.kind == "ilp", uniform += c.kind == "uniform", random += c.kind == "random";
    EXPECT_GE(c.accuracy, 0);
    EXPECT_DOUBLE_EQ(c.cost.avg_bits, (c.widths[0] + c.widths[1]) / 2.0);
  }
  EXPECT_EQ(ilp, 7);  // avg-bits 2..8
  EXPECT_EQ(uniform, 4);
  EXPECT_EQ(random, 14);
  // At an average of 5 bits (a sum of 10), the reference objective 3 b_2 + 1 b_3 prefers 8 + 2.
  EXPECT_EQ(r.candidates[3].widths, (std::vector<int>{8, 2}));
  auto lb = r.chosen_layer_bits();
  EXPECT_EQ(nn::parse_layer_bits(nn::layer_bits_to_json(lb), "x", spec.bits), lb);
  EXPECT_EQ(lb.size(), 2u);
  auto j = mixed::search_to_json(r, o);
  EXPECT_EQ(j["candidates"].size(), r.candidates.size());
  EXPECT_EQ(j["sweep"]["kind"], "avg-bits");

  // Infeasible fixed budget: the error reaches the caller.
  mixed::SearchOptions bad;
  bad.budgets.avg_bits = 1.0;
  EXPECT_ERROR_CONTAINS(mixed::run_search(*m, test, traces, bad, ds.images.slice(0, 0, 1).to(torch::kFloat32)),
                        "infeasible budget: average bits <= 1");
  traces.layers.pop_back();
  EXPECT_ERROR_CONTAINS(mixed::run_search(*m, test, traces, o, ds.images.slice(0, 0, 1).to(torch::kFloat32)),
                        "the traces file has no layer 'conv3'");

  // The report draws every section from these files and names missing ones.
  const auto dir = bitswitch::testing::temp_dir("report");
  EXPECT_ERROR_CONTAINS(mixed::build_report({dir + "/none"}), "does not exist");
  auto empty = mixed::build_report({dir});
  EXPECT_EQ(empty.missing.size(), 3u);
  EXPECT_NE(empty.html.find("Not available"), std::string::npos);
  write_text_atomically(dir + "/pareto.json", j.dump());
  mixed::TraceReport t2;
  t2.layers = {{"conv2", 10, 3.0, 30, 0, 0}, {"conv3", 10, 1.0, 10, 0, 0}};
  write_text_atomically(dir + "/traces.json", mixed::traces_to_json(t2).dump());
  write_text_atomically(dir + "/metrics.jsonl",
                        R"({"phase":"joint","epoch":1,"train_loss":{"w8":1.0,"w4":1.2},"test_accuracy":{"fp32":80,"w8":79,"w4":75},"test_loss":{"w8":0.5}})"
                        "\n"
                        R"({"phase":"joint","epoch":2,"train_loss":{"w8":0.8,"w4":0.9},"test_accuracy":{"fp32":85,"w8":84,"w4":80},"test_loss":{"w8":0.4}})"
                        "\n");
  auto full = mixed::build_report({dir});
  EXPECT_TRUE(full.missing.empty());
  EXPECT_EQ(full.sections, (std::vector<std::string>{"training", "traces", "bitmap", "pareto"}));
  EXPECT_EQ(full.html.find("<script"), std::string::npos);
  EXPECT_EQ(full.html.find("http://") , full.html.find("http://www.w3.org/2000/svg"));  // no links but the SVG namespace
  EXPECT_NE(full.html.find("Per-layer bit map"), std::string::npos);
  std::ofstream(dir + "/metrics.jsonl", std::ios::app) << "{broken\n";
  EXPECT_ERROR_CONTAINS(mixed::build_report({dir}), "metrics.jsonl' line 3: not valid JSON");
}

TEST(Hasb, TrainingSwitchesLayersAndTrainsTransitionalBns) {
  const auto dir = bitswitch::testing::temp_dir("hasb");
  auto c = bitswitch::testing::tiny_config(dir + "/mp");
  c.epochs = 1;
  c.train_limit = 128;
  c.test_limit = 64;
  train::run_training(c);

  // Traces of the multi-precision model on 64 images.
  train::Checkpoint ck(dir + "/mp/checkpoint.pt");
  auto m = models::create_model(ck.spec());
  ck.load_model(*m, true);
  auto data = data::load_dataset("fashion-mnist", "");
  data::LoaderOptions lo;
  lo.batch_size = 32;
  lo.limit = 64;
  data::Loader loader(data.train, lo);
  mixed::HutchinsonOptions ho;
  ho.max_probes = 3;
  auto rep = mixed::layer_traces(*m, loader, ho);
  ASSERT_EQ(rep.layers.size(), 2u);
  EXPECT_EQ(rep.bits, 8);
  EXPECT_EQ(rep.images, 64);
  EXPECT_GT(rep.layers[0].trace, 0);
  write_text_atomically(dir + "/traces.json", mixed::traces_to_json(rep).dump());

  auto h = c;
  h.hasb = true;
  h.init = dir + "/mp/checkpoint.pt";
  h.traces = dir + "/traces.json";
  h.hasb_sigma = 1.0;
  h.epochs = 1;
  h.out = dir + "/hasb";
  // The trainer refuses HASB without its width schedule (mixed/hasb.h), which the CLI passes.
  EXPECT_ERROR_CONTAINS(train::run_training(h), "hasb: the trainer needs HASB's width schedule");
  EXPECT_TRUE(train::run_training(h, mixed::hasb_schedule(h).get()).finished);
  // With sigma 1, mixed configurations ran: some transitional BN moved away from its uniform BN.
  train::Checkpoint after(dir + "/hasb/checkpoint.pt");
  auto m2 = models::create_model(after.spec());
  after.load_model(*m2, true);
  auto bn3 = m2->named_modules()["bn3"]->as<nn::SwitchableBatchNorm2dImpl>();
  int moved = 0;
  for (const auto& [key, bnm] : bn3->bns())
    if (key.find('_') != std::string::npos)
      moved += !torch::equal(bnm->running_mean, bn3->bn_for_key(key.substr(key.find('_') + 1))->running_mean);
  EXPECT_GT(moved, 0);

  auto bad = h;
  bad.init = dir + "/mp/fp32.pt";
  bad.out = dir + "/bad";
  EXPECT_ERROR_CONTAINS(train::run_training(bad, mixed::hasb_schedule(bad).get()),
                        "is an FP32 checkpoint; HASB starts from a multi-precision one");
  bad.init = "";
  EXPECT_ERROR_CONTAINS(bad.validate(), "hasb needs `init`");
  bad.init = h.init;
  bad.traces = "";
  EXPECT_ERROR_CONTAINS(bad.validate(), "roulette hessian needs `traces`");
}
