// Text data for language models (SPEC.md Sec. 9): UTF-8 files split into training and held-out
// text, a tokenizer (sentencepiece, trained on the training text, or raw bytes), and contiguous
// token windows drawn in a seeded shuffled order.
//
// Split rule (per file, deterministic): the last `heldout_fraction` of a file's bytes, moved
// forward to the next line start, is held out; the rest is training text. Held-out text is thus
// contiguous and never seen in training, and every file contributes to both parts.
// A directory stands for its regular files (not symlinks, not subdirectories) in name order that
// are text: valid UTF-8 without NUL bytes; the others are skipped and counted.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace bitswitch::data {

// True when `s` is valid UTF-8 (no overlong forms, surrogates or code points above U+10FFFF).
bool is_valid_utf8(const std::string& s);

struct TextSplit {
  std::vector<std::string> files;  // the text files used, in order
  int64_t skipped = 0;             // directory entries that were not text files
  std::string train, heldout;      // concatenated in file order
};

// Splits one file's text by the rule above.
std::pair<std::string, std::string> split_text(const std::string& text, double heldout_fraction);
// Reads `paths` (files or directories) and splits each file. Errors name the path.
TextSplit read_text_split(const std::vector<std::string>& paths, double heldout_fraction);

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;  // "byte" or "sentencepiece"
  virtual int64_t vocab_size() const = 0;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  // The number of bytes of text token `id` stands for (bits per byte counts them).
  virtual int64_t token_bytes(int32_t id) const = 0;
  // The tokenizer's model as bytes (empty for "byte"), stored with runs and artifacts.
  virtual std::string serialize() const = 0;
};

// Byte-level vocabulary: token = byte value, 256 tokens.
std::unique_ptr<Tokenizer> byte_tokenizer();
// Trains a sentencepiece model (`model_type` "bpe" or "unigram") of `vocab_size` pieces on
// `text`'s lines. Identity normalisation, no dummy prefix, whitespace kept and byte fallback,
// so decode(encode(s)) == s for any UTF-8 s; a newline is its byte piece <0x0A>.
std::unique_ptr<Tokenizer> train_sentencepiece(const std::string& text, int64_t vocab_size,
                                               const std::string& model_type, uint64_t seed);
// Rebuilds a tokenizer from kind() and serialize(). `source` names the origin in errors.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& kind, const std::string& bytes, const std::string& source);

// Token windows of a token stream: window i covers tokens [i * len, i * len + len + 1) (an
// input of `len` tokens and its targets shifted by one), for every i whose window fits.
class TokenWindows {
 public:
  TokenWindows(torch::Tensor tokens, int64_t len);  // tokens: 1-D int64
  int64_t size() const { return count_; }
  int64_t length() const { return len_; }
  const torch::Tensor& tokens() const { return tokens_; }
  // The seeded order of an epoch: a permutation of [0, size()), the same for the same (seed, epoch).
  torch::Tensor order(uint64_t seed, int64_t epoch) const;
  // Windows `ids` ([B] int64) as one [B, len + 1] tensor: a single gather, no per-window work.
  torch::Tensor gather(const torch::Tensor& ids) const;

 private:
  torch::Tensor tokens_;
  int64_t len_ = 0, count_ = 0;
};

// A tokenized corpus: training and held-out token streams and the held-out byte count.
struct TextCorpus {
  std::shared_ptr<Tokenizer> tokenizer;
  torch::Tensor train_tokens, heldout_tokens;  // 1-D int64
  int64_t train_bytes = 0, heldout_bytes = 0;
  std::vector<std::string> files;
  int64_t skipped = 0;
};
// Tokenizes `split` (each file's part separately is not needed: parts are already joined).
TextCorpus tokenize_corpus(const TextSplit& split, std::shared_ptr<Tokenizer> tokenizer);

}  // namespace bitswitch::data
