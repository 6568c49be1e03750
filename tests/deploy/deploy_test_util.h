// Helpers shared by the deploy tests.
#pragma once
#include <gtest/gtest.h>

#include <string>

// Expects `haystack` (a string or C string) to contain `needle`.
#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "expected \"" << (needle) << "\" in: " << (haystack)
