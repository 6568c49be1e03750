// Integer LM decoding speed (issue 13; scripts/bench_lm_decode.sh writes docs/lm-decode-bench.md):
// the deployment library's LmDecoder on random weights (speed does not depend on the values) of a
// given shape, at each width and thread count: prefill tokens/s of a prompt and decode tokens/s
// of the tokens after it (greedy, KV cache), with the weight bytes read per decoded token (every
// integer layer and the head once, plus the embedding row), and decode tokens per CPU second of
// the process (the machine may be shared). Prints one JSON object per line. Repetitions go round
// all rows in turn (best of `--reps` per row).
//
// Usage: bench_lm_decode --vocab V --dim D --layers L --heads H --kv-heads KV --mlp F --context C
//          [--head int8|fp32|tied] [--group G] [--bits 8,6,4,3,2] [--threads 1,2]
//          [--prompt 32] [--decode 64] [--reps 3] [--label NAME]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bitswitch/deploy/lm_decoder.h"

using namespace bitswitch::deploy;

namespace {
double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
// CPU seconds of the process (all threads): on a shared machine, wall time also counts the time
// the scheduler gave to others.
double cpu_s() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

std::vector<int> int_list(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoi(item));
  return out;
}

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr, "bench_lm_decode: %s\n", msg);
  std::exit(2);
}
}  // namespace

int main(int argc, char** argv) {
  LmShape s;
  s.vocab = 2048, s.dim = 128, s.layers = 4, s.heads = 4, s.kv_heads = 2, s.mlp = 384, s.context = 128;
  std::string head = "int8", label = "model";
  int group = 0, prompt = 32, decode = 64, reps = 3;
  std::vector<int> bits = {8, 6, 4, 3, 2}, threads = {1, 2};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value after " + a).c_str());
    const std::string v = argv[++i];
    if (a == "--vocab") s.vocab = std::stoll(v);
    else if (a == "--dim") s.dim = std::stoll(v);
    else if (a == "--layers") s.layers = std::stoll(v);
    else if (a == "--heads") s.heads = std::stoll(v);
    else if (a == "--kv-heads") s.kv_heads = std::stoll(v);
    else if (a == "--mlp") s.mlp = std::stoll(v);
    else if (a == "--context") s.context = std::stoll(v);
    else if (a == "--head") head = v;
    else if (a == "--group") group = std::stoi(v);
    else if (a == "--bits") bits = int_list(v);
    else if (a == "--threads") threads = int_list(v);
    else if (a == "--prompt") prompt = std::stoi(v);
    else if (a == "--decode") decode = std::stoi(v);
    else if (a == "--reps") reps = std::stoi(v);
    else if (a == "--label") label = v;
    else usage(("unknown option " + a).c_str());
  }
  if (head != "int8" && head != "fp32" && head != "tied") usage("--head must be int8, fp32 or tied");
  if (prompt + decode > s.context) usage("--prompt + --decode exceed --context");
  if (reps < 1) usage("--reps must be at least 1");
  const LmRandomHead hk = head == "int8" ? LmRandomHead::kInteger8
                          : head == "fp32" ? LmRandomHead::kFloat32
                                           : LmRandomHead::kTied;
  std::vector<int32_t> tokens(static_cast<size_t>(prompt));
  uint64_t x = 1;
  for (auto& t : tokens) t = int32_t((x = x * 6364136223846793005ull + 1442695040888963407ull) >> 33) % int32_t(s.vocab);
  // Every width is built first; the repetitions then go round all (width, threads) rows in turn,
  // so slow drifts of the machine (a shared host's memory bandwidth moves by tens of percent over
  // minutes) fall on every row alike and the ratios between rows hold.
  struct Row {
    int bits = 8, threads = 1;
    std::shared_ptr<const LmDecoderWeights> w;
    size_t params = 0, linear = 0, head_bytes = 0, per_token = 0, resident = 0;
    double build_s = 0, best_prefill = 1e30, best_decode = 1e30, best_decode_cpu = 1e30;
  };
  std::vector<Row> rows;
  for (int b : bits) {
    const double t0 = now_s();
    auto w = lm_random_weights(s, b, group, 1234 + b, hk);
    Row r;
    r.bits = b, r.w = w, r.build_s = now_s() - t0;
    // Bytes read per decoded token: every block layer and the head once, one embedding row.
    for (const auto& blk : w->blocks)
      for (const LmLinear* l : {&blk.q, &blk.k, &blk.v, &blk.o, &blk.gate, &blk.up, &blk.down})
        r.linear += l->weight_bytes(), r.params += size_t(l->rows()) * l->cols();
    r.head_bytes = w->head_q ? w->head_q->weight_bytes() : size_t(s.vocab * s.dim) * sizeof(float);
    r.per_token = r.linear + r.head_bytes + size_t(s.dim) * sizeof(float);
    for (int th : threads) {
      r.threads = th;
      rows.push_back(r);
    }
  }
  std::vector<float> logits(size_t(s.vocab));
  for (int rep = 0; rep < reps; ++rep) {
    for (Row& r : rows) {
      LmDecoderOptions opt;
      opt.threads = r.threads;
      LmDecoder dec(r.w, opt);
      r.resident = dec.weight_bytes();
      const double p0 = now_s();
      dec.forward(tokens.data(), prompt, logits.data());
      const double p1 = now_s(), c1 = cpu_s();
      Sampler greedy({});
      int32_t next = greedy.sample(logits.data(), s.vocab);
      for (int i = 0; i < decode; ++i) {
        dec.forward(&next, 1, logits.data());
        next = greedy.sample(logits.data(), s.vocab);
      }
      const double p2 = now_s(), c2 = cpu_s();
      r.best_decode_cpu = std::min(r.best_decode_cpu, c2 - c1);
      r.best_prefill = std::min(r.best_prefill, p1 - p0);
      r.best_decode = std::min(r.best_decode, p2 - p1);
    }
  }
  for (const Row& r : rows) {
    std::printf(
        "{\"label\": \"%s\", \"vocab\": %lld, \"dim\": %lld, \"bits\": %d, \"threads\": %d, \"group\": %d, \"head\": \"%s\", \"block_params\": %zu, "
        "\"block_weight_bytes\": %zu, \"head_bytes\": %zu, \"bytes_per_token\": %zu, \"resident_bytes\": %zu, "
        "\"prompt\": %d, \"decode\": %d, \"prefill_tok_s\": %.2f, \"decode_tok_s\": %.3f, \"decode_cpu_tok_s\": %.3f, \"build_s\": %.1f, "
        "\"isa\": \"%s\"}\n",
        label.c_str(), (long long)s.vocab, (long long)s.dim, r.bits, r.threads, group, head.c_str(), r.params, r.linear,
        r.head_bytes, r.per_token, r.resident, prompt, decode, prompt / r.best_prefill, decode / r.best_decode,
        decode / r.best_decode_cpu, r.build_s, qgemm_isa_name(r.w->blocks[0].q.isa()));
  }
  return 0;
}
