// Language models (SPEC.md Sec. 9): rotary embedding and causal mask against their formulas,
// group-wise Double Rounding and per-token inputs against composed-op references, tokenizer
// round trips, the text split and token windows, and resume of an LM run.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "bitswitch/data/text.h"
#include "bitswitch/util/error.h"
#include "bitswitch/models/llama.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/train/checkpoint.h"
#include "bitswitch/train/lm_trainer.h"
#include "test_util.h"

namespace bs = bitswitch;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

fs::path tmp_dir(const std::string& name) {
  auto d = fs::path(BITSWITCH_TEST_TMP) / ("lm_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& s) {
  std::ofstream o(p, std::ios::binary);
  o << s;
}

// Deterministic English-like text with punctuation, digits, tabs, repeated spaces and non-ASCII.
std::string sample_text(int lines, uint64_t seed) {
  static const char* words[] = {"the",  "quick", "brown",  "fox",    "jumps", "over",  "lazy", "dog",   "naïve",
                                "café", "time",  "flies",  "like",   "an",    "arrow", "fruit", "banana", "42",
                                "1999", "—",     "world",  "hello",  "code",  "bits",  "width"};
  std::mt19937_64 rng(seed);
  std::string s;
  for (int l = 0; l < lines; ++l) {
    const int n = 3 + int(rng() % 9);
    for (int i = 0; i < n; ++i) {
      if (i) s += (rng() % 11 == 0) ? "  " : (rng() % 17 == 0 ? "\t" : " ");
      s += words[rng() % (sizeof(words) / sizeof(words[0]))];
    }
    s += (rng() % 5 == 0) ? ".\n\n" : ".\n";
  }
  return s;
}

bs::models::ModelSpec tiny_spec(int64_t vocab, json arch, std::vector<int> bits = {8, 4}) {
  bs::models::ModelSpec s;
  s.name = "llama";
  s.num_classes = vocab;
  s.bits = bits;
  s.arch = bs::models::resolve_llama_arch(arch, "test");
  return s;
}

}  // namespace

// ---------------- rotary embedding, mask ----------------

TEST(LmRope, MatchesTheRotationFormula) {
  const int64_t t = 7, hd = 8;
  const double theta = 10000;
  auto [cos, sin] = bs::models::rope_tables(t, hd, theta);
  torch::manual_seed(3);
  auto x = torch::randn({2, 3, t, hd});
  auto y = bs::models::apply_rope(x, cos, sin);
  auto xa = x.accessor<float, 4>();
  auto ya = y.accessor<float, 4>();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 3; ++h)
      for (int64_t p = 0; p < t; ++p)
        for (int64_t i = 0; i < hd / 2; ++i) {
          // Pair (i, i + hd/2) rotated by the angle p * theta^(-2i / hd).
          const double a = double(p) * std::pow(theta, -2.0 * double(i) / double(hd));
          const double x1 = xa[b][h][p][i], x2 = xa[b][h][p][i + hd / 2];
          EXPECT_NEAR(ya[b][h][p][i], x1 * std::cos(a) - x2 * std::sin(a), 2e-5);
          EXPECT_NEAR(ya[b][h][p][i + hd / 2], x2 * std::cos(a) + x1 * std::sin(a), 2e-5);
        }
  // A rotation: norms of every pair are kept, and position 0 is the identity.
  EXPECT_TRUE(torch::allclose(y.select(2, 0), x.select(2, 0)));
}

TEST(LmRope, OddHeadWidthIsAnError) {
  EXPECT_THROW(bs::models::rope_tables(4, 7, 10000), bs::Error);
}

TEST(LmMask, CausalMaskFormulaAndNoLookAhead) {
  auto m = bs::models::causal_mask(5);
  for (int64_t q = 0; q < 5; ++q)
    for (int64_t k = 0; k < 5; ++k) {
      const float v = m[q][k].item<float>();
      if (k <= q) EXPECT_EQ(v, 0.0f);
      else EXPECT_TRUE(std::isinf(v) && v < 0);
    }
  // The model's logits at position p do not depend on tokens after p, at FP and at 4 bits.
  torch::manual_seed(5);
  auto model = std::dynamic_pointer_cast<bs::models::LlamaImpl>(bs::models::create_model(
      tiny_spec(50, {{"dim", 32}, {"layers", 2}, {"heads", 4}, {"kv_heads", 2}, {"mlp", 64}, {"context", 12}})));
  model->eval();
  torch::NoGradGuard ng;
  auto a = torch::randint(0, 50, {2, 12}, torch::kInt64);
  auto b = a.clone();
  b.narrow(1, 7, 5).random_(0, 50);
  for (int w : {bs::nn::kFloatBits, 4}) {
    bs::nn::apply_bits(*model, bs::nn::BitConfig::uniform(w));
    auto la = model->forward(a), lb = model->forward(b);
    EXPECT_TRUE(torch::allclose(la.narrow(1, 0, 7), lb.narrow(1, 0, 7), 1e-5, 1e-5)) << w;
    EXPECT_FALSE(torch::allclose(la.narrow(1, 7, 5), lb.narrow(1, 7, 5))) << w;
  }
}

TEST(LmModel, GroupedQueryAttentionEqualsRepeatedKeyValueHeads) {
  // kv_heads = 2 of 4 heads equals a full-head model whose k/v rows repeat each kv head twice.
  torch::manual_seed(7);
  json base{{"dim", 32}, {"layers", 1}, {"heads", 4}, {"mlp", 64}, {"context", 8}};
  auto gqa_arch = base;
  gqa_arch["kv_heads"] = 2;
  auto full_arch = base;
  full_arch["kv_heads"] = 4;
  auto gqa = std::dynamic_pointer_cast<bs::models::LlamaImpl>(bs::models::create_model(tiny_spec(40, gqa_arch)));
  auto full = std::dynamic_pointer_cast<bs::models::LlamaImpl>(bs::models::create_model(tiny_spec(40, full_arch)));
  torch::NoGradGuard ng;
  auto src = gqa->named_parameters(), dst = full->named_parameters();
  for (const auto& p : dst) {
    const auto& s = src[p.key()];
    if (p.value().sizes() == s.sizes()) {
      p.value().copy_(s);
    } else {  // [2 * 8, ...] -> [4 * 8, ...]: head-major rows (weights, scales), each kv head twice
      auto shape = s.sizes().vec();
      shape[0] = 8;
      shape.insert(shape.begin(), 2);
      p.value().copy_(s.view(shape).repeat_interleave(2, 0).reshape(p.value().sizes()));
    }
  }
  auto x = torch::randint(0, 40, {2, 8}, torch::kInt64);
  EXPECT_TRUE(torch::allclose(gqa->forward(x), full->forward(x), 1e-5, 1e-5));
}

TEST(LmModel, ArchPresetsOverridesAndErrors) {
  auto a = bs::models::resolve_llama_arch({{"preset", "tiny"}, {"layers", 2}}, "t");
  EXPECT_EQ(a["layers"], 2);
  EXPECT_EQ(a["dim"], 128);
  EXPECT_ERROR_CONTAINS((void)(bs::models::resolve_llama_arch({{"preset", "huge"}}, "cfg.yaml")), "unknown arch preset 'huge'");
  EXPECT_ERROR_CONTAINS((void)(bs::models::resolve_llama_arch({{"layerz", 2}}, "cfg.yaml")), "unknown arch field 'layerz'");
  EXPECT_ERROR_CONTAINS((void)(bs::models::create_model(tiny_spec(40, {{"dim", 30}, {"heads", 4}}))), "multiple of `heads`");
  EXPECT_ERROR_CONTAINS((void)(bs::models::create_model(tiny_spec(40, {{"group_size", 48}}))), "`group_size` 48");
  // Every block linear follows the bit config; the embedding and head do not (FP by default).
  auto m = bs::models::create_model(tiny_spec(40, {{"layers", 2}}));
  EXPECT_EQ(bs::nn::quant_layers(*m).size(), 2u * 7u);
}

// ---------------- group-wise Double Rounding, per-token inputs ----------------

namespace {
// The composed-op reference of SPEC Sec. 2 per (row, group): W_l, and the gradients of
// L = sum(dOut * W_l) with respect to W and the scales.
struct GroupRef {
  torch::Tensor wq, dw, ds;
};
GroupRef group_reference(const torch::Tensor& w, const torch::Tensor& s, int64_t g, int h, int l,
                         const torch::Tensor& dout) {
  const int d = h - l;
  const double qn = -(1 << (l - 1)), qp = (1 << (l - 1)) - 1;
  auto wg = w.reshape({-1, g}).to(torch::kFloat64);
  auto sg = s.to(torch::kFloat64).unsqueeze(1);
  auto sf = s.unsqueeze(1);
  // First rounding in float as the quantizer does it: w * (1 / s).
  auto vh = (w.reshape({-1, g}) * sf.reciprocal()).to(torch::kFloat64);
  auto qh = torch::round(torch::clamp(vh, -(1 << (h - 1)), (1 << (h - 1)) - 1));
  auto ql = torch::clamp(torch::floor((qh + (d ? (1 << (d - 1)) : 0)) / double(1 << d)), qn, qp);
  GroupRef r;
  r.wq = (ql * sg * double(1 << d)).to(torch::kFloat32).reshape(w.sizes());
  auto v = vh / double(1 << d);
  auto inside = (v >= qn).logical_and(v <= qp);
  auto e = torch::where(inside, ql - v, torch::where(v < qn, torch::full_like(v, qn), torch::full_like(v, qp)));
  auto dg = dout.reshape({-1, g}).to(torch::kFloat64);
  r.dw = (dg * inside).to(torch::kFloat32).reshape(w.sizes());
  r.ds = ((dg * e).sum(1) / std::sqrt(double(g) * qp)).to(torch::kFloat32);
  (void)wg;
  return r;
}
}  // namespace

TEST(LmQuant, GroupWiseDoubleRoundingCodesAndGradients) {
  for (auto impl : {bs::quant::Impl::kFused, bs::quant::Impl::kReference}) {
    torch::manual_seed(11);
    const int64_t in = 128, out = 6, g = 64;
    auto q = bs::nn::QuantOptions().bits({8, 6, 4, 2}).per_token_input(true).group_size(g).impl(impl);
    bs::nn::QLinear lin(bs::nn::QLinearOptions(in, out).bias(false).quant(q));
    ASSERT_EQ(lin->weight_scale().numel(), out * (in / g));
    for (int l : {8, 6, 4, 2}) {
      lin->set_bits({l, l});
      auto x = torch::randn({3, 5, in});
      auto y = lin->forward(x);  // initialises the per-group scales on the first call
      auto scale = lin->weight_scale().detach().clone();
      // Per-group 3-sigma init of Sec. 2.
      auto wg = lin->weight.detach().reshape({-1, g});
      auto mu = wg.mean(1), sd = wg.std(1);
      EXPECT_TRUE(torch::allclose(scale, torch::max((mu - 3 * sd).abs(), (mu + 3 * sd).abs()) / 128.0, 1e-6, 0));
      auto dout = torch::randn(y.sizes());
      lin->weight.mutable_grad().reset();
      lin->weight_scale().mutable_grad().reset();
      (y * dout).sum().backward();
      // Reference: per-token 8-bit input and the group-wise l-bit weight, composed.
      auto xa = std::get<0>(x.abs().max(-1, true)) / 127.0;
      auto xq = torch::round(torch::clamp(x * xa.reciprocal(), -127, 127)) * xa;
      auto dwq = torch::matmul(dout.reshape({-1, out}).t(), xq.reshape({-1, in}));
      auto ref = group_reference(lin->weight.detach(), scale, g, 8, l, dwq);
      EXPECT_TRUE(torch::allclose(y, torch::matmul(xq, ref.wq.t()), 1e-5, 1e-5)) << l;
      EXPECT_TRUE(torch::allclose(lin->weight.grad(), ref.dw, 1e-5, 1e-5)) << l;
      EXPECT_TRUE(torch::allclose(lin->weight_scale().grad(), ref.ds, 1e-4, 1e-6)) << l;
      // The stored codes of a group are the per-channel codes of the grouped view.
      auto codes = bs::quant::weight_codes(lin->scale_view(lin->weight), scale, 8);
      auto lcodes = bs::quant::derive_codes(codes, 8, l, bs::quant::SecondRounding::kHalfUp).to(torch::kFloat32);
      EXPECT_TRUE(torch::equal((lcodes * scale.unsqueeze(1) * double(1 << (8 - l))).reshape({out, in}), ref.wq)) << l;
    }
  }
}

TEST(LmQuant, PerTokenInputFormulaAndStraightThroughGradient) {
  torch::manual_seed(2);
  auto x = torch::randn({4, 9, 33}, torch::requires_grad());
  {
    torch::NoGradGuard ng;
    x.select(1, 3).zero_();  // an all-zero token stays zero
  }
  auto y = bs::quant::fake_quant_per_token(x, 8);
  auto xd = x.detach();
  // a_t = max|x_t| / 127 (an all-zero token: any positive scale), q = round(x * (1 / a_t)).
  auto a = std::get<0>(xd.abs().max(-1, true)).clamp_min(1e-30) / 127.0;
  auto codes = torch::round(xd * a.reciprocal());
  EXPECT_LE(codes.abs().max().item<float>(), 127.0f);
  EXPECT_TRUE(torch::equal(y, codes * a));
  EXPECT_EQ(y.select(1, 3).abs().sum().item<float>(), 0.0f);
  // The token's largest |x| is exactly representable (code +-127).
  EXPECT_TRUE(torch::allclose(std::get<0>(y.abs().max(-1)), std::get<0>(xd.abs().max(-1)), 1e-6, 0));
  auto g = torch::randn(y.sizes());
  (y * g).sum().backward();
  EXPECT_TRUE(torch::equal(x.grad(), g));
  EXPECT_ERROR_CONTAINS((void)(bs::quant::fake_quant_per_token(xd, 9)), "`bits` must be in [2, 8]");
}

// ---------------- text data ----------------

TEST(LmText, SplitRuleAndDirectoryFiles) {
  const std::string text = "line one\nline two\nline three\nline four\n";
  auto [train, heldout] = bs::data::split_text(text, 0.3);
  EXPECT_EQ(train + heldout, text);
  // 30% of 39 bytes = 11 bytes held out, moved forward to the next line start.
  EXPECT_EQ(heldout, "line four\n");
  auto d = tmp_dir("split");
  write(d / "b.txt", "beta\nbeta\n");
  write(d / "a.txt", text);
  write(d / "binary.dat", std::string("\x00\x01\x02", 3));
  write(d / "latin1.txt", "caf\xe9\n");
  fs::create_symlink(d / "a.txt", d / "a.link");
  auto split = bs::data::read_text_split({d.string()}, 0.3);
  ASSERT_EQ(split.files.size(), 2u);
  EXPECT_EQ(fs::path(split.files[0]).filename(), "a.txt");
  EXPECT_EQ(split.skipped, 3);  // binary, latin-1 and the symlink
  // b.txt: 3 bytes held out move forward to the end of the file, so it is all training text.
  EXPECT_EQ(split.train, "line one\nline two\nline three\nbeta\nbeta\n");
  EXPECT_EQ(split.heldout, "line four\n");
  EXPECT_ERROR_CONTAINS((void)(bs::data::read_text_split({(d / "latin1.txt").string()}, 0.1)), "is not UTF-8 text");
  EXPECT_ERROR_CONTAINS((void)(bs::data::read_text_split({(d / "nope").string()}, 0.1)), "does not exist");
}

TEST(LmText, Utf8Validation) {
  EXPECT_TRUE(bs::data::is_valid_utf8("naïve — 日本 \xF0\x9F\x98\x80"));
  EXPECT_FALSE(bs::data::is_valid_utf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(bs::data::is_valid_utf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(bs::data::is_valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(bs::data::is_valid_utf8("abc\xE2\x96"));       // truncated
}

TEST(LmText, WindowsAreContiguousAndShuffledBySeed) {
  bs::data::TokenWindows w(torch::arange(23, torch::kInt64), 5);
  ASSERT_EQ(w.size(), 4);  // windows of 6 tokens starting at 0, 5, 10, 15
  auto b = w.gather(torch::tensor({2, 0}, torch::kInt64));
  EXPECT_TRUE(torch::equal(b[0], torch::arange(10, 16, torch::kInt64)));
  EXPECT_TRUE(torch::equal(b[1], torch::arange(0, 6, torch::kInt64)));
  auto o1 = w.order(7, 0), o2 = w.order(7, 0), o3 = w.order(7, 1);
  EXPECT_TRUE(torch::equal(o1, o2));
  EXPECT_TRUE(torch::equal(std::get<0>(o1.sort()), torch::arange(4, torch::kInt64)));
  bs::data::TokenWindows many(torch::arange(1001, torch::kInt64), 10);
  EXPECT_FALSE(torch::equal(many.order(7, 0), many.order(7, 1)));
  EXPECT_FALSE(torch::equal(many.order(7, 0), many.order(8, 0)));
  (void)o3;
}

TEST(LmText, TokenizerRoundTrips) {
  const auto text = sample_text(400, 1);
  auto spm = bs::data::train_sentencepiece(text, 400, "bpe", 1);
  EXPECT_EQ(spm->vocab_size(), 400);
  auto bytes = bs::data::byte_tokenizer();
  // Text the tokenizer never saw: emoji, CJK, leading/trailing spaces, blank lines, tabs.
  const std::string unseen = "  Leading spaces\n\n\ttab \xF0\x9F\x98\x80 日本語 naïve   end  \nno newline";
  for (const std::string& s : {text.substr(0, 2000), unseen}) {
    auto ids = spm->encode(s);
    EXPECT_EQ(spm->decode(ids), s);
    EXPECT_LT(ids.size(), s.size() + 1);
    int64_t nbytes = 0;
    for (auto id : ids) nbytes += spm->token_bytes(id);
    EXPECT_EQ(nbytes, int64_t(s.size()));  // bits per byte counts exactly the text's bytes
    EXPECT_EQ(bytes->decode(bytes->encode(s)), s);
  }
  // Subwords compress the training text; the serialized model reloads to the same tokenizer.
  EXPECT_LT(spm->encode(text).size() * 2, text.size());
  auto again = bs::data::load_tokenizer("sentencepiece", spm->serialize(), "test");
  EXPECT_EQ(again->encode(unseen), spm->encode(unseen));
  EXPECT_ERROR_CONTAINS((void)(bs::data::load_tokenizer("sentencepiece", "garbage", "run/x.pt")), "run/x.pt: not a sentencepiece model");
  EXPECT_ERROR_CONTAINS((void)(bs::data::load_tokenizer("wordpiece", "", "run/x.pt")), "unknown tokenizer 'wordpiece'");
}

// ---------------- training, evaluation, resume ----------------

namespace {
bs::train::LmConfig tiny_run(const fs::path& data, const fs::path& out) {
  bs::train::LmConfig c;
  c.arch = {{"dim", 32}, {"layers", 1}, {"heads", 2}, {"kv_heads", 1}, {"mlp", 64}, {"context", 16}};
  c.bits = {8, 4};
  c.data = {data.string()};
  c.heldout_fraction = 0.1;
  c.tokenizer = "byte";
  c.fp_steps = 4;
  c.steps = 3;
  c.batch = 4;
  c.warmup_steps = 1;
  c.eval_interval = 2;
  c.eval_windows = 6;
  c.threads = 1;
  c.log_interval = 1e9;
  c.out = out.string();
  return c;
}

std::map<std::string, torch::Tensor> tensors_of(const std::string& path) {
  auto lm = bs::train::load_lm_checkpoint(path);
  std::map<std::string, torch::Tensor> m;
  for (const auto& p : lm.model->named_parameters()) m[p.key()] = p.value().detach().clone();
  for (const auto& b : lm.model->named_buffers()) m[b.key()] = b.value().detach().clone();
  return m;
}

std::vector<json> metrics_without_time(const fs::path& run) {
  std::ifstream in(run / "metrics.jsonl");
  std::vector<json> out;
  std::string l;
  while (std::getline(in, l)) {
    auto j = json::parse(l);
    j.erase("seconds");
    out.push_back(j);
  }
  return out;
}
}  // namespace

TEST(LmTrain, ResumeReproducesTheUninterruptedRun) {
  auto d = tmp_dir("resume");
  write(d / "corpus.txt", sample_text(300, 4));
  auto full = bs::train::run_lm_training(tiny_run(d / "corpus.txt", d / "full"));
  ASSERT_TRUE(full.finished);
  // Interrupted inside the FP phase (between evaluations) and inside the joint phase.
  auto c = tiny_run(d / "corpus.txt", d / "parts");
  c.stop_after = 3;
  EXPECT_FALSE(bs::train::run_lm_training(c).finished);
  c.resume = true;
  EXPECT_FALSE(bs::train::run_lm_training(c).finished);  // steps 4 (fp) .. 2 (joint)
  c.stop_after = 0;
  auto parts = bs::train::run_lm_training(c);
  ASSERT_TRUE(parts.finished);
  const auto a = tensors_of((d / "full" / "checkpoint.pt").string());
  const auto b = tensors_of((d / "parts" / "checkpoint.pt").string());
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [k, v] : a) EXPECT_TRUE(torch::equal(v, b.at(k))) << k;
  EXPECT_EQ(metrics_without_time(d / "full"), metrics_without_time(d / "parts"));
  EXPECT_EQ(full.perplexity, parts.perplexity);
  // summary.json: perplexity and bits per byte per width, fp32 = the pre-trained model.
  std::ifstream in(d / "full" / "summary.json");
  auto s = json::parse(in);
  for (const char* k : {"fp32", "w8", "w4"}) {
    ASSERT_TRUE(s["perplexity"].contains(k)) << k;
    // Byte tokens: bits per byte is the loss in bits.
    EXPECT_NEAR(s["bits_per_byte"][k].get<double>(), s["loss"][k].get<double>() / std::log(2.0), 1e-9);
    EXPECT_NEAR(s["perplexity"][k].get<double>(), std::exp(s["loss"][k].get<double>()), 1e-9);
  }
  EXPECT_TRUE(s.contains("seconds"));
  // FP32 of the summary is the model the joint phase started from (fp32.pt).
  auto fp = bs::train::load_lm_checkpoint((d / "full" / "fp32.pt").string());
  std::ifstream text(d / "corpus.txt");
  auto split = bs::data::read_text_split({(d / "corpus.txt").string()}, 0.1);
  auto corpus = bs::data::tokenize_corpus(split, fp.tokenizer);
  bs::data::TokenWindows windows(corpus.heldout_tokens, 16);
  auto r = bs::train::evaluate_lm(*fp.model, windows, *fp.tokenizer, bs::nn::BitConfig::fp32(), 6);
  EXPECT_NEAR(r.perplexity, s["perplexity"]["fp32"].get<double>(), 1e-9);
}

TEST(LmTrain, ConfigErrorsNameTheField) {
  bs::train::LmConfig c;
  EXPECT_ERROR_CONTAINS((void)(c.merge_json({{"stepz", 3}}, "lm.yaml")), "lm.yaml: unknown field 'stepz'");
  EXPECT_ERROR_CONTAINS((void)(c.merge_json({{"steps", "many"}}, "lm.yaml")), "field `steps` must be like");
  c.merge_json({{"tokenizer", "words"}}, "lm.yaml");
  EXPECT_ERROR_CONTAINS((void)(c.validate()), "`tokenizer` must be sentencepiece or byte");
}
