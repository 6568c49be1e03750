// CPU feature detection: the one place that asks the processor what it supports, shared by the
// quantizer kernels (quant/kernels.cpp), the integer GEMMs (deploy/qgemm*.cpp) and the runtime's
// epilogues (deploy/runtime.cpp). Detected once per process; torch-free and header-only so the
// integer runtime and the fuzzer use it without another library.
#pragma once

namespace bitswitch::cpu {

struct Features {
  bool avx2 = false, fma = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false, avx512vbmi = false;
};

inline const Features& features() {
  static const Features f = [] {
    Features r;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    r.avx2 = __builtin_cpu_supports("avx2");
    r.fma = __builtin_cpu_supports("fma");
    r.avx512f = __builtin_cpu_supports("avx512f");
    r.avx512bw = __builtin_cpu_supports("avx512bw");
    r.avx512vl = __builtin_cpu_supports("avx512vl");
    r.avx512vnni = __builtin_cpu_supports("avx512vnni");
    r.avx512vbmi = __builtin_cpu_supports("avx512vbmi");
#endif
    return r;
  }();
  return f;
}

// AVX-512 F + BW + VL (the runtime's 16-channel epilogues).
inline bool avx512_f_bw_vl() { return features().avx512f && features().avx512bw && features().avx512vl; }
// ... + VNNI (vpdpbusd GEMM panels).
inline bool avx512_vnni() { return avx512_f_bw_vl() && features().avx512vnni; }
// ... + VBMI (vpermb unpacking of packed codes).
inline bool avx512_vbmi() { return avx512_vnni() && features().avx512vbmi; }

}  // namespace bitswitch::cpu
