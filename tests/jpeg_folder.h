// Generated JPEG image folders for the tests (TurboJPEG encoding of smooth gradients, which JPEG
// keeps closely): test_image_folder.cpp and the multi-process image-folder tests.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bitswitch/data/image_folder.h"

namespace bitswitch::testing {

// R = x * 255 / (w - 1), G = y * 255 / (h - 1), B = `blue`.
inline data::RgbImage gradient(int w, int h, uint8_t blue) {
  data::RgbImage img;
  img.width = w;
  img.height = h;
  img.pixels.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &img.pixels[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<uint8_t>(std::lround(x * 255.0 / (w - 1)));
      p[1] = static_cast<uint8_t>(std::lround(y * 255.0 / (h - 1)));
      p[2] = blue;
    }
  return img;
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// root/{train,val}/c<k>/<i>.jpg for `classes` classes, `train` and `val` images per class:
// gradients of about size x 3/4 size pixels (sizes vary per image), blue level by class.
inline void write_jpeg_folder(const std::string& root, int classes, int train, int val, int size) {
  for (const std::string split : {"train", "val"})
    for (int c = 0; c < classes; ++c) {
      const auto dir = root + "/" + split + "/c" + std::to_string(c);
      std::filesystem::create_directories(dir);
      const int n = split == "train" ? train : val;
      for (int i = 0; i < n; ++i) {
        const int w = size + 3 * (i % 5), h = size * 3 / 4 + 2 * (i % 3);
        const auto blue = static_cast<uint8_t>(classes > 1 ? 20 + 210 * c / (classes - 1) : 128);
        write_bytes(dir + "/" + std::to_string(i) + ".jpg", data::encode_jpeg(gradient(w, h, blue), 90));
      }
    }
}

}  // namespace bitswitch::testing
