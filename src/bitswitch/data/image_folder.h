// ImageNet-style image folders streamed from disk: `root/<class>/<image>.jpg|jpeg` (any case),
// classes sorted by name -> labels 0..K-1. JPEG decoding by libjpeg-turbo (TurboJPEG API) with
// DCT-domain downscaling when the image is much larger than needed; the standard ImageNet
// transforms (RandomResizedCrop(224, scale (0.08, 1), ratio (3/4, 4/3)) + horizontal flip for
// training; Resize(256) + CenterCrop(224) for evaluation) done as one hand-written bilinear
// resample of a crop box, then normalisation with ImageNet's mean/std.
//
// ImageFolderLoader decodes batches on worker threads into a bounded queue of ready batches.
// Every random choice is a pure function of (seed, epoch, position in the epoch), so batches do
// not depend on the thread count. A corrupt or unreadable image is reported by path; it is
// either fatal (the error surfaces from next()) or skipped: warned once per file and replaced by
// the next sample of the epoch's order that decodes.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bitswitch/data/loader.h"

namespace bitswitch::data {

struct ImageFolder {
  std::string root;
  std::vector<std::string> classes;  // sorted directory names; label = index
  std::vector<std::string> paths;    // sorted by class, then file name
  std::vector<int64_t> labels;
  int64_t size() const { return static_cast<int64_t>(paths.size()); }
};

// Scans `root`; errors (naming the path) if it is missing, has no class folders or no images.
ImageFolder scan_image_folder(const std::string& root);

// A decoded image: 8-bit RGB, row-major HWC.
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
};

// The JPEG's size without decoding it. Throws bitswitch::Error naming `what` (the path).
std::pair<int, int> jpeg_size(const std::vector<uint8_t>& bytes, const std::string& what);
// Decodes to RGB, downscaled by the smallest DCT scaling factor (1/8 .. 1) that keeps the image at
// least `min_width` x `min_height` (0: no scaling). Grayscale and CMYK JPEGs are converted.
RgbImage decode_jpeg(const std::vector<uint8_t>& bytes, const std::string& what, int min_width = 0,
                     int min_height = 0);
// Encodes RGB (HWC) to JPEG at `quality`; for tests and benchmarks.
std::vector<uint8_t> encode_jpeg(const RgbImage& image, int quality);

// A crop box in source pixel coordinates (continuous: x0 <= x < x0 + w) and a mirror flag.
struct CropBox {
  double x0 = 0, y0 = 0, w = 0, h = 0;
  bool flip = false;
};
// torchvision's RandomResizedCrop box (10 tries of area in scale, log-uniform aspect ratio,
// then the central crop fallback) plus a flip with probability 1/2.
CropBox random_resized_crop_box(int width, int height, SampleRng& rng, bool hflip);
// The evaluation transform's short-side size for a crop: crop * 8/7 rounded (224 -> 256, the
// ImageNet convention); training's validation and `bitswitch infer`/`predict` use this one rule.
inline int eval_resize(int crop) { return (crop * 8 + 6) / 7; }
// Resize(resize) of the short side followed by CenterCrop(crop), as one box.
CropBox center_crop_box(int width, int height, int resize, int crop);
// Bilinear resample of `box` of `image` to size x size, normalised ((v/255 - mean) / std) into
// `out` (CHW float, 3 * size * size).
void resample_normalized(const RgbImage& image, const CropBox& box, int size, const float mean[3],
                         const float std[3], float* out);

struct ImageFolderOptions {
  int64_t batch_size = 256;
  bool train = false;       // training transforms, shuffled order, drop_last; else eval transforms
  bool hflip = true;        // training only
  int crop = 224;
  int resize = 256;         // eval: short side before the center crop
  int threads = 2;          // decoding threads
  int prefetch = 4;         // ready batches kept ahead of the consumer (>= 1)
  bool skip_corrupt = true; // false: a bad image is fatal
  uint64_t seed = 0;
  int64_t limit = 0;        // use only the first `limit` images of the (sorted) list
  bool dct_scaling = true;  // decode large JPEGs at 1/2, 1/4, 1/8 when still big enough
  // Data-parallel sharding, as data::LoaderOptions: every rank walks the same epoch order in
  // global batches of `batch_size` and decodes only its contiguous part [r*g/count, (r+1)*g/count)
  // of each global batch of size g. Crops and flips depend on the global position, so the union
  // over ranks of one step's batches is exactly the one-process batch.
  int shard_rank = 0;
  int shard_count = 1;
};

class ImageFolderLoader : public BatchSource {
 public:
  ImageFolderLoader(ImageFolder folder, ImageFolderOptions options);
  ~ImageFolderLoader() override;
  ImageFolderLoader(const ImageFolderLoader&) = delete;
  ImageFolderLoader& operator=(const ImageFolderLoader&) = delete;

  void start_epoch(int64_t epoch) override;
  // This shard's part of the next global batch; a shard whose part of the last, partial
  // (evaluation) batch is empty skips it.
  bool next(Batch& batch) override;
  int64_t num_batches() const override;  // global batches per epoch, the same on every shard
  int64_t num_samples() const override { return n_; }
  int64_t num_classes() const { return static_cast<int64_t>(folder_.classes.size()); }
  const ImageFolder& folder() const { return folder_; }
  // Paths skipped as corrupt so far (each warned about once).
  std::vector<std::string> skipped() const;

  static constexpr float kMean[3] = {0.485f, 0.456f, 0.406f};
  static constexpr float kStd[3] = {0.229f, 0.224f, 0.225f};

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };
  void stop_workers();
  void worker();
  Slot make_batch(int64_t k);
  // Decodes sample `position` of the epoch order into `out`; returns the index it used.
  int64_t load_sample(int64_t position, float* out);

  ImageFolder folder_;
  ImageFolderOptions opt_;
  int64_t n_;
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;
  bool started_ = false;

  std::vector<std::thread> workers_;
  mutable std::mutex mu_;
  std::condition_variable ready_cv_, space_cv_;
  std::map<int64_t, Slot> ready_;  // batch number -> batch
  int64_t next_claim_ = 0;         // next batch number a worker takes
  int64_t next_out_ = 0;           // next batch number next() returns
  bool stopping_ = false;
  std::set<std::string> skipped_;
};

}  // namespace bitswitch::data
