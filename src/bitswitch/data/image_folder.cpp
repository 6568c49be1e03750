// Implements image_folder.h: folder scan, TurboJPEG decoding, the ImageNet transforms
// (torchvision's RandomResizedCrop / Resize + CenterCrop geometry, bilinear resampling written
// here) and the threaded prefetching loader.
#include "bitswitch/data/image_folder.h"

#include <turbojpeg.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "bitswitch/util/error.h"

namespace bitswitch::data {
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kCropStream = 0x43524f5052524321ULL;

bool is_jpeg_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg";
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  BS_CHECK(in, path, ": cannot open: ", std::strerror(errno));
  const auto size = static_cast<std::streamsize>(in.tellg());
  std::vector<uint8_t> bytes(static_cast<size_t>(std::max<std::streamsize>(size, 0)));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), size);
  BS_CHECK(in.gcount() == size, path, ": read only ", in.gcount(), " of ", size, " bytes");
  return bytes;
}

// One TurboJPEG handle per thread (handles are not thread-safe).
struct TjHandle {
  explicit TjHandle(bool compress) : h(compress ? tjInitCompress() : tjInitDecompress()) {
    BS_CHECK(h != nullptr, "TurboJPEG: cannot create a handle: ", tjGetErrorStr2(nullptr));
  }
  ~TjHandle() { tjDestroy(h); }
  TjHandle(const TjHandle&) = delete;
  TjHandle& operator=(const TjHandle&) = delete;
  tjhandle h;
};

tjhandle thread_decoder() {
  thread_local TjHandle handle(false);
  return handle.h;
}

}  // namespace

ImageFolder scan_image_folder(const std::string& root) {
  std::error_code ec;
  BS_CHECK(fs::is_directory(root, ec), "image folder '", root, "' is not a directory");
  ImageFolder f;
  f.root = root;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.is_directory()) f.classes.push_back(e.path().filename().string());
  BS_CHECK(!ec, "image folder '", root, "': cannot list: ", ec.message());
  std::sort(f.classes.begin(), f.classes.end());
  BS_CHECK(!f.classes.empty(), "image folder '", root, "' has no class subdirectories (expected root/<class>/*.JPEG)");
  for (size_t c = 0; c < f.classes.size(); ++c) {
    std::vector<std::string> files;
    const fs::path dir = fs::path(root) / f.classes[c];
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.is_regular_file() && is_jpeg_name(e.path())) files.push_back(e.path().string());
    BS_CHECK(!ec, "image folder '", dir.string(), "': cannot list: ", ec.message());
    std::sort(files.begin(), files.end());
    for (auto& p : files) {
      f.paths.push_back(std::move(p));
      f.labels.push_back(static_cast<int64_t>(c));
    }
  }
  BS_CHECK(!f.paths.empty(), "image folder '", root, "' has no .jpg/.jpeg files in its ", f.classes.size(),
           " class directories");
  return f;
}

std::pair<int, int> jpeg_size(const std::vector<uint8_t>& bytes, const std::string& what) {
  int w = 0, h = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(thread_decoder(), bytes.data(), static_cast<unsigned long>(bytes.size()), &w, &h, &subsamp,
                          &colorspace) != 0)
    fail(what, ": not a readable JPEG (", tjGetErrorStr2(thread_decoder()), ")");
  // After a failed read, TurboJPEG can report success with a 0 x 0 size for the same file read
  // again on the same handle (seen with a truncated JPEG in its second epoch): still unreadable.
  BS_CHECK(w > 0 && h > 0, what, ": not a readable JPEG (size ", w, "x", h, ")");
  return {w, h};
}

RgbImage decode_jpeg(const std::vector<uint8_t>& bytes, const std::string& what, int min_width, int min_height) {
  tjhandle tj = thread_decoder();
  int w = 0, h = 0, subsamp = 0, colorspace = 0;
  const auto size = static_cast<unsigned long>(bytes.size());
  if (tjDecompressHeader3(tj, bytes.data(), size, &w, &h, &subsamp, &colorspace) != 0)
    fail(what, ": not a readable JPEG (", tjGetErrorStr2(tj), ")");
  BS_CHECK(w > 0 && h > 0, what, ": JPEG has size ", w, "x", h);
  // The smallest scaled size that still covers the request (factors are sorted large to small).
  int sw = w, sh = h;
  if (min_width > 0 || min_height > 0) {
    int n = 0;
    const tjscalingfactor* f = tjGetScalingFactors(&n);
    for (int i = 0; i < n; ++i) {
      if (f[i].num > f[i].denom) continue;
      const int cw = TJSCALED(w, f[i]), ch = TJSCALED(h, f[i]);
      if (cw >= min_width && ch >= min_height && cw * ch < sw * sh) sw = cw, sh = ch;
    }
  }
  const bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  const int channels = cmyk ? 4 : 3;
  std::vector<uint8_t> buf(static_cast<size_t>(sw) * sh * channels);
  // Any warning (e.g. a truncated file) counts as corrupt, like PIL's "image file is truncated".
  if (tjDecompress2(tj, bytes.data(), size, buf.data(), sw, 0, sh, cmyk ? TJPF_CMYK : TJPF_RGB,
                    TJFLAG_STOPONWARNING) != 0)
    fail(what, ": corrupt JPEG (", tjGetErrorStr2(tj), ")");
  RgbImage img;
  img.width = sw;
  img.height = sh;
  if (!cmyk) {
    img.pixels = std::move(buf);
    return img;
  }
  // Adobe-style inverted CMYK (as libjpeg writes it): R = C * K / 255, likewise G, B.
  img.pixels.resize(static_cast<size_t>(sw) * sh * 3);
  for (size_t i = 0, n = static_cast<size_t>(sw) * sh; i < n; ++i)
    for (int c = 0; c < 3; ++c) img.pixels[i * 3 + c] = static_cast<uint8_t>((buf[i * 4 + c] * buf[i * 4 + 3] + 127) / 255);
  return img;
}

std::vector<uint8_t> encode_jpeg(const RgbImage& image, int quality) {
  TjHandle tj(true);
  unsigned char* out = nullptr;
  unsigned long out_size = 0;
  if (tjCompress2(tj.h, image.pixels.data(), image.width, 0, image.height, TJPF_RGB, &out, &out_size, TJSAMP_420,
                  quality, 0) != 0)
    fail("JPEG encoding failed: ", tjGetErrorStr2(tj.h));
  std::vector<uint8_t> bytes(out, out + out_size);
  tjFree(out);
  return bytes;
}

CropBox random_resized_crop_box(int width, int height, SampleRng& rng, bool hflip) {
  CropBox box;
  const double area = double(width) * height;
  const double log_lo = std::log(3.0 / 4.0), log_hi = std::log(4.0 / 3.0);
  bool found = false;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target = area * (0.08 + (1.0 - 0.08) * rng.uniform());
    const double ratio = std::exp(log_lo + (log_hi - log_lo) * rng.uniform());
    const int w = static_cast<int>(std::lround(std::sqrt(target * ratio)));
    const int h = static_cast<int>(std::lround(std::sqrt(target / ratio)));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      box.x0 = static_cast<double>(rng.next() % static_cast<uint64_t>(width - w + 1));
      box.y0 = static_cast<double>(rng.next() % static_cast<uint64_t>(height - h + 1));
      box.w = w;
      box.h = h;
      found = true;
    }
  }
  if (!found) {  // torchvision's fallback: the central crop at the nearest allowed ratio
    const double in_ratio = double(width) / height;
    int w = width, h = height;
    if (in_ratio < 3.0 / 4.0) h = static_cast<int>(std::lround(w / (3.0 / 4.0)));
    else if (in_ratio > 4.0 / 3.0) w = static_cast<int>(std::lround(h * (4.0 / 3.0)));
    box.w = w;
    box.h = h;
    box.x0 = (width - w) / 2;
    box.y0 = (height - h) / 2;
  }
  box.flip = hflip && (rng.next() >> 63) != 0;
  return box;
}

CropBox center_crop_box(int width, int height, int resize, int crop) {
  // Resize(resize) maps the short side to `resize`; a crop of `crop` there is crop / scale here.
  const double scale = double(resize) / std::min(width, height);
  CropBox box;
  box.w = std::min<double>(crop / scale, width);
  box.h = std::min<double>(crop / scale, height);
  box.x0 = (width - box.w) / 2;
  box.y0 = (height - box.h) / 2;
  return box;
}

void resample_normalized(const RgbImage& image, const CropBox& box, int size, const float mean[3], const float std[3],
                         float* out) {
  const int W = image.width, H = image.height;
  const uint8_t* px = image.pixels.data();
  // Source coordinate of output pixel centre i: x0 + (i + 0.5) * w / size - 0.5 (pixel centres
  // at integer + 0.5 in continuous coordinates), clamped to the image.
  struct Tap {
    int i0, i1;
    float f;
  };
  auto taps = [size](double start, double extent, int limit, bool flip) {
    std::vector<Tap> t(static_cast<size_t>(size));
    for (int i = 0; i < size; ++i) {
      const int j = flip ? size - 1 - i : i;
      double s = start + (j + 0.5) * extent / size - 0.5;
      s = std::clamp(s, 0.0, double(limit - 1));
      const int i0 = static_cast<int>(std::floor(s));
      const int i1 = std::min(i0 + 1, limit - 1);
      t[static_cast<size_t>(i)] = {i0, i1, static_cast<float>(s - i0)};
    }
    return t;
  };
  const auto tx = taps(box.x0, box.w, W, box.flip);
  const auto ty = taps(box.y0, box.h, H, false);
  float scale[3], shift[3];
  for (int c = 0; c < 3; ++c) {
    scale[c] = 1.0f / (255.0f * std[c]);
    shift[c] = -mean[c] / std[c];
  }
  const size_t plane = static_cast<size_t>(size) * size;
  for (int y = 0; y < size; ++y) {
    const auto& a = ty[static_cast<size_t>(y)];
    const uint8_t* r0 = px + static_cast<size_t>(a.i0) * W * 3;
    const uint8_t* r1 = px + static_cast<size_t>(a.i1) * W * 3;
    for (int x = 0; x < size; ++x) {
      const auto& b = tx[static_cast<size_t>(x)];
      for (int c = 0; c < 3; ++c) {
        const float top = r0[b.i0 * 3 + c] + b.f * (r0[b.i1 * 3 + c] - r0[b.i0 * 3 + c]);
        const float bot = r1[b.i0 * 3 + c] + b.f * (r1[b.i1 * 3 + c] - r1[b.i0 * 3 + c]);
        const float v = top + a.f * (bot - top);
        out[c * plane + static_cast<size_t>(y) * size + x] = v * scale[c] + shift[c];
      }
    }
  }
}

// ---------------- ImageFolderLoader ----------------

ImageFolderLoader::ImageFolderLoader(ImageFolder folder, ImageFolderOptions options)
    : folder_(std::move(folder)), opt_(options) {
  BS_CHECK(opt_.batch_size > 0, "image folder loader: `batch_size` must be positive, got ", opt_.batch_size);
  BS_CHECK(opt_.threads > 0, "image folder loader: `threads` must be positive, got ", opt_.threads);
  BS_CHECK(opt_.prefetch > 0, "image folder loader: `prefetch` must be positive, got ", opt_.prefetch);
  BS_CHECK(opt_.crop > 0 && opt_.resize >= opt_.crop, "image folder loader: need 0 < crop <= resize, got crop ",
           opt_.crop, " resize ", opt_.resize);
  BS_CHECK(opt_.shard_count >= 1 && opt_.shard_rank >= 0 && opt_.shard_rank < opt_.shard_count,
           "image folder loader for '", folder_.root, "': shard rank ", opt_.shard_rank, " is not in [0, ",
           opt_.shard_count, ")");
  n_ = folder_.size();
  if (opt_.limit > 0) n_ = std::min(n_, opt_.limit);
}

ImageFolderLoader::~ImageFolderLoader() { stop_workers(); }

int64_t ImageFolderLoader::num_batches() const {
  return opt_.train ? n_ / opt_.batch_size : (n_ + opt_.batch_size - 1) / opt_.batch_size;
}

std::vector<std::string> ImageFolderLoader::skipped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {skipped_.begin(), skipped_.end()};
}

void ImageFolderLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  space_cv_.notify_all();
  ready_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void ImageFolderLoader::start_epoch(int64_t epoch) {
  stop_workers();
  epoch_ = epoch;
  order_ = epoch_order(n_, opt_.train, opt_.seed, epoch);
  ready_.clear();
  next_claim_ = 0;
  next_out_ = 0;
  stopping_ = false;
  started_ = true;
  const int threads = static_cast<int>(std::min<int64_t>(opt_.threads, std::max<int64_t>(num_batches(), 1)));
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { worker(); });
}

void ImageFolderLoader::worker() {
  for (;;) {
    int64_t k;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Claim the next batch once it is within `prefetch` of what the consumer has taken.
      space_cv_.wait(lock, [&] { return stopping_ || next_claim_ >= num_batches() || next_claim_ < next_out_ + opt_.prefetch; });
      if (stopping_ || next_claim_ >= num_batches()) return;
      k = next_claim_++;
    }
    Slot slot = make_batch(k);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_.emplace(k, std::move(slot));
    }
    ready_cv_.notify_all();
  }
}

ImageFolderLoader::Slot ImageFolderLoader::make_batch(int64_t k) {
  Slot slot;
  try {
    // This shard's positions of global batch k (data::shard_range).
    const auto part = shard_range(std::min(opt_.batch_size, n_ - k * opt_.batch_size), opt_.shard_rank, opt_.shard_count);
    const int64_t first = k * opt_.batch_size + part.begin;
    const int64_t count = part.end - part.begin;
    const int64_t s = opt_.crop;
    slot.batch.images = torch::empty({count, 3, s, s}, torch::kFloat32);
    slot.batch.labels = torch::empty({count}, torch::kInt64);
    slot.batch.indices = torch::empty({count}, torch::kInt64);
    float* img = slot.batch.images.data_ptr<float>();
    for (int64_t b = 0; b < count; ++b) {
      const int64_t idx = load_sample(first + b, img + b * 3 * s * s);
      slot.batch.labels[b] = folder_.labels[static_cast<size_t>(idx)];
      slot.batch.indices[b] = idx;
    }
  } catch (...) {
    slot.error = std::current_exception();
  }
  return slot;
}

int64_t ImageFolderLoader::load_sample(int64_t position, float* out) {
  // In skip mode a bad image is replaced by the next one in the order that decodes.
  for (int64_t attempt = 0; attempt < n_; ++attempt) {
    const int64_t idx = order_[static_cast<size_t>((position + attempt) % n_)];
    const std::string& path = folder_.paths[static_cast<size_t>(idx)];
    try {
      const auto bytes = read_file(path);
      const auto [w, h] = jpeg_size(bytes, path);
      SampleRng rng(opt_.seed, epoch_, kCropStream, position);
      const CropBox box = opt_.train ? random_resized_crop_box(w, h, rng, opt_.hflip)
                                     : center_crop_box(w, h, opt_.resize, opt_.crop);
      // Decode at the smallest DCT scale that keeps the crop box at least crop x crop pixels.
      int min_w = 0, min_h = 0;
      if (opt_.dct_scaling) {
        min_w = static_cast<int>(std::ceil(opt_.crop * w / box.w));
        min_h = static_cast<int>(std::ceil(opt_.crop * h / box.h));
      }
      const RgbImage image = decode_jpeg(bytes, path, min_w, min_h);
      CropBox scaled = box;
      const double fx = double(image.width) / w, fy = double(image.height) / h;
      scaled.x0 *= fx, scaled.w *= fx, scaled.y0 *= fy, scaled.h *= fy;
      resample_normalized(image, scaled, opt_.crop, kMean, kStd, out);
      return idx;
    } catch (const Error& e) {
      if (!opt_.skip_corrupt) throw;
      std::lock_guard<std::mutex> lock(mu_);
      if (skipped_.insert(path).second)
        fmt::print(stderr, "[bitswitch] warning: skipping {} (replaced by another image)\n", e.what());
    }
  }
  fail("image folder '", folder_.root, "': none of the ", n_, " images could be decoded");
}

bool ImageFolderLoader::next(Batch& batch) {
  BS_CHECK(started_, "ImageFolderLoader::next() called before start_epoch()");
  for (;;) {
    if (next_out_ >= num_batches()) return false;
    Slot slot;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ready_cv_.wait(lock, [&] { return ready_.count(next_out_) != 0; });
      auto it = ready_.find(next_out_);
      slot = std::move(it->second);
      ready_.erase(it);
      ++next_out_;
    }
    space_cv_.notify_all();
    if (slot.error) std::rethrow_exception(slot.error);
    if (slot.batch.labels.size(0) == 0) continue;  // this shard's part of the last batch is empty
    batch = std::move(slot.batch);
    return true;
  }
}

}  // namespace bitswitch::data
