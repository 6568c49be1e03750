// libFuzzer target for the safetensors reader, the artifact validation on top of it (metadata, op
// graph) and the integer runtime's load of what validates (the image runtime, or the language-model
// decoder's loader, deploy/lm_artifact.h): any
// input must either parse or throw bitswitch::Error. A parsed file must also keep its views inside the input and survive a
// serialize -> parse round trip unchanged. A custom mutator mostly mutates the JSON header or
// the data buffer alone and rewrites the length prefix to match, so that mutations reach the
// header validation instead of only the "truncated JSON" error. Build and run: fuzz/README.md.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "bitswitch/deploy/artifact.h"
#include "bitswitch/deploy/lm_artifact.h"
#include "bitswitch/deploy/runtime.h"
#include "bitswitch/format/safetensors.h"
#include "bitswitch/util/error.h"

using namespace bitswitch::deploy;
using namespace bitswitch::format;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  SafeTensors st;
  try {
    st = parse_safetensors(data, size, "fuzz-input");
  } catch (const bitswitch::Error&) {
    return 0;  // rejected with a message: the expected outcome for most inputs
  }
  std::vector<TensorToWrite> tensors;
  for (const auto& kv : st.tensors()) {
    const TensorView& v = kv.second;
    if (v.nbytes && (v.data < data || v.data + v.nbytes > data + size)) std::abort();
    if (size_t(v.numel()) * safetensors_dtype_size(v.dtype) != v.nbytes) std::abort();
    tensors.push_back(make_tensor(kv.first, v.dtype, v.shape, v.data, v.nbytes));
  }
  // Whatever the reader accepts, the writer must write and the reader read back identically.
  const std::vector<uint8_t> again = serialize_safetensors(tensors, st.metadata());
  const SafeTensors st2 = parse_safetensors(again.data(), again.size(), "fuzz-roundtrip");
  if (st2.metadata() != st.metadata() || st2.tensors().size() != st.tensors().size()) std::abort();
  for (const auto& kv : st.tensors()) {
    const TensorView& b = st2.get(kv.first);
    const TensorView& a = kv.second;
    if (a.dtype != b.dtype || a.shape != b.shape || a.nbytes != b.nbytes) std::abort();
    if (a.nbytes && std::memcmp(a.data, b.data, a.nbytes) != 0) std::abort();
  }
  // The deployment artifact's validation on top of the container: accept or throw Error.
  try {
    const Artifact art = artifact_from_safetensors(st);
    std::map<std::string, std::string> meta;
    (void)artifact_tensors(art, &meta);
    const Artifact low = art.master ? switch_uniform(art, art.bits.back(), 1) : art;
    if (low.is_lm()) {
      // A language model: the decoder loader's structure check and integer layers.
      const auto w = lm_decoder_weights(low, bitswitch::deploy::QgemmIsa::kScalar);
      if (int64_t(w->blocks.size()) != low.lm.layers) std::abort();
    } else {
      // The runtime's load (graph checks, fusion, value kinds, memory plan) on what validated.
      RuntimeOptions ro;
      ro.threads = 1;
      const Runtime rt(low, ro);
      if (rt.plan().empty()) std::abort();
    }
  } catch (const bitswitch::Error&) {
  }
  return 0;
}

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  std::minstd_rand rng(seed);
  uint64_t n = 0;
  if (size >= 8)
    for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  // A quarter of the time, or when the prefix is already broken: plain byte-level mutation.
  if (size < 8 || n > size - 8 || rng() % 4 == 0) return LLVMFuzzerMutate(data, size, max_size);
  const bool header = rng() % 4 != 0;  // mostly the JSON header, sometimes the data buffer
  const size_t begin = header ? 8 : 8 + size_t(n);
  const size_t len = header ? size_t(n) : size - begin;
  const size_t rest = size - len;  // bytes outside the mutated part
  if (max_size <= rest) return LLVMFuzzerMutate(data, size, max_size);
  std::vector<uint8_t> part(max_size - rest);
  if (len) std::memcpy(part.data(), data + begin, len);
  const size_t new_len = LLVMFuzzerMutate(part.data(), len, part.size());
  std::vector<uint8_t> out;
  out.reserve(rest + new_len);
  const uint64_t new_n = header ? uint64_t(new_len) : n;
  for (int i = 0; i < 8; ++i) out.push_back(uint8_t(new_n >> (8 * i)));
  if (header) {
    out.insert(out.end(), part.begin(), part.begin() + std::ptrdiff_t(new_len));
    out.insert(out.end(), data + 8 + n, data + size);
  } else {
    out.insert(out.end(), data + 8, data + 8 + n);
    out.insert(out.end(), part.begin(), part.begin() + std::ptrdiff_t(new_len));
  }
  std::memcpy(data, out.data(), out.size());
  return out.size();
}
