// Tests of the safetensors reader/writer: round trips, layout, and every corruption class the
// reader must reject with a message naming the file, the tensor and the bad value.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "bitswitch/format/safetensors.h"
#include "bitswitch/util/error.h"
#include "deploy_test_util.h"

namespace fs = std::filesystem;
using namespace bitswitch;
using namespace bitswitch::format;

namespace {

std::string tmp_dir() {
  const fs::path dir = fs::path(BITSWITCH_DEPLOY_TEST_TMP) / ("st_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir.string();
}

// An image with the given header text and data buffer; `declared` overrides the length field.
std::vector<uint8_t> image(const std::string& header, const std::vector<uint8_t>& buffer = {},
                           int64_t declared = -1) {
  const uint64_t n = declared < 0 ? header.size() : uint64_t(declared);
  std::vector<uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[i] = uint8_t(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), buffer.begin(), buffer.end());
  return out;
}

// The error message of parsing `bytes` as "bad.safetensors", or "" if it parsed.
std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    parse_safetensors(bytes.data(), bytes.size(), "bad.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Parses a one-tensor file whose entry for "w" is `entry`, with a buffer of `buffer_bytes`.
std::string entry_error(const std::string& entry, size_t buffer_bytes = 8) {
  return parse_error(image("{\"w\": " + entry + "}", std::vector<uint8_t>(buffer_bytes, 0)));
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<TensorToWrite> sample_tensors() {
  const std::vector<float> f = {1.5f, -2.0f, 3.25f, 0.0f, -0.5f, 1e-3f};
  const std::vector<int8_t> i8 = {-128, -1, 0, 1, 127};
  const std::vector<int32_t> i32 = {-7};
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000};
  return {
      make_tensor("conv1.weight_scale", "F32", {2, 3}, f.data(), f.size() * 4),
      make_tensor("conv1.codes", "I8", {5}, i8.data(), i8.size()),
      make_tensor("empty", "U8", {0, 4}, nullptr, 0),
      make_tensor("scalar", "I32", {}, i32.data(), 4),
      make_tensor("half", "F16", {2}, f16.data(), 4),
  };
}

TEST(SafeTensorsTest, WriteReadRoundTrip) {
  const std::string path = tmp_dir() + "/model.safetensors";
  const auto tensors = sample_tensors();
  const std::map<std::string, std::string> meta = {{"format", "bitswitch"}, {"bits", "2,4,8"}};
  write_safetensors(path, tensors, meta);

  const SafeTensors st = read_safetensors(path);
  EXPECT_EQ(st.source(), path);
  EXPECT_EQ(st.metadata(), meta);
  EXPECT_EQ(st.metadata("format"), "bitswitch");
  EXPECT_EQ(st.names().size(), tensors.size());
  for (const auto& t : tensors) {
    SCOPED_TRACE(t.name);
    const TensorView& v = st.get(t.name, t.dtype, t.shape);
    ASSERT_EQ(v.nbytes, t.bytes.size());
    EXPECT_EQ(std::vector<uint8_t>(v.data, v.data + v.nbytes), t.bytes);
    EXPECT_EQ(size_t(v.numel()) * safetensors_dtype_size(v.dtype), v.nbytes);
  }
  // No temporary file is left behind.
  for (const auto& e : fs::directory_iterator(fs::path(path).parent_path()))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(SafeTensorsTest, LayoutIsPaddedAndAligned) {
  const auto tensors = sample_tensors();
  const std::vector<uint8_t> img = serialize_safetensors(tensors, {{"k", "v"}});
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | img[i];
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(img[8], '{');
  EXPECT_EQ(img[8 + n - 1] == ' ' || img[8 + n - 1] == '}', true);
  const SafeTensors st = parse_safetensors(img.data(), img.size(), "mem");
  for (const auto& kv : st.tensors()) {
    const size_t offset = size_t(kv.second.data - img.data());
    EXPECT_EQ(offset % safetensors_dtype_size(kv.second.dtype), 0u) << kv.first;
  }
  // The file writer produces the same bytes as the in-memory serializer.
  const std::string path = tmp_dir() + "/same.safetensors";
  write_safetensors(path, tensors, {{"k", "v"}});
  EXPECT_EQ(read_file(path), img);
}

TEST(SafeTensorsTest, OverwritesAtomically) {
  const std::string path = tmp_dir() + "/over.safetensors";
  write_safetensors(path, sample_tensors());
  const std::vector<float> f = {9.0f};
  write_safetensors(path, {make_tensor("only", "F32", {1}, f.data(), 4)});
  const SafeTensors st = read_safetensors(path);
  EXPECT_EQ(st.names(), std::vector<std::string>{"only"});
}

TEST(SafeTensorsTest, EmptyAndForeignFilesParse) {
  EXPECT_EQ(parse_error(image("{}")), "");
  EXPECT_EQ(parse_error(image("{}      ")), "");
  // Hand-written: unpadded header, keys in any order, zero-size tensor, no metadata.
  const std::string h =
      R"({"b":{"shape":[2],"data_offsets":[4,6],"dtype":"U8"},"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
      R"("a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})";
  const auto img = image(h, {1, 0, 0, 0, 7, 8});
  const SafeTensors st = parse_safetensors(img.data(), img.size(), "foreign");
  EXPECT_EQ(st.get("a", "I32", {1}).data[0], 1);
  EXPECT_EQ(st.get("b").data[1], 8);
  EXPECT_EQ(st.get("z").nbytes, 0u);
  EXPECT_TRUE(st.metadata().empty());
}

TEST(SafeTensorsTest, LookupErrorsNameFileAndTensor) {
  const auto img = serialize_safetensors(sample_tensors(), {{"k", "v"}});
  const SafeTensors st = parse_safetensors(img.data(), img.size(), "model.bsw");
  try {
    st.get("missing");
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "model.bsw");
    EXPECT_CONTAINS(e.what(), "no tensor named 'missing'");
  }
  try {
    st.get("conv1.codes", "U8");
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "tensor 'conv1.codes' has dtype I8, expected U8");
  }
  try {
    st.get("conv1.codes", "I8", {4});
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "has shape [5], expected [4]");
  }
  try {
    st.metadata("nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "no __metadata__ entry 'nope'");
  }
}

// ---- Corruption classes ---------------------------------------------------------------------

TEST(SafeTensorsCorruptTest, FileShorterThan8Bytes) {
  const std::string msg = parse_error({1, 2, 3, 4, 5});
  EXPECT_CONTAINS(msg, "safetensors 'bad.safetensors'");
  EXPECT_CONTAINS(msg, "file is 5 bytes, shorter than the 8-byte header length");
  EXPECT_CONTAINS(parse_error({}), "file is 0 bytes");
}

TEST(SafeTensorsCorruptTest, HeaderLengthBeyondFile) {
  const std::string msg = parse_error(image("{}", {}, 1000));
  EXPECT_CONTAINS(msg, "bad.safetensors");
  EXPECT_CONTAINS(msg, "header length 1000 exceeds the 2 bytes that follow it");
}

TEST(SafeTensorsCorruptTest, HeaderLengthAbsurd) {
  EXPECT_CONTAINS(parse_error(image("{}", {}, int64_t(1) << 40)),
                  "header length 1099511627776 is absurd (limit 100000000 bytes)");
  EXPECT_CONTAINS(parse_error(image("{}", {}, INT64_MAX)), "is absurd");
}

TEST(SafeTensorsCorruptTest, HeaderNotJson) {
  EXPECT_CONTAINS(parse_error(image("{\"w\": ")), "header is not valid JSON");
  EXPECT_CONTAINS(parse_error(image("")), "header is not valid JSON");
  EXPECT_CONTAINS(parse_error(image("{} trailing")), "header is not valid JSON");
  EXPECT_CONTAINS(parse_error(image(std::string("{\"\xff\": 1}"))), "header is not valid JSON");
  EXPECT_CONTAINS(parse_error(image(std::string("{}\0x", 4))),
                  "header is not valid JSON: NUL byte at header offset 2");
}

TEST(SafeTensorsCorruptTest, HeaderNotObject) {
  EXPECT_CONTAINS(parse_error(image("[1, 2]")), "header must be a JSON object, got array");
  EXPECT_CONTAINS(parse_error(image("42")), "header must be a JSON object, got number");
}

TEST(SafeTensorsCorruptTest, DuplicateKeys) {
  EXPECT_CONTAINS(parse_error(image(R"({"w": {}, "w": {}})")), "duplicate key 'w'");
  EXPECT_CONTAINS(entry_error(R"({"dtype": "U8", "dtype": "I8", "shape": [8], "data_offsets": [0, 8]})"),
                  "entry 'w': duplicate key 'dtype'");
}

TEST(SafeTensorsCorruptTest, EmptyTensorName) {
  EXPECT_CONTAINS(parse_error(image(R"({"": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}})")),
                  "a tensor has an empty name");
}

TEST(SafeTensorsCorruptTest, EntryNotObject) {
  const std::string msg = entry_error("[1, 2]");
  EXPECT_CONTAINS(msg, "bad.safetensors");
  EXPECT_CONTAINS(msg, "tensor 'w': entry must be an object, got array [1,2]");
}

TEST(SafeTensorsCorruptTest, MissingOrUnknownField) {
  EXPECT_CONTAINS(entry_error(R"({"dtype": "U8", "data_offsets": [0, 8]})"),
                  "tensor 'w': missing field 'shape'");
  EXPECT_CONTAINS(entry_error(R"({"shape": [8], "data_offsets": [0, 8]})"), "missing field 'dtype'");
  EXPECT_CONTAINS(entry_error(R"({"dtype": "U8", "shape": [8]})"), "missing field 'data_offsets'");
  EXPECT_CONTAINS(entry_error(R"({"dtype": "U8", "shape": [8], "data_offsets": [0, 8], "x": 1})"),
                  "tensor 'w': unknown field 'x'");
}

TEST(SafeTensorsCorruptTest, UnknownDtype) {
  EXPECT_CONTAINS(entry_error(R"({"dtype": "Q4", "shape": [8], "data_offsets": [0, 8]})"),
                  "tensor 'w': unknown dtype 'Q4'");
  EXPECT_CONTAINS(entry_error(R"({"dtype": "i8", "shape": [8], "data_offsets": [0, 8]})"),
                  "unknown dtype 'i8'");
  EXPECT_CONTAINS(entry_error(R"({"dtype": 8, "shape": [8], "data_offsets": [0, 8]})"),
                  "tensor 'w': dtype must be a string, got number 8");
}

TEST(SafeTensorsCorruptTest, ShapeNotListOfNonNegativeIntegers) {
  EXPECT_CONTAINS(entry_error(R"({"dtype": "U8", "shape": 8, "data_offsets": [0, 8]})"),
                  "tensor 'w': shape must be a list of non-negative integers, got number 8");
  EXPECT_CONTAINS(entry_error(R"({"dtype": "U8", "shape": [2, -4], "data_offsets": [0, 8]})"),
                  "tensor 'w': shape[1] = -4 is not a non-negative integer");
  EXPECT_CONTAINS(entry_error(R"({"dtype": "U8", "shape": [2.5], "data_offsets": [0, 8]})"),
                  "shape[0] = 2.5 is not a non-negative integer");
  EXPECT_CONTAINS(entry_error(R"({"dtype": "U8", "shape": ["8"], "data_offsets": [0, 8]})"),
                  "shape[0] = \"8\" is not a non-negative integer");
  EXPECT_CONTAINS(entry_error(R"({"dtype": "U8", "shape": [18446744073709551615], "data_offsets": [0, 8]})"),
                  "shape[0] = 18446744073709551615 is not a non-negative integer");
  EXPECT_CONTAINS(entry_error(R"({"dtype": "U8", "shape": [1e400], "data_offsets": [0, 8]})"),
                  "header is not valid JSON: [json.exception.out_of_range.406] number overflow");
}

TEST(SafeTensorsCorruptTest, ElementCountOverflow) {
  EXPECT_CONTAINS(
      entry_error(R"({"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]})"),
      "tensor 'w': element count of shape [4294967296,4294967296] overflows 64 bits");
  EXPECT_CONTAINS(entry_error(R"({"dtype": "U8", "shape": [9223372036854775807, 2], "data_offsets": [0, 8]})"),
                  "overflows 64 bits");
  EXPECT_CONTAINS(entry_error(R"({"dtype": "F64", "shape": [4611686018427387904], "data_offsets": [0, 8]})"),
                  "tensor 'w': byte size of shape [4611686018427387904] x 8 bytes overflows 64 bits");
  // A zero dimension makes any product exact: this is an empty tensor.
  EXPECT_EQ(parse_error(image(
                R"({"w": {"dtype": "U8", "shape": [4294967296, 4294967296, 0], "data_offsets": [0, 0]}})")),
            "");
}

TEST(SafeTensorsCorruptTest, DataOffsetsNotTwoIntegers) {
  for (const char* bad : {"[0]", "[0, 4, 8]", "[\"0\", 8]", "[-1, 7]", "[0, 8.0]", "8", "null", "{}"}) {
    const std::string msg =
        entry_error(std::string(R"({"dtype": "U8", "shape": [8], "data_offsets": )") + bad + "}");
    EXPECT_CONTAINS(msg, "tensor 'w': data_offsets must be two non-negative integers [begin, end]");
  }
}

TEST(SafeTensorsCorruptTest, BeginAfterEnd) {
  EXPECT_CONTAINS(entry_error(R"({"dtype": "U8", "shape": [0], "data_offsets": [8, 4]})"),
                  "tensor 'w': data_offsets begin 8 > end 4");
}

TEST(SafeTensorsCorruptTest, EndBeyondBuffer) {
  EXPECT_CONTAINS(entry_error(R"({"dtype": "U8", "shape": [16], "data_offsets": [0, 16]})", 8),
                  "tensor 'w': data_offsets end 16 is beyond the data buffer of 8 bytes");
  EXPECT_CONTAINS(
      entry_error(R"({"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551614, 18446744073709551615]})"),
      "is beyond the data buffer");
}

TEST(SafeTensorsCorruptTest, ByteSizeMismatch) {
  EXPECT_CONTAINS(entry_error(R"({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]})"),
                  "tensor 'w': data_offsets span 8 bytes but shape [3] of F32 needs 12 bytes");
}

TEST(SafeTensorsCorruptTest, OverlappingTensors) {
  const std::string h =
      R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},)"
      R"( "b": {"dtype": "U8", "shape": [8], "data_offsets": [4, 12]}})";
  EXPECT_CONTAINS(parse_error(image(h, std::vector<uint8_t>(12))),
                  "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
  const std::string same =
      R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},)"
      R"( "b": {"dtype": "I8", "shape": [8], "data_offsets": [0, 8]}})";
  EXPECT_CONTAINS(parse_error(image(same, std::vector<uint8_t>(8))), "overlap");
}

TEST(SafeTensorsCorruptTest, HolesAndTrailingBytes) {
  const std::string hole =
      R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},)"
      R"( "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]}})";
  EXPECT_CONTAINS(parse_error(image(hole, std::vector<uint8_t>(12))),
                  "bytes [4, 8) of the data buffer belong to no tensor (hole before 'b')");
  EXPECT_CONTAINS(entry_error(R"({"dtype": "U8", "shape": [4], "data_offsets": [0, 4]})", 8),
                  "bytes [4, 8) at the end of the data buffer belong to no tensor");
}

TEST(SafeTensorsCorruptTest, MetadataNotStringMap) {
  EXPECT_CONTAINS(parse_error(image(R"({"__metadata__": ["a"]})")),
                  "__metadata__ must be an object of strings, got array");
  EXPECT_CONTAINS(parse_error(image(R"({"__metadata__": {"bits": 4}})")),
                  "__metadata__ entry 'bits' must be a string, got number 4");
  EXPECT_CONTAINS(parse_error(image(R"({"__metadata__": {"a": {"b": "c"}}})")),
                  "__metadata__ entry 'a' must be a string, got object");
}

TEST(SafeTensorsCorruptTest, ReadFileErrorsNamePath) {
  const std::string dir = tmp_dir();
  try {
    read_safetensors(dir + "/does_not_exist.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "cannot open safetensors file '" + dir + "/does_not_exist.safetensors'");
  }
  const std::string path = dir + "/truncated.safetensors";
  auto img = serialize_safetensors(sample_tensors());
  img.resize(img.size() - 3);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(img.data()), std::streamsize(img.size()));
  try {
    read_safetensors(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "safetensors '" + path + "'");
    EXPECT_CONTAINS(e.what(), "is beyond the data buffer");
  }
}

// Every truncation and many random byte flips of a valid file either parse or throw
// bitswitch::Error; nothing else escapes and nothing reads out of bounds (run under ASan in
// the fuzz build).
TEST(SafeTensorsCorruptTest, TruncationsAndBitFlipsNeverCrash) {
  const auto good = serialize_safetensors(sample_tensors(), {{"k", "v"}});
  for (size_t len = 0; len < good.size(); ++len) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + std::ptrdiff_t(len));
    EXPECT_NE(parse_error(cut), "") << "truncated to " << len;
  }
  std::mt19937 rng(7);
  int parsed = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    auto img = good;
    const int flips = 1 + int(rng() % 4);
    for (int f = 0; f < flips; ++f) img[rng() % img.size()] ^= uint8_t(1u << (rng() % 8));
    try {
      const SafeTensors st = parse_safetensors(img.data(), img.size(), "flipped");
      for (const auto& kv : st.tensors()) {
        ASSERT_GE(kv.second.data, img.data());
        ASSERT_LE(kv.second.data + kv.second.nbytes, img.data() + img.size());
      }
      ++parsed;
    } catch (const Error&) {
    }
  }
  EXPECT_GT(parsed, 0);  // flips inside tensor data keep the file valid
}

// ---- Writer argument checks -----------------------------------------------------------------

TEST(SafeTensorsWriterTest, RejectsBadTensors) {
  const std::vector<float> f = {1, 2, 3};
  auto err = [](const std::vector<TensorToWrite>& t) -> std::string {
    try {
      serialize_safetensors(t);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_CONTAINS(err({make_tensor("w", "F32", {2}, f.data(), 12)}),
                  "tensor 'w': has 12 bytes but shape [2] of F32 needs 2 x 4");
  EXPECT_CONTAINS(err({make_tensor("w", "Q4", {3}, f.data(), 12)}), "tensor 'w': unknown dtype 'Q4'");
  EXPECT_CONTAINS(err({make_tensor("w", "F32", {-3}, f.data(), 12)}), "shape[0] = -3 is negative");
  EXPECT_CONTAINS(err({make_tensor("w", "F32", {3}, f.data(), 12), make_tensor("w", "F32", {3}, f.data(), 12)}),
                  "tensor 'w': duplicate tensor name");
  EXPECT_CONTAINS(err({make_tensor("__metadata__", "F32", {3}, f.data(), 12)}), "reserved");
  EXPECT_CONTAINS(err({make_tensor("", "F32", {3}, f.data(), 12)}), "empty tensor name");
  EXPECT_CONTAINS(err({make_tensor("\xff", "F32", {3}, f.data(), 12)}), "not valid UTF-8");
}

TEST(SafeTensorsWriterTest, FailedWriteLeavesOldFileAndNoTemp) {
  const std::string dir = tmp_dir() + "/atomic";
  fs::create_directories(dir);
  const std::string path = dir + "/m.safetensors";
  write_safetensors(path, sample_tensors());
  const auto before = read_file(path);
  const std::vector<float> f = {1, 2, 3};
  EXPECT_THROW(write_safetensors(path, {make_tensor("w", "F32", {2}, f.data(), 12)}), Error);
  EXPECT_EQ(read_file(path), before);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) ++files, (void)e;
  EXPECT_EQ(files, 1u);
  // A directory that does not exist: the error names the temporary path.
  try {
    write_safetensors(dir + "/no/such/dir/m.safetensors", sample_tensors());
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "no/such/dir/m.safetensors.tmp.");
  }
}

}  // namespace
