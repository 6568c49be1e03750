// Helpers shared by the tests.
#pragma once
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace bitswitch::testing {

// A fresh, empty directory for one test.
inline std::string temp_dir(const std::string& name) {
  namespace fs = std::filesystem;
  fs::path p = fs::path(BITSWITCH_TEST_TMP) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

}  // namespace bitswitch::testing

// Expects `stmt` to throw bitswitch::Error whose message contains `substr`.
#define EXPECT_ERROR_CONTAINS(stmt, substr)                                                  \
  do {                                                                                      \
    try {                                                                                   \
      stmt;                                                                                 \
      ADD_FAILURE() << "expected bitswitch::Error containing '" << (substr) << "'";       \
    } catch (const ::bitswitch::Error& e) {                                                 \
      EXPECT_NE(std::string(e.what()).find(substr), std::string::npos)                      \
          << "message was: " << e.what();                                                   \
    }                                                                                       \
  } while (0)
