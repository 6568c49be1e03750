// Integer GEMM kernels of the integer runtime: u8 activations x s8 (or packed l-bit) weights
// with exact int32 accumulation, C[m][n] = sum_k A[m][k] * B[n][k].
//
// Paths, chosen at run time (or forced by the caller):
//   kScalar     the plain reference loops.
//   kAvx2       u8 and s8 widened to int16, vpmaddwd + vpaddd: never saturates (vpmaddubsw
//               would saturate int16 for u8 x full-range s8; qgemm_u8s8_s32_narrow uses it
//               where the weight codes are narrow enough for it to be exact).
//   kAvx512Vnni vpdpbusd (u8 x s8 -> int32, no intermediate saturation). The packed variant also
//               needs AVX512_VBMI (vpermb + vpmultishiftqb unpack 64 codes at once); on CPUs with
//               VNNI but no VBMI (Cascade Lake) the packed variant uses the AVX2 path.
// All paths are bit-exact with the references for every input; int32 cannot overflow because
// K <= kQgemmMaxK (K * 255 * 128 < 2^31).
//
// Packed weight layout (qgemm_u8_packed_s32): B is N rows of K codes of `bits` bits; each row is
// packed as in packing.h (LSB-first bit stream, two's complement) and padded to a whole number of
// bytes, so row n starts at byte n * qgemm_packed_row_bytes(K, bits) = n * ceil(K * bits / 8).
// This is exactly deploy::pack_rows(codes, N, K, bits). bits = 8 is plain int8 rows.
//
// The kernels are single-threaded; callers parallelize over M.
#pragma once
#include <cstddef>
#include <cstdint>

namespace bitswitch::deploy {

enum class QgemmIsa : int { kAuto = 0, kScalar = 1, kAvx2 = 2, kAvx512Vnni = 3 };

constexpr int kQgemmMaxK = 65793;  // floor((2^31 - 1) / (255 * 128))

const char* qgemm_isa_name(QgemmIsa isa);  // "auto", "scalar", "avx2", "avx512vnni"
// Whether this CPU (and OS) can run `isa` for qgemm_u8s8_s32 / qgemm_u8_packed_s32.
bool qgemm_isa_supported(QgemmIsa isa);
bool qgemm_packed_isa_supported(QgemmIsa isa);
// The path kAuto selects: the best supported one, capped by the environment variable
// BITSWITCH_QGEMM_ISA (scalar | avx2 | avx512vnni) when it is set.
QgemmIsa qgemm_auto_isa(bool packed);

// Bytes of one packed weight row: ceil(K * bits / 8).
size_t qgemm_packed_row_bytes(int K, int bits);

// The argument check of every GEMM entry point (here and in qgemm_pairs.h): sizes non-negative,
// K <= kQgemmMaxK, no null matrix that the product reads or writes. Throws bitswitch::Error
// naming `fn`.
void qgemm_check_sizes(const char* fn, int M, int N, int K, const void* A, const void* B, const void* C);

// A: M x K row-major u8, B: N x K row-major s8, C: M x N row-major s32.
void qgemm_u8s8_s32_ref(int M, int N, int K, const uint8_t* A, const int8_t* B, int32_t* C);
// Throws bitswitch::Error for bad sizes or an `isa` this CPU cannot run.
void qgemm_u8s8_s32(int M, int N, int K, const uint8_t* A, const int8_t* B, int32_t* C,
                    QgemmIsa isa = QgemmIsa::kAuto);

// As qgemm_u8s8_s32 for B whose codes all lie in the signed `bits`-bit range [-2^(bits-1),
// 2^(bits-1) - 1] (the caller guarantees it, as the runtime's unpacked l-bit rows do; codes out of
// range give wrong sums). The same exact result; on AVX2 with bits <= 5 from a vpmaddubsw kernel,
// exact because the narrow codes bound every int16 partial sum (qgemm.cpp), with half the
// multiplies of the int16 path. Other widths and paths: qgemm_u8s8_s32.
void qgemm_u8s8_s32_narrow(int M, int N, int K, const uint8_t* A, const int8_t* B, int bits, int32_t* C,
                           QgemmIsa isa = QgemmIsa::kAuto);
// As above with B given as packed `bits`-bit rows (bits in {2..8}; see the layout above).
void qgemm_u8_packed_s32_ref(int M, int N, int K, const uint8_t* A, const uint8_t* B_packed,
                             int bits, int32_t* C);
void qgemm_u8_packed_s32(int M, int N, int K, const uint8_t* A, const uint8_t* B_packed, int bits,
                         int32_t* C, QgemmIsa isa = QgemmIsa::kAuto);

}  // namespace bitswitch::deploy
