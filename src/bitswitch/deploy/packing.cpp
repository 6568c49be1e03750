// Bit-packing of signed l-bit codes, LSB-first little-endian bit stream; see packing.h.
#include "bitswitch/deploy/packing.h"

#include <cstring>

#include "bitswitch/util/error.h"

namespace bitswitch::deploy {
namespace {

void check_bits(const char* what, int bits) {
  BS_CHECK(bits >= quant::kMinBits && bits <= quant::kMaxBits, what, ": bits must be in [",
           quant::kMinBits, ", ", quant::kMaxBits, "], got ", bits);
}

void check_range(const char* what, const int8_t* codes, size_t n, int bits) {
  const int32_t lo = quant::signed_qmin(bits), hi = quant::signed_qmax(bits);
  for (size_t i = 0; i < n; ++i)
    if (codes[i] < lo || codes[i] > hi)
      fail(what, ": code[", i, "] = ", int(codes[i]), " is outside the ", bits, "-bit range [", lo,
           ", ", hi, "]");
}

// Sign-extends the low `bits` bits of v.
inline int8_t sign_extend(uint32_t v, int bits) {
  const uint32_t sign = 1u << (bits - 1);
  v &= (1u << bits) - 1;
  return int8_t(int32_t(v ^ sign) - int32_t(sign));
}

}  // namespace

size_t packed_bytes(size_t n, int bits) {
  check_bits("packed_bytes", bits);
  BS_CHECK(n <= (SIZE_MAX - 7) / 8, "packed_bytes: code count ", n, " is too large");
  return (n * size_t(bits) + 7) / 8;
}

void pack_into(const int8_t* codes, size_t n, int bits, uint8_t* out) {
  check_bits("pack", bits);
  check_range("pack", codes, n, bits);
  const size_t nbytes = packed_bytes(n, bits);
  if (bits == 8) {
    if (n) std::memcpy(out, codes, n);
    return;
  }
  const uint32_t mask = (1u << bits) - 1;
  if (bits == 4 || bits == 2) {  // whole codes per byte
    const int per = 8 / bits;
    if (nbytes) std::memset(out, 0, nbytes);
    for (size_t i = 0; i < n; ++i)
      out[i / per] |= uint8_t((uint32_t(uint8_t(codes[i])) & mask) << ((i % per) * bits));
    return;
  }
  // General case: a 64-bit accumulator flushed a byte at a time.
  uint64_t acc = 0;
  int have = 0;
  size_t o = 0;
  for (size_t i = 0; i < n; ++i) {
    acc |= uint64_t(uint32_t(uint8_t(codes[i])) & mask) << have;
    have += bits;
    while (have >= 8) {
      out[o++] = uint8_t(acc);
      acc >>= 8;
      have -= 8;
    }
  }
  if (have > 0) out[o++] = uint8_t(acc);
}

std::vector<uint8_t> pack(const int8_t* codes, size_t n, int bits) {
  std::vector<uint8_t> out(packed_bytes(n, bits));
  pack_into(codes, n, bits, out.data());
  return out;
}

void unpack_into(const uint8_t* packed, size_t n, int bits, int8_t* out) {
  check_bits("unpack", bits);
  if (bits == 8) {
    if (n) std::memcpy(out, packed, n);
    return;
  }
  // 4 and 2 bits: whole bytes with constant shifts (the runtime unpacks every low-bit layer once
  // per inference call, so this loop is on the batch-1 path), then the last partial byte.
  if (bits == 4) {
    const size_t full = n / 2;
    for (size_t j = 0; j < full; ++j) {
      const uint8_t b = packed[j];
      out[2 * j] = int8_t(int8_t(uint8_t(b << 4)) >> 4);
      out[2 * j + 1] = int8_t(int8_t(b) >> 4);
    }
    if (n % 2) out[n - 1] = sign_extend(packed[full], 4);
    return;
  }
  if (bits == 2) {
    const size_t full = n / 4;
    for (size_t j = 0; j < full; ++j) {
      const uint8_t b = packed[j];
      out[4 * j] = int8_t(int8_t(uint8_t(b << 6)) >> 6);
      out[4 * j + 1] = int8_t(int8_t(uint8_t(b << 4)) >> 6);
      out[4 * j + 2] = int8_t(int8_t(uint8_t(b << 2)) >> 6);
      out[4 * j + 3] = int8_t(int8_t(b) >> 6);
    }
    for (size_t i = full * 4; i < n; ++i) out[i] = sign_extend(uint32_t(packed[full]) >> ((i - full * 4) * 2), 2);
    return;
  }
  uint64_t acc = 0;
  int have = 0;
  size_t in = 0;
  for (size_t i = 0; i < n; ++i) {
    while (have < bits) {
      acc |= uint64_t(packed[in++]) << have;
      have += 8;
    }
    out[i] = sign_extend(uint32_t(acc), bits);
    acc >>= bits;
    have -= bits;
  }
}

std::vector<int8_t> unpack(const uint8_t* packed, size_t n, int bits) {
  std::vector<int8_t> out(n);
  unpack_into(packed, n, bits, out.data());
  return out;
}

std::vector<int8_t> unpack(const uint8_t* packed, size_t packed_size, size_t n, int bits) {
  const size_t need = packed_bytes(n, bits);
  BS_CHECK(packed_size >= need, "unpack: ", n, " codes of ", bits, " bits need ", need,
           " bytes, got ", packed_size);
  return unpack(packed, n, bits);
}

std::vector<uint8_t> pack_rows(const int8_t* codes, size_t rows, size_t cols, int bits) {
  const size_t row_bytes = packed_bytes(cols, bits);
  std::vector<uint8_t> out(rows * row_bytes);
  for (size_t r = 0; r < rows; ++r) {
    try {
      pack_into(codes + r * cols, cols, bits, out.data() + r * row_bytes);
    } catch (const Error& e) {
      fail("pack_rows: row ", r, ": ", e.what());
    }
  }
  return out;
}

void unpack_rows_into(const uint8_t* packed, size_t r0, size_t r1, size_t cols, int bits, int8_t* out) {
  const size_t row_bytes = packed_bytes(cols, bits);
  for (size_t r = r0; r < r1; ++r) unpack_into(packed + r * row_bytes, cols, bits, out + r * cols);
}

std::vector<uint8_t> derive_packed(const int8_t* codes_h, size_t n, int high_bits, int low_bits,
                                   quant::SecondRounding mode) {
  check_bits("derive_packed (high bits)", high_bits);
  check_bits("derive_packed (low bits)", low_bits);
  BS_CHECK(low_bits <= high_bits, "derive_packed: low bits ", low_bits, " exceed high bits ",
           high_bits);
  check_range("derive_packed", codes_h, n, high_bits);
  std::vector<int8_t> low(n);
  for (size_t i = 0; i < n; ++i)
    low[i] = int8_t(quant::derive_code(codes_h[i], high_bits, low_bits, mode));
  return pack(low.data(), n, low_bits);
}

}  // namespace bitswitch::deploy
