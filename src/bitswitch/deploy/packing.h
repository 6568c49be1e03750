// Bit-packing of signed l-bit weight codes (l in 2..8) for the deployment artifact.
//
// Layout: code i occupies bits [i*l, (i+1)*l) of a little-endian bit stream, LSB first:
// bit b of the stream is bit (b % 8) of byte (b / 8). Codes are stored in two's complement
// (the low l bits of the int8 code). So l=8 is one code per byte, l=4 two per byte (code 2j in
// the low nibble of byte j), l=2 four per byte, and l=3, 5, 6, 7 cross byte boundaries;
// n codes take ceil(n*l/8) bytes and the unused high bits of the last byte are zero.
// A weight matrix is packed row by row (pack_rows): each row starts on a byte boundary.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "bitswitch/quant/double_rounding.h"

namespace bitswitch::deploy {

// Bytes needed for n codes of `bits` bits: ceil(n * bits / 8).
size_t packed_bytes(size_t n, int bits);

// Packs n codes; every code must lie in [-2^(bits-1), 2^(bits-1)-1] (else an Error naming the
// index and value). `out` must hold packed_bytes(n, bits) bytes.
void pack_into(const int8_t* codes, size_t n, int bits, uint8_t* out);
std::vector<uint8_t> pack(const int8_t* codes, size_t n, int bits);

// Unpacks n sign-extended codes from packed_bytes(n, bits) bytes at `packed`.
void unpack_into(const uint8_t* packed, size_t n, int bits, int8_t* out);
std::vector<int8_t> unpack(const uint8_t* packed, size_t n, int bits);
// As unpack, but first checks that `packed_size` bytes are enough.
std::vector<int8_t> unpack(const uint8_t* packed, size_t packed_size, size_t n, int bits);

// Row-wise packing of a rows x cols matrix of codes: row r starts at byte r * packed_bytes(cols, bits).
std::vector<uint8_t> pack_rows(const int8_t* codes, size_t rows, size_t cols, int bits);
// Its inverse for rows [r0, r1): row r of `packed` (pack_rows' layout) to out + r * cols.
void unpack_rows_into(const uint8_t* packed, size_t r0, size_t r1, size_t cols, int bits, int8_t* out);

// Derives the l-bit codes of n h-bit codes with quant::derive_code (Double Rounding's integer
// second rounding + clamp) and packs them. Codes must lie in the h-bit range.
std::vector<uint8_t> derive_packed(const int8_t* codes_h, size_t n, int high_bits, int low_bits,
                                   quant::SecondRounding mode = quant::SecondRounding::kHalfUp);

}  // namespace bitswitch::deploy
