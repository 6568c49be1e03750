// Tests of l-bit code packing: exact bit layout, round trips for every width and many lengths,
// range and size checks, and derive_packed against quant::derive_code.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "bitswitch/deploy/packing.h"
#include "bitswitch/util/error.h"
#include "deploy_test_util.h"

using namespace bitswitch;
using namespace bitswitch::deploy;

namespace {

std::vector<int8_t> random_codes(std::mt19937& rng, size_t n, int bits) {
  std::uniform_int_distribution<int> d(quant::signed_qmin(bits), quant::signed_qmax(bits));
  std::vector<int8_t> c(n);
  for (auto& x : c) x = int8_t(d(rng));
  return c;
}

std::vector<uint8_t> pack_vec(const std::vector<int8_t>& c, int bits) { return pack(c.data(), c.size(), bits); }

TEST(PackingTest, PackedBytes) {
  EXPECT_EQ(packed_bytes(0, 4), 0u);
  EXPECT_EQ(packed_bytes(1, 2), 1u);
  EXPECT_EQ(packed_bytes(4, 2), 1u);
  EXPECT_EQ(packed_bytes(5, 2), 2u);
  EXPECT_EQ(packed_bytes(3, 4), 2u);
  EXPECT_EQ(packed_bytes(8, 3), 3u);
  EXPECT_EQ(packed_bytes(9, 3), 4u);
  EXPECT_EQ(packed_bytes(3, 6), 3u);
  EXPECT_EQ(packed_bytes(4, 6), 3u);
  EXPECT_EQ(packed_bytes(7, 8), 7u);
}

TEST(PackingTest, KnownBitLayouts) {
  // 8 bits: one two's-complement byte per code.
  EXPECT_EQ(pack_vec({-128, 127, -1}, 8), (std::vector<uint8_t>{0x80, 0x7F, 0xFF}));
  // 4 bits: code 2j in the low nibble of byte j.
  EXPECT_EQ(pack_vec({1, -1, -8, 7, 3}, 4), (std::vector<uint8_t>{0xF1, 0x78, 0x03}));
  // 2 bits: four per byte, LSB first: 1, -1 (3), -2 (2), 0 | 1.
  EXPECT_EQ(pack_vec({1, -1, -2, 0, 1}, 2), (std::vector<uint8_t>{0x2D, 0x01}));
  // 3 bits across a byte boundary: 001 111 011 100 -> bits 0..11.
  EXPECT_EQ(pack_vec({1, -1, 3, -4}, 3), (std::vector<uint8_t>{0xF9, 0x08}));
  // 6 bits: 100000 011111 000101.
  EXPECT_EQ(pack_vec({-32, 31, 5}, 6), (std::vector<uint8_t>{0xE0, 0x57, 0x00}));
  EXPECT_EQ(unpack(std::vector<uint8_t>{0xE0, 0x57, 0x00}.data(), 3, 6), (std::vector<int8_t>{-32, 31, 5}));
  EXPECT_EQ(unpack(std::vector<uint8_t>{0xF9, 0x08}.data(), 4, 3), (std::vector<int8_t>{1, -1, 3, -4}));
}

TEST(PackingTest, RoundTripEveryWidthRandomLengths) {
  std::mt19937 rng(123);
  for (int bits = 2; bits <= 8; ++bits) {
    std::vector<size_t> lengths = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4099};
    for (int i = 0; i < 40; ++i) lengths.push_back(rng() % 3000);
    for (size_t n : lengths) {
      SCOPED_TRACE("bits=" + std::to_string(bits) + " n=" + std::to_string(n));
      const auto codes = random_codes(rng, n, bits);
      const auto packed = pack_vec(codes, bits);
      ASSERT_EQ(packed.size(), (n * size_t(bits) + 7) / 8);
      EXPECT_EQ(unpack(packed.data(), packed.size(), n, bits), codes);
      // Unused high bits of the last byte are zero.
      const size_t used = (n * size_t(bits)) % 8;
      if (used) {
        EXPECT_EQ(packed.back() >> used, 0);
      }
    }
  }
}

TEST(PackingTest, ExtremesRoundTrip) {
  for (int bits = 2; bits <= 8; ++bits) {
    const std::vector<int8_t> c = {int8_t(quant::signed_qmin(bits)), int8_t(quant::signed_qmax(bits)), 0, -1,
                                   int8_t(quant::signed_qmin(bits)), int8_t(quant::signed_qmax(bits))};
    EXPECT_EQ(unpack(pack_vec(c, bits).data(), c.size(), bits), c) << bits;
  }
}

TEST(PackingTest, RejectsOutOfRangeCodes) {
  try {
    pack_vec({0, 1, 2, 3, 4, 8, 0}, 4);
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "code[5] = 8 is outside the 4-bit range [-8, 7]");
  }
  try {
    pack_vec({-3}, 2);
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "code[0] = -3 is outside the 2-bit range [-2, 1]");
  }
  try {
    pack_vec({0, 0, 4}, 3);
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "code[2] = 4 is outside the 3-bit range [-4, 3]");
  }
  const std::vector<int8_t> rows = {0, 1, 1, 2};  // row 1 holds a 2 in 2 bits
  try {
    pack_rows(rows.data(), 2, 2, 2);
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "pack_rows: row 1: pack: code[1] = 2");
  }
}

TEST(PackingTest, RejectsBadWidthsAndShortBuffers) {
  const std::vector<int8_t> c = {0};
  EXPECT_THROW(pack_vec(c, 1), Error);
  EXPECT_THROW(pack_vec(c, 9), Error);
  try {
    unpack(nullptr, 0, 1, 0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "bits must be in [2, 8], got 0");
  }
  const std::vector<uint8_t> two(2);
  try {
    unpack(two.data(), two.size(), 6, 3);
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "6 codes of 3 bits need 3 bytes, got 2");
  }
}

TEST(PackingTest, PackRowsStartsEachRowOnAByte) {
  std::mt19937 rng(5);
  for (int bits : {2, 3, 4, 6, 8}) {
    const size_t rows = 7, cols = 13;
    const auto codes = random_codes(rng, rows * cols, bits);
    const auto packed = pack_rows(codes.data(), rows, cols, bits);
    const size_t rb = packed_bytes(cols, bits);
    ASSERT_EQ(packed.size(), rows * rb);
    for (size_t r = 0; r < rows; ++r) {
      const auto row = pack(codes.data() + r * cols, cols, bits);
      EXPECT_EQ(std::vector<uint8_t>(packed.begin() + std::ptrdiff_t(r * rb), packed.begin() + std::ptrdiff_t((r + 1) * rb)), row);
    }
  }
}

TEST(PackingTest, DerivePackedMatchesDeriveCode) {
  std::vector<int8_t> all;
  for (int q = -128; q <= 127; ++q) all.push_back(int8_t(q));
  for (auto mode : {quant::SecondRounding::kHalfUp, quant::SecondRounding::kFloor}) {
    for (int h = 2; h <= 8; ++h) {
      std::vector<int8_t> codes_h;
      for (int8_t q : all)
        if (q >= quant::signed_qmin(h) && q <= quant::signed_qmax(h)) codes_h.push_back(q);
      for (int l = 2; l <= h; ++l) {
        const auto packed = derive_packed(codes_h.data(), codes_h.size(), h, l, mode);
        const auto low = unpack(packed.data(), packed.size(), codes_h.size(), l);
        for (size_t i = 0; i < codes_h.size(); ++i)
          ASSERT_EQ(low[i], quant::derive_code(codes_h[i], h, l, mode))
              << "h=" << h << " l=" << l << " q_h=" << int(codes_h[i]);
      }
    }
  }
  // Hand-checked values, 8 -> 4 bits (d = 4), half-up: (q + 8) >> 4, clamped to [-8, 7].
  const std::vector<int8_t> q = {5, 100, 127, -128, -9, 8};
  const auto low = unpack(derive_packed(q.data(), q.size(), 8, 4).data(), q.size(), 4);
  EXPECT_EQ(low, (std::vector<int8_t>{0, 6, 7, -8, -1, 1}));
}

TEST(PackingTest, DerivePackedRejectsBadArguments) {
  const std::vector<int8_t> q = {0, 40};
  try {
    derive_packed(q.data(), q.size(), 4, 8);
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "low bits 8 exceed high bits 4");
  }
  try {
    derive_packed(q.data(), q.size(), 6, 2);
    FAIL();
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "code[1] = 40 is outside the 6-bit range [-32, 31]");
  }
  EXPECT_THROW(derive_packed(q.data(), q.size(), 8, 1), Error);
}

}  // namespace
