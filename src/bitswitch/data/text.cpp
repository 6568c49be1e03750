// Text corpora, tokenizers and token windows for language models (SPEC.md Sec. 9).
// Subword tokenizer: SentencePiece (Kudo & Richardson 2018), Debian's libsentencepiece.
#include "bitswitch/data/text.h"

#include <ATen/CPUGeneratorImpl.h>
#include <dlfcn.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <cstdlib>

#include "bitswitch/util/error.h"

namespace bitswitch::data {

namespace fs = std::filesystem;

bool is_valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else return false;
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

namespace {
std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  BS_CHECK(in, "cannot read text file '", path, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool is_text(const std::string& s) { return s.find('\0') == std::string::npos && is_valid_utf8(s); }
}  // namespace

std::pair<std::string, std::string> split_text(const std::string& text, double heldout_fraction) {
  BS_CHECK(heldout_fraction >= 0 && heldout_fraction < 1, "`heldout_fraction` must be in [0, 1), got ", heldout_fraction);
  size_t cut = text.size() - static_cast<size_t>(std::floor(double(text.size()) * heldout_fraction));
  if (cut < text.size() && cut > 0 && text[cut - 1] != '\n') {
    const auto nl = text.find('\n', cut);
    cut = nl == std::string::npos ? text.size() : nl + 1;
  }
  return {text.substr(0, cut), text.substr(cut)};
}

TextSplit read_text_split(const std::vector<std::string>& paths, double heldout_fraction) {
  BS_CHECK(!paths.empty(), "text data: no files given");
  TextSplit out;
  auto add = [&](const std::string& file, const std::string& text) {
    auto [train, heldout] = split_text(text, heldout_fraction);
    out.train += train;
    out.heldout += heldout;
    out.files.push_back(file);
  };
  for (const auto& p : paths) {
    BS_CHECK(fs::exists(p), "text data: '", p, "' does not exist");
    if (fs::is_directory(p)) {
      std::vector<std::string> entries;
      for (const auto& e : fs::directory_iterator(p))
        if (e.is_regular_file() && !e.is_symlink()) entries.push_back(e.path().string());
        else ++out.skipped;
      std::sort(entries.begin(), entries.end());
      for (const auto& f : entries) {
        auto text = read_file(f);
        if (!is_text(text)) {
          ++out.skipped;
          continue;
        }
        add(f, text);
      }
    } else {
      auto text = read_file(p);
      BS_CHECK(is_text(text), "text data: '", p, "' is not UTF-8 text");
      add(p, text);
    }
  }
  BS_CHECK(!out.train.empty(), "text data: no training text in ", paths.front(), paths.size() > 1 ? ", ..." : "");
  return out;
}

// ---------------- tokenizers ----------------

namespace {

class ByteTokenizer : public Tokenizer {
 public:
  std::string kind() const override { return "byte"; }
  int64_t vocab_size() const override { return 256; }
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s(ids.size(), '\0');
    for (size_t i = 0; i < ids.size(); ++i) {
      BS_CHECK(ids[i] >= 0 && ids[i] < 256, "byte tokenizer: token ", ids[i], " is out of range");
      s[i] = static_cast<char>(ids[i]);
    }
    return s;
  }
  int64_t token_bytes(int32_t) const override { return 1; }
  std::string serialize() const override { return {}; }
};

// Debian's libsentencepiece through its C shim (data/spm_shim.cpp), loaded locally with deep
// binding: sentencepiece's built-in protobuf and the system one LibTorch loads must not meet.
struct SpmLib {
  int (*train)(const char*, size_t, const char*, unsigned, char**, size_t*);
  void (*free_buffer)(void*);
  void* (*load)(const char*, size_t, char**);
  void (*unload)(void*);
  int (*size)(void*);
  int (*piece_to_id)(void*, const char*);
  int (*kind)(void*, int);
  const char* (*piece)(void*, int, size_t*);
  int (*encode)(void*, const char*, size_t, int**, size_t*);
  int (*decode)(void*, const int*, size_t, char**, size_t*);

  static const SpmLib& get() {
    static const SpmLib lib = open();
    return lib;
  }

 private:
  static SpmLib open() {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("BITSWITCH_SPM_SHIM")) candidates.push_back(env);
    std::error_code ec;
    const auto exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) candidates.push_back((exe.parent_path() / "libbitswitch_spm.so").string());
#ifdef BITSWITCH_SPM_SHIM_PATH
    candidates.push_back(BITSWITCH_SPM_SHIM_PATH);
#endif
    void* h = nullptr;
    std::string errors;
    for (const auto& c : candidates) {
      h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (h) break;
      errors += std::string(" ") + dlerror() + ";";
    }
    BS_CHECK(h, "sentencepiece: cannot load libbitswitch_spm.so (set BITSWITCH_SPM_SHIM):", errors);
    SpmLib l;
    auto sym = [&](const char* name) {
      void* p = dlsym(h, name);
      BS_CHECK(p, "sentencepiece shim: missing symbol ", name);
      return p;
    };
    l.train = reinterpret_cast<decltype(l.train)>(sym("bs_spm_train"));
    l.free_buffer = reinterpret_cast<decltype(l.free_buffer)>(sym("bs_spm_free_buffer"));
    l.load = reinterpret_cast<decltype(l.load)>(sym("bs_spm_load"));
    l.unload = reinterpret_cast<decltype(l.unload)>(sym("bs_spm_unload"));
    l.size = reinterpret_cast<decltype(l.size)>(sym("bs_spm_size"));
    l.piece_to_id = reinterpret_cast<decltype(l.piece_to_id)>(sym("bs_spm_piece_to_id"));
    l.kind = reinterpret_cast<decltype(l.kind)>(sym("bs_spm_kind"));
    l.piece = reinterpret_cast<decltype(l.piece)>(sym("bs_spm_piece"));
    l.encode = reinterpret_cast<decltype(l.encode)>(sym("bs_spm_encode"));
    l.decode = reinterpret_cast<decltype(l.decode)>(sym("bs_spm_decode"));
    return l;
  }
};

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& proto, const std::string& source) : lib_(SpmLib::get()), proto_(proto) {
    char* err = nullptr;
    sp_ = lib_.load(proto_.data(), proto_.size(), &err);
    if (!sp_) {
      const std::string msg = err ? err : "";
      lib_.free_buffer(err);
      fail(source, ": not a sentencepiece model (", msg, ")");
    }
    newline_ = lib_.piece_to_id(sp_, "<0x0A>");
    if (lib_.kind(sp_, newline_) != 1) {
      lib_.unload(sp_);
      fail(source, ": the sentencepiece model has no byte pieces (trained without byte fallback)");
    }
    vocab_ = lib_.size(sp_);
  }
  ~SentencePieceTokenizer() override { lib_.unload(sp_); }
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  std::string kind() const override { return "sentencepiece"; }
  int64_t vocab_size() const override { return vocab_; }
  std::vector<int32_t> encode(const std::string& text) const override {
    // Line by line (sentencepiece's unit of text), each newline its byte piece.
    std::vector<int32_t> out;
    size_t pos = 0;
    while (pos < text.size()) {
      const size_t nl = text.find('\n', pos);
      const size_t end = nl == std::string::npos ? text.size() : nl;
      if (end > pos) {
        int* ids = nullptr;
        size_t n = 0;
        BS_CHECK(lib_.encode(sp_, text.data() + pos, end - pos, &ids, &n) == 0, "sentencepiece encode failed");
        out.insert(out.end(), ids, ids + n);
        lib_.free_buffer(ids);
      }
      if (nl == std::string::npos) break;
      out.push_back(newline_);
      pos = nl + 1;
    }
    return out;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> v(ids.begin(), ids.end());
    for (int id : v) BS_CHECK(id >= 0 && id < vocab_, "sentencepiece: token ", id, " is out of range");
    char* out = nullptr;
    size_t n = 0;
    BS_CHECK(lib_.decode(sp_, v.data(), v.size(), &out, &n) == 0, "sentencepiece decode failed");
    std::string s(out, n);
    lib_.free_buffer(out);
    return s;
  }
  int64_t token_bytes(int32_t id) const override {
    const int k = lib_.kind(sp_, id);
    if (k == 1) return 1;
    if (k != 0) return 0;
    // A piece's text with each U+2581 (3 bytes in UTF-8) standing for one space.
    size_t len = 0;
    const char* p = lib_.piece(sp_, id, &len);
    const std::string piece(p, len);
    int64_t n = 0;
    for (size_t i = 0; i < piece.size(); ++n) i += piece.compare(i, 3, "\xE2\x96\x81") == 0 ? 3 : 1;
    return n;
  }
  std::string serialize() const override { return proto_; }

 private:
  const SpmLib& lib_;
  std::string proto_;
  void* sp_ = nullptr;
  int newline_ = 0;
  int64_t vocab_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::unique_ptr<Tokenizer> train_sentencepiece(const std::string& text, int64_t vocab_size,
                                               const std::string& model_type, uint64_t seed) {
  BS_CHECK(model_type == "bpe" || model_type == "unigram", "sentencepiece `model_type` must be bpe or unigram, got '",
           model_type, "'");
  BS_CHECK(vocab_size > 256 + 1, "sentencepiece `vocab` must exceed the 257 byte and unknown pieces, got ", vocab_size);
  const std::vector<std::pair<std::string, std::string>> args = {
      {"model_type", model_type},
      {"vocab_size", std::to_string(vocab_size)},
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "false"},
      {"remove_extra_whitespaces", "false"},
      {"split_digits", "true"},
      {"byte_fallback", "true"},
      {"character_coverage", "1.0"},
      {"unk_id", "0"},
      {"bos_id", "-1"},
      {"eos_id", "-1"},
      {"pad_id", "-1"},
      {"hard_vocab_limit", "false"},
      {"num_threads", "1"},
      {"minloglevel", "2"},
  };
  std::string flags;
  for (const auto& [k, v] : args) flags += k + "=" + v + "\n";
  const auto& lib = SpmLib::get();
  char* out = nullptr;
  size_t n = 0;
  const int rc = lib.train(text.data(), text.size(), flags.c_str(), static_cast<unsigned>(seed), &out, &n);
  std::string proto(out ? out : "", out ? n : 0);
  lib.free_buffer(out);
  BS_CHECK(rc == 0, "sentencepiece training failed: ", proto);
  return std::make_unique<SentencePieceTokenizer>(proto, "trained sentencepiece model");
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& kind, const std::string& bytes, const std::string& source) {
  if (kind == "byte") return byte_tokenizer();
  if (kind == "sentencepiece") return std::make_unique<SentencePieceTokenizer>(bytes, source);
  fail(source, ": unknown tokenizer '", kind, "' (known: byte, sentencepiece)");
}

// ---------------- windows ----------------

TokenWindows::TokenWindows(torch::Tensor tokens, int64_t len) : tokens_(std::move(tokens)), len_(len) {
  BS_CHECK(len_ >= 1, "window length must be >= 1, got ", len_);
  BS_CHECK(tokens_.dim() == 1 && tokens_.scalar_type() == torch::kInt64, "token stream must be 1-D int64");
  count_ = tokens_.numel() > len_ ? (tokens_.numel() - 1) / len_ : 0;
}

torch::Tensor TokenWindows::order(uint64_t seed, int64_t epoch) const {
  auto gen = at::detail::createCPUGenerator(seed * 1000003ULL + static_cast<uint64_t>(epoch));
  return torch::randperm(count_, gen, torch::kInt64);
}

torch::Tensor TokenWindows::gather(const torch::Tensor& ids) const {
  auto starts = ids.to(torch::kInt64).mul(len_).unsqueeze(1);
  return tokens_.index({starts + torch::arange(len_ + 1, torch::kInt64).unsqueeze(0)});
}

TextCorpus tokenize_corpus(const TextSplit& split, std::shared_ptr<Tokenizer> tokenizer) {
  TextCorpus c;
  c.tokenizer = std::move(tokenizer);
  c.files = split.files;
  c.skipped = split.skipped;
  auto to_tensor = [](const std::vector<int32_t>& ids) {
    return torch::from_blob(const_cast<int32_t*>(ids.data()), {int64_t(ids.size())}, torch::kInt32).to(torch::kInt64);
  };
  c.train_tokens = to_tensor(c.tokenizer->encode(split.train));
  c.heldout_tokens = to_tensor(c.tokenizer->encode(split.heldout));
  c.train_bytes = int64_t(split.train.size());
  c.heldout_bytes = int64_t(split.heldout.size());
  return c;
}

}  // namespace bitswitch::data
