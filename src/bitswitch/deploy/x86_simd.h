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

#include <cstdint>
#define BS_TARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define BS_TARGET_VNNI_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))
#else
#define BS_DEPLOY_X86 0
#endif

#include "bitswitch/util/cpu_features.h"

namespace bitswitch::deploy::simd {

// AVX-512 F/BW/VL + VNNI (+ VBMI) on this CPU: the project's one detection (util/cpu_features.h).
inline bool cpu_avx512_vnni() { return cpu::avx512_vnni(); }

inline bool cpu_avx512_vbmi() { return cpu::avx512_vbmi(); }

#if BS_DEPLOY_X86
// Unpacking 64 codes of BITS < 8 bits (8*BITS bytes, the LSB-first stream of packing.h): vpermb
// copies bytes [j*BITS, j*BITS+8) into qword j (which then starts with code 8j), vpmultishiftqb
// moves code 8j+i (at bit i*BITS of the qword) into byte i, then (x & mask ^ sign) - sign
// sign-extends the low BITS bits.
template <int BITS>
struct VbmiTables {
  alignas(64) uint8_t idx[64];
  alignas(64) uint8_t ctrl[64];
  constexpr VbmiTables() : idx(), ctrl() {
    for (int p = 0; p < 64; ++p) {
      idx[p] = uint8_t((p / 8) * BITS + p % 8);
      ctrl[p] = uint8_t((p % 8) * BITS);
    }
  }
};
template <int BITS>
constexpr VbmiTables<BITS> kVbmiTables{};

BS_TARGET_VNNI_VBMI inline __attribute__((always_inline)) __m512i vbmi_unpack(__m512i raw, __m512i idx, __m512i ctrl,
                                                                            __m512i low, __m512i sign) {
  const __m512i fields = _mm512_multishift_epi64_epi8(ctrl, _mm512_permutexvar_epi8(idx, raw));
  // (fields & low) ^ sign in one ternary-logic op: (A & B) ^ C = 0x6A.
  const __m512i biased = _mm512_ternarylogic_epi32(fields, low, sign, 0x6A);
  return _mm512_sub_epi8(biased, sign);
}

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
