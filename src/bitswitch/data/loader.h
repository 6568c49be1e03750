// Mini-batch iteration with augmentation done in one raw pass per batch (no per-sample tensors).
// Order and augmentation are a pure function of (seed, epoch), so a resumed run sees the same data.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "bitswitch/data/datasets.h"

namespace bitswitch::data {

struct Augment {
  int pad = 0;         // random crop of the original size from the zero-padded image
  bool hflip = false;  // horizontal flip with probability 1/2
};

// The random choices for one sample: crop offsets into the zero-padded image, each in
// [0, 2*pad] (pad means no shift), and whether to mirror the crop left-right.
struct AugmentDraw {
  int dy = 0;
  int dx = 0;
  bool flip = false;
};

// The augmentation draw of the sample at `position` (0-based, within the epoch's order).
// A pure function of its arguments, so batches do not depend on threading or on resuming.
AugmentDraw draw_augment(uint64_t seed, int64_t epoch, int64_t position, const Augment& augment);

// A random stream for one sample, a pure function of (seed, epoch, stream tag, position):
// splitmix64 keyed like draw_augment, so per-sample random choices do not depend on threading.
class SampleRng {
 public:
  SampleRng(uint64_t seed, int64_t epoch, uint64_t stream, int64_t position);
  uint64_t next();
  double uniform();  // in [0, 1), 53 random bits

 private:
  uint64_t state_;
};

// The sample order of one epoch over `n` samples: 0..n-1, or a Fisher-Yates shuffle driven by
// std::mt19937_64 seeded from (seed, epoch); identical across standard libraries.
std::vector<int64_t> epoch_order(int64_t n, bool shuffle, uint64_t seed, int64_t epoch);

// Data-parallel sharding of one global batch of `global` samples: rank `rank` of `count` takes
// the positions [begin, end) = [rank*global/count, (rank+1)*global/count) of it (every loader
// shards this way, so the union over ranks of one step's batches is the one-process batch).
struct ShardRange {
  int64_t begin = 0;
  int64_t end = 0;
};
ShardRange shard_range(int64_t global, int rank, int count);

struct Batch {
  torch::Tensor images;   // float [B, C, H, W], normalised with the dataset's mean/std
  torch::Tensor labels;   // int64 [B]
  torch::Tensor indices;  // int64 [B], sample indices into the dataset
};

// A source of mini-batches for training and evaluation: the in-memory Loader below and the
// streaming ImageFolderLoader (data/image_folder.h) implement it.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // Prepares the order for `epoch`; must be called before next().
  virtual void start_epoch(int64_t epoch) = 0;
  // Fills `batch` with the next batch; returns false at the end of the epoch.
  virtual bool next(Batch& batch) = 0;
  virtual int64_t num_batches() const = 0;
  // Samples the source draws from (after any limit); Batch::indices are below this.
  virtual int64_t num_samples() const = 0;
};

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = false;
  bool drop_last = false;
  Augment augment;
  uint64_t seed = 0;
  int64_t limit = 0;  // use only the first `limit` samples (0 = all)
  // Data-parallel sharding: every rank walks the same epoch order in global batches of
  // `batch_size` and takes its contiguous part [r*g/count, (r+1)*g/count) of each global batch of
  // size g, so the union over ranks of one step's batches is exactly the one-process batch (same
  // samples, same augmentation draws, which depend on the global position).
  int shard_rank = 0;
  int shard_count = 1;
};

class Loader : public BatchSource {
 public:
  Loader(const Dataset& dataset, LoaderOptions options);
  // Prepares the order for `epoch`; must be called before next().
  void start_epoch(int64_t epoch) override;
  // Fills `batch` with the next batch (this shard's part of it); returns false at the end of the
  // epoch. A shard whose part of the last, partial batch would be empty skips it.
  bool next(Batch& batch) override;
  int64_t num_batches() const override;  // global batches per epoch, the same on every shard
  int64_t num_samples() const override { return n_; }

 private:
  const Dataset& ds_;
  LoaderOptions opt_;
  int64_t n_;
  int64_t epoch_ = 0;
  int64_t pos_ = 0;
  bool started_ = false;
  std::vector<int64_t> order_;
  std::vector<float> lut_;  // [C * 256]: normalised value of each uint8 pixel value, per channel
};

}  // namespace bitswitch::data
