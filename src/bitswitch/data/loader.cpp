// Implements loader.h: per-epoch sample order (identity or a reproducible Fisher-Yates shuffle)
// and batch assembly, where crop/flip augmentation and normalisation happen in one raw pass
// over the uint8 source pixels, parallel over the samples of a batch.
#include "bitswitch/data/loader.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <initializer_list>
#include <random>

#include "bitswitch/util/error.h"

namespace bitswitch::data {
namespace {

// Stream tags, so that the shuffle and the augmentation draws never share random numbers.
constexpr uint64_t kShuffleStream = 0x53485546464c4521ULL;
constexpr uint64_t kAugmentStream = 0x4155474d454e5421ULL;

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A well-mixed 64-bit key from a sequence of values (each step feeds one value into splitmix64).
uint64_t mix_key(std::initializer_list<uint64_t> values) {
  uint64_t h = 0x6a09e667f3bcc908ULL;
  for (uint64_t v : values) {
    uint64_t s = h ^ v;
    h = splitmix64(s);
  }
  return h;
}

// Unbiased integer in [0, bound) from a 64-bit generator, by rejection; defined here rather than
// via std::uniform_int_distribution so that it is the same with every standard library.
template <typename Gen>
uint64_t uniform_below(Gen& next, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  for (;;) {
    const uint64_t r = next();
    if (r >= threshold) return r % bound;
  }
}

}  // namespace

AugmentDraw draw_augment(uint64_t seed, int64_t epoch, int64_t position, const Augment& augment) {
  uint64_t state = mix_key({seed, static_cast<uint64_t>(epoch), kAugmentStream, static_cast<uint64_t>(position)});
  auto next = [&state] { return splitmix64(state); };
  AugmentDraw d;
  if (augment.pad > 0) {
    const uint64_t span = 2 * static_cast<uint64_t>(augment.pad) + 1;
    d.dy = static_cast<int>(uniform_below(next, span));
    d.dx = static_cast<int>(uniform_below(next, span));
  }
  if (augment.hflip) d.flip = (next() >> 63) != 0;
  return d;
}

SampleRng::SampleRng(uint64_t seed, int64_t epoch, uint64_t stream, int64_t position)
    : state_(mix_key({seed, static_cast<uint64_t>(epoch), stream, static_cast<uint64_t>(position)})) {}

uint64_t SampleRng::next() { return splitmix64(state_); }

double SampleRng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

std::vector<int64_t> epoch_order(int64_t n, bool shuffle, uint64_t seed, int64_t epoch) {
  BS_CHECK(n >= 0, "epoch_order: sample count must be >= 0, got ", n);
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  if (shuffle && n > 1) {
    std::mt19937_64 rng(mix_key({seed, static_cast<uint64_t>(epoch), kShuffleStream}));
    auto next = [&rng] { return static_cast<uint64_t>(rng()); };
    for (int64_t i = n - 1; i > 0; --i) {
      const auto j = static_cast<int64_t>(uniform_below(next, static_cast<uint64_t>(i) + 1));
      std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
    }
  }
  return order;
}

ShardRange shard_range(int64_t global, int rank, int count) {
  return {global * rank / count, global * (rank + 1) / count};
}

Loader::Loader(const Dataset& dataset, LoaderOptions options) : ds_(dataset), opt_(options), n_(0) {
  const std::string who = "loader for dataset '" + ds_.name + "': ";
  BS_CHECK(opt_.batch_size > 0, who, "batch size must be > 0, got ", opt_.batch_size);
  BS_CHECK(opt_.limit >= 0, who, "limit must be >= 0 (0 = all samples), got ", opt_.limit);
  BS_CHECK(opt_.shard_count >= 1 && opt_.shard_rank >= 0 && opt_.shard_rank < opt_.shard_count, who,
           "shard rank ", opt_.shard_rank, " is not in [0, ", opt_.shard_count, ")");
  BS_CHECK(opt_.augment.pad >= 0, who, "crop padding must be >= 0, got ", opt_.augment.pad);
  BS_CHECK(ds_.images.defined() && ds_.labels.defined(), who, "dataset has no images or labels");
  BS_CHECK(ds_.images.dim() == 4 && ds_.images.scalar_type() == torch::kUInt8 && ds_.images.is_contiguous(),
           who, "images must be a contiguous uint8 tensor [N, C, H, W], got ", ds_.images.sizes(), " ",
           ds_.images.scalar_type());
  BS_CHECK(ds_.labels.dim() == 1 && ds_.labels.scalar_type() == torch::kInt64 && ds_.labels.is_contiguous(),
           who, "labels must be a contiguous int64 tensor [N], got ", ds_.labels.sizes(), " ",
           ds_.labels.scalar_type());
  BS_CHECK(ds_.labels.size(0) == ds_.images.size(0), who, ds_.images.size(0), " images but ",
           ds_.labels.size(0), " labels");
  const int64_t channels = ds_.images.size(1);
  BS_CHECK(static_cast<int64_t>(ds_.mean.size()) == channels && static_cast<int64_t>(ds_.std.size()) == channels,
           who, "mean/std need one value per channel (", channels, "), got ", ds_.mean.size(), "/",
           ds_.std.size());
  n_ = opt_.limit > 0 ? std::min(opt_.limit, ds_.size()) : ds_.size();

  // Normalised value of every possible pixel, computed as (v / 255 - mean) / std in float,
  // the same operations as the tensor expression, so results match it exactly.
  lut_.resize(static_cast<size_t>(channels) * 256);
  for (int64_t c = 0; c < channels; ++c) {
    const float mean = ds_.mean[static_cast<size_t>(c)];
    const float sd = ds_.std[static_cast<size_t>(c)];
    BS_CHECK(sd > 0.0f, who, "std of channel ", c, " must be > 0, got ", sd);
    for (int v = 0; v < 256; ++v) {
      lut_[static_cast<size_t>(c * 256 + v)] = (static_cast<float>(v) / 255.0f - mean) / sd;
    }
  }
}

void Loader::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  pos_ = 0;
  order_ = epoch_order(n_, opt_.shuffle, opt_.seed, epoch);
  started_ = true;
}

int64_t Loader::num_batches() const {
  const int64_t b = opt_.batch_size;
  return opt_.drop_last ? n_ / b : (n_ + b - 1) / b;
}

bool Loader::next(Batch& batch) {
  BS_CHECK(started_, "loader for dataset '", ds_.name, "': next() called before start_epoch()");
  int64_t bsz = 0, first_pos = 0;
  for (;;) {
    const int64_t remaining = n_ - pos_;
    if (remaining <= 0 || (opt_.drop_last && remaining < opt_.batch_size)) return false;
    const int64_t global = std::min(opt_.batch_size, remaining);
    const auto part = shard_range(global, opt_.shard_rank, opt_.shard_count);
    first_pos = pos_ + part.begin;
    bsz = part.end - part.begin;
    pos_ += global;
    if (bsz > 0) break;
  }

  const int64_t C = ds_.images.size(1), H = ds_.images.size(2), W = ds_.images.size(3);
  const int64_t sample_px = C * H * W;
  batch.images = torch::empty({bsz, C, H, W}, torch::kFloat32);
  batch.labels = torch::empty({bsz}, torch::kInt64);
  batch.indices = torch::empty({bsz}, torch::kInt64);

  const uint8_t* src_all = ds_.images.data_ptr<uint8_t>();
  const int64_t* lab_all = ds_.labels.data_ptr<int64_t>();
  float* out_all = batch.images.data_ptr<float>();
  int64_t* lab_out = batch.labels.data_ptr<int64_t>();
  int64_t* idx_out = batch.indices.data_ptr<int64_t>();
  const int64_t* order = order_.data() + first_pos;
  const float* lut = lut_.data();
  const int pad = opt_.augment.pad;
  const bool augmenting = pad > 0 || opt_.augment.hflip;

  at::parallel_for(0, bsz, 8, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t idx = order[b];
      idx_out[b] = idx;
      lab_out[b] = lab_all[idx];
      AugmentDraw d;
      if (augmenting) d = draw_augment(opt_.seed, epoch_, first_pos + b, opt_.augment);
      // Output pixel (y, x) reads padded-image pixel (y + dy, x' + dx), x' = flip ? W-1-x : x;
      // in source coordinates that is (y + dy - pad, x' + dx - pad); outside the source it is 0.
      const int64_t oy = d.dy - pad, ox = d.dx - pad;
      const uint8_t* src = src_all + idx * sample_px;
      float* dst = out_all + b * sample_px;
      for (int64_t c = 0; c < C; ++c) {
        const float* lc = lut + c * 256;
        const float zero = lc[0];
        for (int64_t y = 0; y < H; ++y) {
          float* drow = dst + (c * H + y) * W;
          const int64_t sy = y + oy;
          if (sy < 0 || sy >= H) {
            std::fill(drow, drow + W, zero);
            continue;
          }
          const uint8_t* srow = src + (c * H + sy) * W;
          for (int64_t x = 0; x < W; ++x) {
            const int64_t sx = (d.flip ? W - 1 - x : x) + ox;
            drow[x] = (sx >= 0 && sx < W) ? lc[srow[sx]] : zero;
          }
        }
      }
    }
  });
  return true;
}

}  // namespace bitswitch::data
