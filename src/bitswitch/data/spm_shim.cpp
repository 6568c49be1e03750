// A C interface to Debian's libsentencepiece, built as a separate module that data/text.cpp
// loads with dlopen(RTLD_LOCAL | RTLD_DEEPBIND).
//
// Why: libsentencepiece carries its own copy of protobuf-lite and exports its google::protobuf
// symbols; linked into a process that also loads the system libprotobuf (LibTorch does, through
// ONNX), the two copies interpose each other and the process crashes in libprotobuf's static
// initialisation. Loaded locally with deep binding, sentencepiece uses its own copy and the rest
// of the process never sees it. Only plain C types cross this boundary.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

char* copy_out(const std::string& s, size_t* n) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (!p) return nullptr;
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = '\0';
  if (n) *n = s.size();
  return p;
}

class Lines : public sentencepiece::SentenceIterator {
 public:
  Lines(const char* text, size_t n) : text_(text, n) { Next(); }
  bool done() const override { return done_; }
  void Next() override {
    while (pos_ < text_.size()) {
      const size_t nl = text_.find('\n', pos_);
      const size_t end = nl == std::string::npos ? text_.size() : nl;
      line_.assign(text_, pos_, end - pos_);
      pos_ = end + 1;
      if (!line_.empty()) return;
    }
    done_ = true;
  }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::string text_;
  size_t pos_ = 0;
  std::string line_;
  bool done_ = false;
};

}  // namespace

extern "C" {

// Trains on the lines of `text`; `args` holds "key=value" lines (sentencepiece trainer flags).
// Returns 0 and the serialized model in *out (free with bs_spm_free_buffer), or 1 and *out = error.
int bs_spm_train(const char* text, size_t n, const char* args, unsigned seed, char** out, size_t* out_n) {
  std::unordered_map<std::string, std::string> kw;
  std::string a(args);
  size_t pos = 0;
  while (pos < a.size()) {
    size_t nl = a.find('\n', pos);
    if (nl == std::string::npos) nl = a.size();
    const std::string line = a.substr(pos, nl - pos);
    const size_t eq = line.find('=');
    if (eq != std::string::npos) kw[line.substr(0, eq)] = line.substr(eq + 1);
    pos = nl + 1;
  }
  sentencepiece::SetRandomGeneratorSeed(seed);
  Lines lines(text, n);
  std::string proto;
  const auto st = sentencepiece::SentencePieceTrainer::Train(kw, &lines, &proto);
  if (!st.ok()) {
    *out = copy_out(st.ToString(), out_n);
    return 1;
  }
  *out = copy_out(proto, out_n);
  return 0;
}

void bs_spm_free_buffer(void* p) { std::free(p); }

// A processor from a serialized model, or null with *error set (free with bs_spm_free_buffer).
void* bs_spm_load(const char* proto, size_t n, char** error) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto st = sp->LoadFromSerializedProto(absl::string_view(proto, n));
  if (!st.ok()) {
    *error = copy_out(st.ToString(), nullptr);
    delete sp;
    return nullptr;
  }
  return sp;
}

void bs_spm_unload(void* h) { delete static_cast<sentencepiece::SentencePieceProcessor*>(h); }

int bs_spm_size(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h)->GetPieceSize(); }
int bs_spm_piece_to_id(void* h, const char* piece) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(h)->PieceToId(piece);
}
// 1 byte piece, 2 unknown, 3 control, 0 normal.
int bs_spm_kind(void* h, int id) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  return sp->IsByte(id) ? 1 : sp->IsUnknown(id) ? 2 : sp->IsControl(id) ? 3 : 0;
}
// The piece's text, valid while the processor lives.
const char* bs_spm_piece(void* h, int id, size_t* n) {
  const std::string& p = static_cast<sentencepiece::SentencePieceProcessor*>(h)->IdToPiece(id);
  *n = p.size();
  return p.data();
}

// Encodes `text` (one line) into *ids (free with bs_spm_free_buffer). Returns 0 on success.
int bs_spm_encode(void* h, const char* text, size_t n, int** ids, size_t* n_ids) {
  std::vector<int> v;
  const auto st = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Encode(absl::string_view(text, n), &v);
  if (!st.ok()) return 1;
  *ids = static_cast<int*>(std::malloc(std::max<size_t>(1, v.size()) * sizeof(int)));
  if (!v.empty()) std::memcpy(*ids, v.data(), v.size() * sizeof(int));
  *n_ids = v.size();
  return 0;
}

int bs_spm_decode(void* h, const int* ids, size_t n, char** out, size_t* out_n) {
  std::string s;
  const auto st = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Decode(std::vector<int>(ids, ids + n), &s);
  if (!st.ok()) return 1;
  *out = copy_out(s, out_n);
  return 0;
}

}  // extern "C"
