// The deployment artifact and the integer runtime without LibTorch: round trips, integer
// switching, every class of bad artifact, and the runtime's GEMM paths against the scalar one.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <filesystem>
#include <random>
#include <thread>

#include "bitswitch/deploy/artifact.h"
#include "bitswitch/deploy/lm_artifact.h"
#include "bitswitch/deploy/packing.h"
#include "bitswitch/deploy/runtime.h"
#include "bitswitch/format/graph.h"
#include "bitswitch/util/error.h"
#include "deploy_test_util.h"

namespace fs = std::filesystem;
using namespace bitswitch;
using namespace bitswitch::deploy;
using namespace bitswitch::format;
using bitswitch::format::OpKind;

namespace {

std::string tmp_path(const std::string& name) {
  const fs::path dir = fs::path(BITSWITCH_DEPLOY_TEST_TMP) / ("art_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

LayerRecord layer(const std::string& name, LayerKind kind, int64_t in, int64_t out, int64_t k, int64_t stride,
                  bool quantized, const std::vector<int>& bits, std::mt19937& rng) {
  LayerRecord l;
  l.name = name;
  l.kind = kind;
  l.in = in, l.out = out, l.kernel = k, l.stride = stride, l.padding = k / 2;
  const size_t n = size_t(out * in * k * k);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  if (!quantized) {
    l.weight.resize(n);
    for (auto& v : l.weight) v = 0.2f * normal(rng);
    return l;
  }
  l.quantized = l.switchable = l.quantize_input = true;
  l.bits = bits.front();
  const int lo = quant::signed_qmin(l.bits), hi = quant::signed_qmax(l.bits);
  std::uniform_int_distribution<int> code(lo, hi);
  l.codes.resize(n);
  for (auto& c : l.codes) c = int8_t(code(rng));
  std::uniform_real_distribution<float> scale(0.5f, 2.0f);
  for (int64_t c = 0; c < out; ++c) l.scale.push_back(scale(rng) / float(out * in * k * k) / 4);
  for (int b : bits) l.act_scale[b] = scale(rng) * 4.0f / float(quant::unsigned_qmax(b));
  return l;
}

BnRecord bn(const std::string& name, const LayerRecord& src, const std::vector<std::string>& keys, std::mt19937& rng) {
  BnRecord b;
  b.name = name;
  b.source = src.name;
  b.channels = src.out;
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  for (const auto& k : keys) {
    BnParams p;
    for (int64_t c = 0; c < b.channels; ++c) {
      p.weight.push_back(u(rng));
      p.bias.push_back(u(rng) - 1.0f);
      p.mean.push_back(u(rng) - 1.0f);
      p.var.push_back(u(rng));
    }
    b.by_key[k] = p;
  }
  return b;
}

std::vector<std::string> width_keys(const std::vector<int>& bits) {
  std::vector<std::string> k;
  for (int b : bits) k.push_back(std::to_string(b));
  return k;
}

// conv -> BN [-> act] in the graph, for the hand-built artifacts below.
std::string conv_bn(GraphBuilder& g, const LayerRecord& l, const BnRecord& b, const std::string& x, int act = 0) {
  const auto q = !l.quantize_input ? InputQuant::kNone : l.signed_input ? InputQuant::kSigned : InputQuant::kUnsigned;
  auto y = g.batchnorm(b.name, g.conv(l.name, x, l.in, l.out, l.kernel, l.stride, l.padding, l.groups, q), b.channels);
  return act == 1 ? g.relu(y) : act == 2 ? g.relu6(y) : y;
}
std::string fc_node(GraphBuilder& g, const LayerRecord& l, const std::string& x) {
  return g.linear(l.name, g.flatten(g.global_avgpool(x)), l.in, l.out, InputQuant::kNone);
}

// A random master artifact with ResNet-20's wiring (one block per stage), smallcnn's, or a small
// MobileNetV2-like network ("tinymbv2": ReLU6, depthwise convs at stride 1 and 2, signed inputs
// of linear bottlenecks, a residual add without ReLU, a 3x3 stride-2 max-pool).
Artifact random_master(const std::string& arch, const std::vector<int>& bits, uint32_t seed) {
  std::mt19937 rng(seed);
  Artifact a;
  a.arch = arch;
  a.spec = {{"name", arch}};
  a.in_channels = 1;
  a.num_classes = 10;
  a.bits = bits;
  a.high_bits = bits.front();
  const auto keys = width_keys(bits);
  GraphBuilder g;
  std::string y = g.input(1);
  auto L = [&](int i) -> LayerRecord& { return a.layers[size_t(i)]; };
  if (arch == "smallcnn") {
    a.layers.push_back(layer("conv1", LayerKind::kConv, 1, 8, 3, 1, false, bits, rng));
    a.layers.push_back(layer("conv2", LayerKind::kConv, 8, 16, 3, 1, true, bits, rng));
    a.layers.push_back(layer("conv3", LayerKind::kConv, 16, 24, 3, 1, true, bits, rng));
    a.layers.push_back(layer("fc", LayerKind::kLinear, 24, 10, 1, 1, false, bits, rng));
    a.layers.back().padding = 0;
    a.bns.push_back(bn("bn1", a.layers[0], {"fp"}, rng));
    a.bns.push_back(bn("bn2", a.layers[1], keys, rng));
    a.bns.push_back(bn("bn3", a.layers[2], keys, rng));
    y = g.maxpool(conv_bn(g, L(0), a.bns[0], y, 1), 2, 2, 0);
    y = g.maxpool(conv_bn(g, L(1), a.bns[1], y, 1), 2, 2, 0);
    y = conv_bn(g, L(2), a.bns[2], y, 1);
    a.graph = g.finish(fc_node(g, L(3), y));
  } else if (arch == "tinymbv2") {
    auto add_conv = [&](const std::string& name, int64_t in, int64_t out, int64_t k, int64_t stride, bool q,
                        int64_t groups, bool sgn) {
      a.layers.push_back(layer(name, LayerKind::kConv, in / groups, out, k, stride, q, bits, rng));
      LayerRecord& l = a.layers.back();
      l.in = in, l.groups = groups, l.signed_input = sgn;
      a.bns.push_back(bn(name + "_bn", l, q ? keys : std::vector<std::string>{"fp"}, rng));
      return int(a.layers.size()) - 1;
    };
    int i = add_conv("stem", 1, 8, 3, 1, false, 1, false);
    y = g.maxpool(conv_bn(g, L(i), a.bns[size_t(i)], y, 2), 3, 2, 1);
    i = add_conv("b1.dw", 8, 8, 3, 1, true, 8, false);
    y = conv_bn(g, L(i), a.bns[size_t(i)], y, 2);
    i = add_conv("b1.project", 8, 8, 1, 1, true, 1, false);
    L(i).padding = 0;
    y = conv_bn(g, L(i), a.bns[size_t(i)], y);
    i = add_conv("b2.expand", 8, 16, 1, 1, true, 1, true);
    L(i).padding = 0;
    y = conv_bn(g, L(i), a.bns[size_t(i)], y, 2);
    i = add_conv("b2.dw", 16, 16, 3, 2, true, 16, false);
    y = conv_bn(g, L(i), a.bns[size_t(i)], y, 2);
    i = add_conv("b2.project", 16, 12, 1, 1, true, 1, false);
    L(i).padding = 0;
    const std::string y2 = conv_bn(g, L(i), a.bns[size_t(i)], y);
    i = add_conv("b3.expand", 12, 24, 1, 1, true, 1, true);
    L(i).padding = 0;
    y = conv_bn(g, L(i), a.bns[size_t(i)], y2, 2);
    i = add_conv("b3.dw", 24, 24, 3, 1, true, 24, false);
    y = conv_bn(g, L(i), a.bns[size_t(i)], y, 2);
    i = add_conv("b3.project", 24, 12, 1, 1, true, 1, false);
    L(i).padding = 0;
    y = g.add(y2, conv_bn(g, L(i), a.bns[size_t(i)], y));
    i = add_conv("last", 12, 16, 1, 1, true, 1, true);
    L(i).padding = 0;
    y = conv_bn(g, L(i), a.bns[size_t(i)], y, 2);
    a.layers.push_back(layer("fc", LayerKind::kLinear, 16, 10, 1, 1, false, bits, rng));
    a.layers.back().padding = 0;
    a.graph = g.finish(fc_node(g, a.layers.back(), y));
  } else {
    a.layers.push_back(layer("stem", LayerKind::kConv, 1, 16, 3, 1, false, bits, rng));
    a.bns.push_back(bn("stem_bn", a.layers.back(), {"fp"}, rng));
    y = conv_bn(g, a.layers.back(), a.bns.back(), y, 1);
    int64_t in = 16;
    const int64_t widths[3] = {16, 32, 64};
    for (int s = 0; s < 3; ++s) {
      const std::string p = "blocks." + std::to_string(s) + ".";
      const int64_t stride = s ? 2 : 1;
      a.layers.push_back(layer(p + "conv1", LayerKind::kConv, in, widths[s], 3, stride, true, bits, rng));
      a.bns.push_back(bn(p + "bn1", a.layers.back(), keys, rng));
      auto z = conv_bn(g, a.layers.back(), a.bns.back(), y, 1);
      a.layers.push_back(layer(p + "conv2", LayerKind::kConv, widths[s], widths[s], 3, 1, true, bits, rng));
      a.bns.push_back(bn(p + "bn2", a.layers.back(), keys, rng));
      z = conv_bn(g, a.layers.back(), a.bns.back(), z);
      std::string shortcut = y;
      if (s) {
        a.layers.push_back(layer(p + "down_conv", LayerKind::kConv, in, widths[s], 1, stride, true, bits, rng));
        a.layers.back().padding = 0;
        a.bns.push_back(bn(p + "down_bn", a.layers.back(), keys, rng));
        shortcut = conv_bn(g, a.layers.back(), a.bns.back(), y);
      }
      y = g.relu(g.add(z, shortcut));
      in = widths[s];
    }
    a.layers.push_back(layer("fc", LayerKind::kLinear, 64, 10, 1, 1, false, bits, rng));
    a.layers.back().padding = 0;
    a.layers.back().bias.assign(10, 0.1f);
    a.graph = g.finish(fc_node(g, a.layers.back(), y));
  }
  return a;
}

// The artifact image with `edit` applied to its tensors and metadata, parsed back.
Artifact reparse(const Artifact& a, const std::function<void(std::vector<TensorToWrite>&, std::map<std::string, std::string>&)>& edit) {
  std::map<std::string, std::string> meta;
  auto tensors = artifact_tensors(a, &meta);
  edit(tensors, meta);
  const auto bytes = serialize_safetensors(tensors, meta);
  return artifact_from_safetensors(parse_safetensors(bytes.data(), bytes.size(), "bad.safetensors"));
}


TensorToWrite& find(std::vector<TensorToWrite>& ts, const std::string& name) {
  for (auto& t : ts)
    if (t.name == name) return t;
  throw std::runtime_error("no tensor " + name);
}

std::vector<float> random_images(int n, int h, int w, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(size_t(n) * h * w);
  for (auto& v : x) v = normal(rng);
  return x;
}

}  // namespace

TEST(Artifact, WriteReadRoundTrip) {
  for (const std::string arch : {"resnet20", "smallcnn", "tinymbv2"}) {
    Artifact a = random_master(arch, {8, 6, 4, 2}, 1);
    for (int c = 0; c < 10; ++c) a.classes.push_back("class " + std::to_string(c));
    const auto path = tmp_path(arch + ".safetensors");
    write_artifact(path, a);
    const Artifact b = read_artifact(path);
    EXPECT_EQ(b.arch, arch);
    EXPECT_TRUE(b.master);
    EXPECT_EQ(b.bits, a.bits);
    ASSERT_EQ(b.layers.size(), a.layers.size());
    for (size_t i = 0; i < a.layers.size(); ++i) {
      EXPECT_EQ(b.layers[i].name, a.layers[i].name);
      EXPECT_EQ(b.layers[i].codes, a.layers[i].codes);
      EXPECT_EQ(b.layers[i].scale, a.layers[i].scale);
      EXPECT_EQ(b.layers[i].act_scale, a.layers[i].act_scale);
      EXPECT_EQ(b.layers[i].weight, a.layers[i].weight);
      EXPECT_EQ(b.layers[i].bias, a.layers[i].bias);
      EXPECT_EQ(b.layers[i].stride, a.layers[i].stride);
      EXPECT_EQ(b.layers[i].groups, a.layers[i].groups);
      EXPECT_EQ(b.layers[i].signed_input, a.layers[i].signed_input);
    }
    EXPECT_EQ(graph_to_json(b.graph), graph_to_json(a.graph));
    EXPECT_EQ(b.classes, a.classes);
    ASSERT_EQ(b.bns.size(), a.bns.size());
    for (size_t i = 0; i < a.bns.size(); ++i) {
      EXPECT_EQ(b.bns[i].source, a.bns[i].source);
      ASSERT_EQ(b.bns[i].by_key.size(), a.bns[i].by_key.size());
      for (const auto& [k, p] : a.bns[i].by_key) EXPECT_EQ(b.bns[i].by_key.at(k).var, p.var);
    }
  }
}

TEST(Artifact, SwitchingDerivesCodesWithTheIntegerRoundingAndPacks) {
  const Artifact m = random_master("resnet20", {8, 6, 4, 2}, 2);
  size_t last_size = SIZE_MAX;
  for (int b : {8, 6, 4, 2}) {
    const Artifact s = switch_uniform(m, b, 2);
    EXPECT_FALSE(s.master);
    EXPECT_EQ(s.label(), "w" + std::to_string(b));
    for (size_t i = 0; i < m.layers.size(); ++i) {
      const auto &ml = m.layers[i], &sl = s.layers[i];
      if (!ml.switchable) continue;
      EXPECT_EQ(sl.bits, b);
      for (size_t j = 0; j < ml.codes.size(); ++j)
        ASSERT_EQ(sl.codes[j], quant::derive_code(ml.codes[j], 8, b, quant::SecondRounding::kHalfUp));
      for (size_t c = 0; c < ml.scale.size(); ++c) EXPECT_EQ(sl.scale[c], ml.scale[c] * float(1 << (8 - b)));
      EXPECT_EQ(sl.act_scale.size(), 1u);
      EXPECT_EQ(sl.act_scale.at(b), ml.act_scale.at(b));
    }
    for (const auto& bnr : s.bns) EXPECT_EQ(bnr.by_key.size(), 1u);
    const auto path = tmp_path("w" + std::to_string(b) + ".safetensors");
    write_artifact(path, s);
    const size_t size = fs::file_size(path);
    EXPECT_LT(size, last_size) << "width " << b;
    last_size = size;
    // Packed codes survive the file round trip.
    const Artifact r = read_artifact(path);
    for (size_t i = 0; i < s.layers.size(); ++i) EXPECT_EQ(r.layers[i].codes, s.layers[i].codes);
    const auto st = read_safetensors(path);
    EXPECT_EQ(st.contains("blocks.0.conv1.weight_packed"), b < 8);
  }
}

TEST(Artifact, PerLayerSwitchAndItsErrors) {
  const Artifact m = random_master("resnet20", {8, 6, 4, 2}, 3);
  auto widths = switch_uniform(m, 4).layer_bits();
  widths["blocks.1.conv2"] = 2;
  widths["blocks.2.down_conv"] = 8;
  const Artifact s = switch_widths(m, widths);
  EXPECT_EQ(s.label(), "mixed");
  EXPECT_EQ(s.layer("blocks.1.conv2").bits, 2);
  EXPECT_EQ(s.bn("blocks.1.bn2").by_key.count("2"), 1u);
  EXPECT_CONTAINS(error_of([&] { switch_widths(s, widths); }), "needs a master artifact");
  auto bad = widths;
  bad["blocks.9.conv1"] = 4;
  EXPECT_CONTAINS(error_of([&] { switch_widths(m, bad); }), "'blocks.9.conv1', which is not a switchable layer");
  bad = widths;
  bad["blocks.0.conv1"] = 3;
  EXPECT_CONTAINS(error_of([&] { switch_widths(m, bad); }), "width 3 is not in the bit list 8,6,4,2");
  bad = widths;
  bad.erase("blocks.0.conv1");
  EXPECT_CONTAINS(error_of([&] { switch_widths(m, bad); }), "do not name switchable layer 'blocks.0.conv1'");
  EXPECT_CONTAINS(error_of([&] { switch_uniform(m, 5); }), "width 5 is not in the artifact's bit list");
}

TEST(Artifact, RejectsEveryClassOfBadArtifact) {
  const Artifact m = random_master("smallcnn", {8, 4, 2}, 4);
  using Ts = std::vector<TensorToWrite>;
  using Meta = std::map<std::string, std::string>;
  auto expect = [&](const std::string& want, std::function<void(Ts&, Meta&)> edit, const Artifact& a) {
    EXPECT_CONTAINS(error_of([&] { reparse(a, edit); }), want);
  };
  expect("bad.safetensors: not a bitswitch artifact", [](Ts&, Meta& md) { md["format"] = "other"; }, m);
  expect("artifact version 7 is not supported", [](Ts&, Meta& md) { md["version"] = "7"; }, m);
  expect("metadata 'version': 'x' is not an integer", [](Ts&, Meta& md) { md["version"] = "x"; }, m);
  expect("metadata 'layers' is not valid JSON", [](Ts&, Meta& md) { md["layers"] = "[{"; }, m);
  expect("layer 'conv2': missing field 'stride'", [](Ts&, Meta& md) {
    auto j = nlohmann::json::parse(md["layers"]);
    j[1].erase("stride");
    md["layers"] = j.dump();
  }, m);
  // Numbers are checked as JSON before any conversion (a fuzzer found this one: as a float,
  // 922337203685477580716 reached an undefined float-to-int64 conversion).
  auto set_field = [](const char* key, nlohmann::json v) {
    return [key, v](Ts&, Meta& md) {
      auto j = nlohmann::json::parse(md["layers"]);
      j[1][key] = v;
      md["layers"] = j.dump();
    };
  };
  expect("layer 'conv2': field 'in' must be an integer, got 9.223372036854776e+20",
         [](Ts&, Meta& md) {
           std::string l = md["layers"];  // keys are sorted: conv2's "in" precedes its "name"
           const auto at = l.find("\"in\":", l.find("},{"));
           const auto end = l.find_first_of(",}", at);
           md["layers"] = l.substr(0, at) + "\"in\":922337203685477580716" + l.substr(end);
         },
         m);
  expect("layer 'conv2': field 'in' = 18446744073709551615 is outside [1, 16777216]",
         set_field("in", nlohmann::json(uint64_t(18446744073709551615ull))), m);
  expect("layer 'conv2': field 'out' = -3 is outside [1, 16777216]", set_field("out", -3), m);
  expect("layer 'conv2': field 'kernel' must be an integer, got 3.5", set_field("kernel", 3.5), m);
  expect("layer 'conv2': field 'stride' must be an integer, got \"2\"", set_field("stride", "2"), m);
  expect("layer 'conv2': field 'bias' must be true or false, got 1", set_field("bias", 1), m);
  expect("layer 'conv2': field 'bits' = 9 is outside [2, 8]", set_field("bits", 9), m);
  expect("metadata 'bits': bit-width 9 is outside [2, 8]", [](Ts&, Meta& md) { md["bits"] = "9,4"; }, m);
  expect("tensor 'conv2.weight_codes' element 3 = 100 is outside the 4-bit range [-8, 7]", [](Ts&, Meta&) {}, [&] {
    Artifact a = random_master("smallcnn", {4, 2}, 8);
    a.layers[1].codes[3] = 100;
    return a;
  }());
  expect("no tensor named 'conv3.weight_scale'", [](Ts& ts, Meta&) {
    ts.erase(std::remove_if(ts.begin(), ts.end(), [](const TensorToWrite& t) { return t.name == "conv3.weight_scale"; }), ts.end());
  }, m);
  expect("unexpected tensor 'extra'", [](Ts& ts, Meta&) {
    float v = 1;
    ts.push_back(make_tensor("extra", "F32", {1}, &v, 4));
  }, m);
  expect("tensor 'conv2.weight_scale' element 2 is zero", [](Ts& ts, Meta&) {
    auto& t = find(ts, "conv2.weight_scale");
    std::fill(t.bytes.begin() + 8, t.bytes.begin() + 12, 0);
  }, m);
  expect("tensor 'conv2.act_scale_4' element 0 is not finite", [](Ts& ts, Meta&) {
    auto& t = find(ts, "conv2.act_scale_4");
    const float nan = std::nanf("");
    std::memcpy(t.bytes.data(), &nan, 4);
  }, m);
  expect("'bn2.8.running_var' element 0 is negative", [](Ts& ts, Meta&) {
    auto& t = find(ts, "bn2.8.running_var");
    const float neg = -1;
    std::memcpy(t.bytes.data(), &neg, 4);
  }, m);
  expect("BatchNorm 'bn2': source layer 'nope' is not in the artifact", [](Ts&, Meta& md) {
    auto j = nlohmann::json::parse(md["bns"]);
    j[1]["source"] = "nope";
    md["bns"] = j.dump();
  }, m);
  expect("'conv2.weight_codes' has dtype", [](Ts& ts, Meta&) { find(ts, "conv2.weight_codes").dtype = "U8"; }, m);
  // A switched artifact must carry the BN its widths select.
  const Artifact s = switch_uniform(m, 4);
  expect("BatchNorm 'bn2' has no parameters for key '4'", [](Ts&, Meta& md) {
    auto j = nlohmann::json::parse(md["bns"]);
    j[1]["keys"] = {"2"};
    md["bns"] = j.dump();
  }, [&] {
    Artifact a = s;
    a.bns[1].by_key = {{"2", a.bns[1].by_key.begin()->second}};
    return a;
  }());
}

TEST(Runtime, GemmPathsAgreeBitForBitOnEveryWidth) {
  for (const std::string arch : {"resnet20", "smallcnn", "tinymbv2"}) {
    const Artifact m = random_master(arch, {8, 6, 4, 3, 2}, 5);
    const auto x = random_images(7, 28, 28, 6);
    for (int b : {8, 6, 4, 3, 2}) {
      const Artifact s = switch_uniform(m, b);
      RuntimeOptions ro;
      ro.threads = 1;
      ro.isa = QgemmIsa::kScalar;
      const auto ref = Runtime(s, ro).forward(x.data(), 7, 28, 28);
      const auto ref1 = Runtime(s, ro).forward(x.data(), 1, 28, 28);  // the few-images path
      for (int variant = 0; variant < 3; ++variant) {
        RuntimeOptions o;
        o.threads = variant == 1 ? 2 : 1;
        o.tile = variant == 1 ? 3 : 4;
        o.unpack_in_gemm = variant == 2;
        const Runtime rt(s, o);
        ASSERT_EQ(rt.forward(x.data(), 7, 28, 28), ref) << arch << " w" << b << " variant " << variant;
        ASSERT_EQ(rt.forward(x.data(), 1, 28, 28), ref1) << arch << " w" << b << " variant " << variant << ", 1 image";
      }
      // Logits are not all equal: the network computes something.
      EXPECT_NE(*std::max_element(ref.begin(), ref.end()), *std::min_element(ref.begin(), ref.end()));
    }
  }
}

// Tiles of large images (over 256 KiB as floats) run each image alone through the early steps
// and gather the values live at the point where the rest runs on the whole tile: the logits of a
// batch equal those of the images run one at a time (a 1-image call runs no tile), for tiles of
// 4 and 3 images on 1 and 2 threads.
TEST(Runtime, TilesOfLargeImagesEqualImagesOneAtATime) {
  constexpr int n = 5, hw = 272;  // 272 x 272 floats: 289 KiB
  const auto x = random_images(n, hw, hw, 12);
  for (const std::string arch : {"resnet20", "smallcnn", "tinymbv2"}) {
    const Artifact s = switch_uniform(random_master(arch, {8, 4}, 13), 4);
    RuntimeOptions one;
    one.threads = 1;
    const Runtime rt1(s, one);
    std::vector<float> ref;
    for (int b = 0; b < n; ++b) {
      const auto l = rt1.forward(x.data() + size_t(b) * hw * hw, 1, hw, hw);
      ref.insert(ref.end(), l.begin(), l.end());
    }
    for (int variant = 0; variant < 3; ++variant) {
      RuntimeOptions o;
      o.threads = variant == 2 ? 2 : 1;
      o.tile = variant == 1 ? 3 : 0;
      EXPECT_EQ(Runtime(s, o).forward(x.data(), n, hw, hw), ref) << arch << " variant " << variant;
    }
  }
}

// A max-pool after conv -> BN -> ReLU runs on the layer's sums (or FP results) ahead of the
// epilogue: the logits equal those of the same network with an identity (a second ReLU) between
// the activation and the pool, which keeps them apart. Half the channels have negative BN
// weights (their epilogue decreases: the pool takes their smallest sum). Integer and FP layers,
// 2x2/2 and 3x3/2/1 pools, a quantized 1-channel stem (its kernel rows padded 3 -> 4 bytes on
// VNNI), the scalar path, 1 and 2 threads, small and large (per-image) inputs.
TEST(Runtime, MaxPoolRunsOnTheSumsAheadOfTheEpilogue) {
  for (const std::string arch : {"smallcnn", "tinymbv2", "smallcnn-qstem"}) {
    Artifact m = random_master(arch == "smallcnn-qstem" ? "smallcnn" : arch, {8, 4}, 21);
    if (arch == "smallcnn-qstem") {  // conv1 quantizes the image: signed 8-bit codes
      std::mt19937 rng(22);
      LayerRecord& l = m.layers[0];
      l = layer(l.name, l.kind, l.in, l.out, l.kernel, l.stride, true, {8, 4}, rng);
      l.signed_input = true;
      m.bns[0] = bn(m.bns[0].name, l, width_keys({8, 4}), rng);
      for (auto& nd : m.graph.nodes)
        if (nd.name == l.name) nd.quant = InputQuant::kSigned;
    }
    for (auto& b : m.bns)
      for (auto& [key, p] : b.by_key)
        for (size_t c = 1; c < p.weight.size(); c += 2) p.weight[c] = -p.weight[c];
    Artifact apart = m;
    int pools = 0;
    for (size_t i = 0, V = apart.graph.nodes.size(); i < V; ++i) {
      if (apart.graph.nodes[i].op != OpKind::kMaxPool) continue;
      GraphNode again;
      again.name = apart.graph.nodes[i].inputs[0] + ".again";
      again.op = OpKind::kRelu;
      again.inputs = {apart.graph.nodes[i].inputs[0]};
      apart.graph.nodes[i].inputs[0] = again.name;
      apart.graph.nodes.push_back(again);
      ++pools;
    }
    ASSERT_GT(pools, 0) << arch;
    for (int b : {8, 4}) {
      const Artifact s = switch_uniform(m, b), sa = switch_uniform(apart, b);
      for (const auto& [n, hw] : {std::pair{3, 28}, std::pair{2, 272}}) {
        const auto x = random_images(n, hw, hw, 23);
        RuntimeOptions scalar;
        scalar.threads = 1;
        scalar.isa = QgemmIsa::kScalar;
        const auto ref = Runtime(sa, scalar).forward(x.data(), n, hw, hw);
        EXPECT_NE(*std::max_element(ref.begin(), ref.end()), *std::min_element(ref.begin(), ref.end()));
        for (int variant = 0; variant < 3; ++variant) {
          RuntimeOptions o;
          o.threads = variant == 1 ? 2 : 1;
          if (variant == 2) o.isa = QgemmIsa::kScalar;
          const Runtime fused(s, o);
          std::string plan;
          for (const auto& l : fused.plan()) plan += l + "\n";
          EXPECT_CONTAINS(plan, arch == "tinymbv2" ? ".maxpool] fp64" : ".maxpool] int gemm");
          const std::string where = arch + " w" + std::to_string(b) + " " + std::to_string(hw) + " variant " +
                                    std::to_string(variant);
          EXPECT_EQ(fused.forward(x.data(), n, hw, hw), ref) << where;
          if (variant < 2) EXPECT_EQ(Runtime(sa, o).forward(x.data(), n, hw, hw), ref) << where << " (apart)";
        }
      }
    }
  }
}

// A Runtime keeps its working memory between calls (a pool of scratch sets): calls of other batch
// sizes in between, and calls from several threads at once, give the logits of a fresh runtime.
TEST(Runtime, ReusedAndConcurrentCallsGiveTheSameLogits) {
  const Artifact s = switch_uniform(random_master("tinymbv2", {8, 4, 2}, 9), 4);
  const auto x = random_images(7, 28, 28, 10);
  RuntimeOptions ro;
  ro.threads = 2;
  const auto fresh7 = Runtime(s, ro).forward(x.data(), 7, 28, 28);
  const auto fresh1 = Runtime(s, ro).forward(x.data(), 1, 28, 28);
  const Runtime rt(s, ro);
  for (int round = 0; round < 2; ++round) {
    ASSERT_EQ(rt.forward(x.data(), 1, 28, 28), fresh1) << round;
    ASSERT_EQ(rt.forward(x.data(), 7, 28, 28), fresh7) << round;
  }
  std::vector<std::vector<float>> got(4);
  std::vector<std::thread> workers;
  for (size_t t = 0; t < got.size(); ++t)
    workers.emplace_back([&, t] { got[t] = rt.forward(x.data(), t % 2 ? 7 : 1, 28, 28); });
  for (auto& w : workers) w.join();
  for (size_t t = 0; t < got.size(); ++t) EXPECT_EQ(got[t], t % 2 ? fresh7 : fresh1) << t;
}

TEST(Runtime, RefusesWhatItCannotRunNamingTheLayer) {
  Artifact m = random_master("tinymbv2", {8, 4}, 7);
  EXPECT_NO_THROW(check_deployable(m));
  // A grouped conv that is not depthwise.
  Artifact grouped = m;
  for (auto& l : grouped.layers)
    if (l.name == "b2.project") {
      l.groups = 4;
      l.codes.resize(size_t(l.out * l.row_elems()));
    }
  for (auto& n : grouped.graph.nodes)
    if (n.layer == "b2.project" && n.op == OpKind::kConv) n.groups = 4;
  EXPECT_CONTAINS(error_of([&] { check_deployable(grouped); }), "layer 'b2.project': a grouped convolution with 4 groups");
  EXPECT_CONTAINS(error_of([&] { Runtime r(switch_uniform(grouped, 4)); }), "b2.project");
}

TEST(Artifact, Version1FilesAreRefusedWithTheWayOut) {
  const Artifact m = random_master("smallcnn", {8, 4}, 9);
  EXPECT_CONTAINS(error_of([&] {
                    reparse(m, [](std::vector<TensorToWrite>&, std::map<std::string, std::string>& md) {
                      md["version"] = "1";
                      md.erase("graph");
                    });
                  }),
                  "artifact version 1 has no op graph; re-export it");
}

TEST(Artifact, GraphValidationNamesTheNode) {
  const Artifact m = random_master("resnet20", {8, 4}, 10);
  using Ts = std::vector<TensorToWrite>;
  using Meta = std::map<std::string, std::string>;
  auto edit_graph = [&](std::function<void(nlohmann::json&)> fn) {
    return error_of([&] {
      reparse(m, [&](Ts&, Meta& md) {
        auto j = nlohmann::json::parse(md["graph"]);
        fn(j);
        md["graph"] = j.dump();
      });
    });
  };
  auto node = [](nlohmann::json& j, const std::string& name) -> nlohmann::json& {
    for (auto& n : j["nodes"])
      if (n["name"] == name) return n;
    throw std::runtime_error("no node " + name);
  };
  EXPECT_CONTAINS(edit_graph([&](nlohmann::json& j) { node(j, "blocks.0.conv1")["op"] = "conv3d"; }),
                  "node 'blocks.0.conv1': unknown op 'conv3d'");
  EXPECT_CONTAINS(edit_graph([&](nlohmann::json& j) { node(j, "blocks.0.conv2")["inputs"] = {"nowhere"}; }),
                  "node 'blocks.0.conv2' reads 'nowhere', which is not a node (dangling input)");
  EXPECT_CONTAINS(edit_graph([&](nlohmann::json& j) { node(j, "blocks.0.conv1")["inputs"] = {"blocks.0.bn2"}; }),
                  "is on a cycle");
  // Shape mismatch: conv2 reads the stem's 16 channels where blocks.2.conv2 takes 64.
  EXPECT_CONTAINS(edit_graph([&](nlohmann::json& j) { node(j, "blocks.2.conv2")["inputs"] = {"stem_bn.relu"}; }),
                  "node 'blocks.2.conv2': input has 16 channels, the layer takes 64 (shape mismatch)");
  EXPECT_CONTAINS(edit_graph([&](nlohmann::json& j) { node(j, "blocks.1.bn2.add")["inputs"][1] = "blocks.0.bn2.add.relu"; }),
                  "node 'blocks.1.bn2.add': adds 32 to 16 channels (shape mismatch)");
  // A huge integer field (as the fuzzer's artifact-huge-int seed): an error naming node and field.
  EXPECT_CONTAINS(error_of([&] {
                    reparse(m, [&](Ts&, Meta& md) {
                      std::string gs = md["graph"];
                      const auto at = gs.find("\"kernel\":");
                      const auto end = gs.find_first_of(",}", at);
                      md["graph"] = gs.substr(0, at) + "\"kernel\":922337203685477580716" + gs.substr(end);
                    });
                  }),
                  "field 'kernel' must be an integer, got 9.223372036854776e+20");
  EXPECT_CONTAINS(edit_graph([&](nlohmann::json& j) { node(j, "blocks.0.conv1")["stride"] = uint64_t(1) << 63; }),
                  "node 'blocks.0.conv1': field 'stride' = 9223372036854775808 is outside [1, 64]");
  EXPECT_CONTAINS(edit_graph([&](nlohmann::json& j) { node(j, "blocks.0.conv1")["quant"] = "signed"; }),
                  "node 'blocks.0.conv1': input quantizer 'signed' differs from layer 'blocks.0.conv1'");
  EXPECT_CONTAINS(edit_graph([&](nlohmann::json& j) { j["output"] = "blocks.0.bn1"; }), "has 16 values per image");
  EXPECT_CONTAINS(edit_graph([&](nlohmann::json& j) { j["nodes"].erase(j["nodes"].size() - 1); }), "output 'fc'");
}

TEST(Runtime, PlanFusesConvBnActAddAndQuantizer) {
  const Artifact m = random_master("tinymbv2", {8, 4}, 11);
  RuntimeOptions o;
  o.threads = 1;
  const Runtime r(switch_uniform(m, 4), o);
  const auto plan = r.plan();
  std::string all;
  for (const auto& l : plan) all += l + "\n";
  // The residual add is fused into the projection's epilogue; linear bottleneck outputs feeding
  // only a signed expansion are stored as its codes.
  EXPECT_CONTAINS(all, "layer [b3.project -> b3.project_bn -> b2.project_bn.add]");
  EXPECT_CONTAINS(all, "layer [b1.project -> b1.project_bn] int gemm w4 in:u4 -> codes");
  EXPECT_CONTAINS(all, "layer [b2.expand -> b2.expand_bn -> b2.expand_bn.relu6] int gemm w4 in:s4 -> codes");
  EXPECT_CONTAINS(all, "int depthwise");
  // Buffers are reused: fewer buffers than steps.
  EXPECT_LT(plan.size(), size_t(30));
  // A residual add writes its result in place of its other operand where that is last read there
  // (ResNet-20's identity and downsample shortcuts; float results only).
  std::string r20;
  for (const auto& l : Runtime(switch_uniform(random_master("resnet20", {8, 4}, 11), 8), o).plan()) r20 += l + "\n";
  const auto buf_of = [&](const std::string& step) {
    const size_t at = r20.find(step), b = r20.find("float buf", at);
    EXPECT_NE(at, std::string::npos) << step;
    return r20.substr(b, r20.find_first_not_of("0123456789", b + 9) - b);
  };
  EXPECT_EQ(buf_of("layer [blocks.1.conv2"), buf_of("layer [blocks.1.down_conv")) << r20;
  EXPECT_EQ(buf_of("layer [blocks.0.conv2"), buf_of("layer [stem")) << r20;
}

TEST(Artifact, FuzzSeedsAreVersion2AndTheHugeIntegerIsAnError) {
  const std::string dir = std::string(BITSWITCH_SOURCE_DIR) + "/fuzz/corpus/";
  const Artifact a = read_artifact(dir + "artifact-smallcnn.safetensors");
  EXPECT_EQ(a.graph.nodes.size(), size_t(15));
  EXPECT_EQ(a.classes.size(), size_t(10));
  RuntimeOptions o;
  o.threads = 1;
  const Runtime rt(switch_uniform(a, 2), o);
  EXPECT_EQ(rt.forward(random_images(2, 28, 28, 1).data(), 2, 28, 28).size(), size_t(20));
  EXPECT_CONTAINS(error_of([&] { read_artifact(dir + "artifact-huge-int.safetensors"); }),
                  "graph: node 'bn1.relu.maxpool': field 'kernel' must be an integer, got 9.223372036854776e+20");
}

TEST(Artifact, LanguageModelFuzzSeedsReadAndLoad) {
  // A tiny language model (scripts/make_lm_fuzz_seeds.sh): its master and a 2-bit switched
  // artifact, group-wise scales, 8-bit embedding and head.
  const std::string dir = std::string(BITSWITCH_SOURCE_DIR) + "/fuzz/corpus/";
  const Artifact m = read_artifact(dir + "artifact-lm-master.safetensors");
  const Artifact w2 = read_artifact(dir + "artifact-lm-w2.safetensors");
  ASSERT_TRUE(m.is_lm() && w2.is_lm());
  EXPECT_TRUE(m.master);
  EXPECT_EQ(w2.label(), "w2");
  EXPECT_EQ(w2.tokenizer_kind, "byte");
  EXPECT_GT(m.lm.group_size, 0);
  const auto weights = lm_decoder_weights(w2);
  EXPECT_EQ(int64_t(weights->blocks.size()), w2.lm.layers);
  EXPECT_EQ(weights->blocks[0].q.bits(), 2);
  EXPECT_TRUE(weights->head_q.has_value());
  // The master switched here equals the stored switched artifact, layer by layer.
  const Artifact s = switch_uniform(m, 2, 1);
  for (size_t i = 0; i < s.layers.size(); ++i) {
    EXPECT_EQ(s.layers[i].codes, w2.layers[i].codes) << s.layers[i].name;
    EXPECT_EQ(s.layers[i].scale, w2.layers[i].scale) << s.layers[i].name;
  }
  // The image runtime refuses it, naming the node.
  EXPECT_CONTAINS(error_of([&] { Runtime(w2, RuntimeOptions{}); }), "node 'tokens': op 'tokens' belongs to a language model");
}
