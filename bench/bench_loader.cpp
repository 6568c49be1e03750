// Images per second of the image-folder loader alone (read, decode, RandomResizedCrop/flip or
// Resize+CenterCrop, normalise, batch), at several thread counts, on a folder of generated
// ImageNet-sized JPEGs (500x375, quality 90, like a typical ImageNet photo).
// Usage: bench_loader --dir DIR [--images N] [--classes K] [--threads 1,2] [--batch B]
//                     [--batches N] [--eval] [--no-dct-scaling]
// The folder is generated once (DIR/<N>-images-<K>-classes/train/<class>/*.JPEG) and reused.
// Prints one JSON line per thread count.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "bitswitch/data/image_folder.h"

using namespace bitswitch;
namespace fs = std::filesystem;

namespace {

// A photo-like test image: smooth colour fields plus a few sharp edges and fine texture, so
// the JPEG has a realistic size (a flat image would decode unrealistically fast).
data::RgbImage synthetic_photo(int w, int h, int seed) {
  data::RgbImage img;
  img.width = w;
  img.height = h;
  img.pixels.resize(static_cast<size_t>(w) * h * 3);
  uint32_t s = 2463534242u + static_cast<uint32_t>(seed) * 747796405u;
  auto rnd = [&s] {
    s ^= s << 13, s ^= s >> 17, s ^= s << 5;
    return s;
  };
  const double fx = 0.01 + (rnd() % 100) * 1e-4, fy = 0.01 + (rnd() % 100) * 1e-4;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &img.pixels[(static_cast<size_t>(y) * w + x) * 3];
      const double base = 128 + 60 * std::sin(x * fx + seed) * std::cos(y * fy);
      const int noise = static_cast<int>(rnd() % 24) - 12;
      const int edge = ((x / 37 + y / 29 + seed) % 5 == 0) ? 50 : 0;
      for (int c = 0; c < 3; ++c)
        p[c] = static_cast<uint8_t>(std::clamp(static_cast<int>(base) + noise + edge + 30 * c - 30, 0, 255));
    }
  return img;
}

void make_folder(const fs::path& root, int images, int classes) {
  if (fs::exists(root)) return;
  const fs::path tmp = root.string() + ".tmp";
  fs::remove_all(tmp);
  for (int i = 0; i < images; ++i) {
    const fs::path dir = tmp / fmt::format("n{:08d}", i % classes);
    fs::create_directories(dir);
    const auto bytes = data::encode_jpeg(synthetic_photo(500, 375, i), 90);
    std::ofstream out(dir / fmt::format("img_{:06d}.JPEG", i), std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  fs::rename(tmp, root);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "runs/bench_loader_images", threads_list = "1,2";
  int images = 1024, classes = 16, batch = 64, batches = 0;
  bool eval = false, dct = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_loader: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    if (a == "--dir") dir = value();
    else if (a == "--images") images = std::stoi(value());
    else if (a == "--classes") classes = std::stoi(value());
    else if (a == "--threads") threads_list = value();
    else if (a == "--batch") batch = std::stoi(value());
    else if (a == "--batches") batches = std::stoi(value());
    else if (a == "--eval") eval = true;
    else if (a == "--no-dct-scaling") dct = false;
    else {
      std::fprintf(stderr, "bench_loader: unknown argument '%s'\n", a.c_str());
      return 2;
    }
  }
  const fs::path root = fs::path(dir) / fmt::format("{}-images-{}-classes", images, classes) / "train";
  const auto t_make = std::chrono::steady_clock::now();
  make_folder(root, images, classes);
  std::fprintf(stderr, "[bench_loader] folder %s ready (%.1f s)\n", root.c_str(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t_make).count());
  const auto folder = data::scan_image_folder(root.string());

  std::stringstream ss(threads_list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    data::ImageFolderOptions o;
    o.batch_size = batch;
    o.train = !eval;
    o.threads = std::stoi(item);
    o.prefetch = 2 * o.threads;
    o.seed = 1;
    o.dct_scaling = dct;
    data::ImageFolderLoader loader(folder, o);
    // Warm-up epoch 0 (page cache, thread start), then time epoch 1.
    data::Batch b;
    loader.start_epoch(0);
    for (int k = 0; k < 2 && loader.next(b); ++k) {
    }
    loader.start_epoch(1);
    const int64_t limit = batches > 0 ? std::min<int64_t>(batches, loader.num_batches()) : loader.num_batches();
    int64_t n = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t k = 0; k < limit && loader.next(b); ++k) n += b.labels.size(0);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("{\"threads\": %d, \"mode\": \"%s\", \"dct_scaling\": %s, \"batch\": %d, \"images\": %lld, "
                "\"seconds\": %.3f, \"images_per_second\": %.1f}\n",
                o.threads, eval ? "eval" : "train", dct ? "true" : "false", batch, static_cast<long long>(n), s, n / s);
    std::fflush(stdout);
  }
  return 0;
}
