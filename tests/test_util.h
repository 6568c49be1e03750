// Helpers shared by the tests.
#pragma once
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "bitswitch/train/config.h"

namespace bitswitch::testing {

// A fresh, empty directory for one test.
inline std::string temp_dir(const std::string& name) {
  namespace fs = std::filesystem;
  fs::path p = fs::path(BITSWITCH_TEST_TMP) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// A training job of a few seconds: smallcnn, 256 training / 128 test images, 1 + 2 epochs.
inline train::TrainConfig tiny_config(const std::string& out) {
  train::TrainConfig c;
  c.model = "smallcnn";
  c.fp_epochs = 1;
  c.epochs = 2;
  c.batch = 64;
  c.train_limit = 256;
  c.test_limit = 128;
  c.out = out;
  c.threads = 2;
  c.log_interval = 1000;
  return c;
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
