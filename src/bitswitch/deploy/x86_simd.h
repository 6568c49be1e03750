// Internal to the deploy kernels (qgemm.cpp, qgemm_panels.cpp): x86 feature detection and the
// VNNI dot-product primitive shared by the GEMM paths.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BS_DEPLOY_X86 1
// GCC 12 reports the intentionally undefined vectors inside its AVX-512 intrinsic headers
// (_mm512_undefined_epi32) as uninitialized when they are inlined into target functions.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#define BS_TARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#else
#define BS_DEPLOY_X86 0
#endif

namespace bitswitch::deploy::simd {

// AVX-512 F/BW/VL + VNNI on this CPU (and OS).
inline bool cpu_avx512_vnni() {
#if BS_DEPLOY_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

#if BS_DEPLOY_X86
// c += dot4(x as u8, y as s8) per int32 lane. GCC 12 copies the accumulator around every
// _mm512_dpbusd_epi32 (two extra moves per instruction), so GCC gets the instruction directly.
BS_TARGET_VNNI inline __attribute__((always_inline)) __m512i dpbusd(__m512i c, __m512i x, __m512i y) {
#if defined(__GNUC__) && !defined(__clang__)
  __asm__("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(x), "vm"(y));
  return c;
#else
  return _mm512_dpbusd_epi32(c, x, y);
#endif
}
#endif

}  // namespace bitswitch::deploy::simd
