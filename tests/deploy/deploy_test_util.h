// Helpers shared by the deploy tests.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "bitswitch/util/error.h"

// Expects `haystack` (a string or C string) to contain `needle`.
#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "expected \"" << (needle) << "\" in: " << (haystack)

// The message of the bitswitch::Error `fn` throws, or "no error".
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const bitswitch::Error& e) {
    return e.what();
  }
  return "no error";
}
