// Builds the batch sources of a training run (data_sources.h).
#include "bitswitch/train/data_sources.h"

#include <filesystem>

#include "bitswitch/data/image_folder.h"
#include "bitswitch/util/error.h"

namespace bitswitch::train {

namespace {

DataSources open_image_folders(const TrainConfig& c, int64_t test_batch, int shard_rank, int shard_count) {
  BS_CHECK(!c.data_dir.empty(), "dataset imagefolder: --data-dir is required (a directory holding train/<class>/*.JPEG "
                                "and val/<class>/*.JPEG)");
  const auto root = std::filesystem::path(c.data_dir);
  auto train = data::scan_image_folder((root / "train").string());
  auto val = data::scan_image_folder((root / "val").string());
  BS_CHECK(train.classes == val.classes, "dataset imagefolder '", c.data_dir, "': train/ has ", train.classes.size(),
           " classes and val/ has ", val.classes.size(), "; the class directories must be the same");
  DataSources d;
  d.name = "imagefolder";
  d.channels = 3;
  d.num_classes = static_cast<int64_t>(train.classes.size());
  data::ImageFolderOptions o;
  o.crop = c.image_size;
  o.resize = data::eval_resize(c.image_size);  // 224 -> 256
  o.threads = c.workers;
  o.prefetch = 2 * c.workers;
  o.skip_corrupt = c.skip_corrupt;
  o.seed = c.seed;
  o.batch_size = c.batch;
  o.train = true;
  o.hflip = c.hflip;
  o.limit = c.train_limit;
  o.shard_rank = shard_rank;
  o.shard_count = shard_count;
  d.train = std::make_unique<data::ImageFolderLoader>(std::move(train), o);
  o.train = false;
  o.limit = c.test_limit;
  if (test_batch > 0) o.batch_size = test_batch;
  d.test = std::make_unique<data::ImageFolderLoader>(std::move(val), o);
  return d;
}

}  // namespace

DataSources open_data(const TrainConfig& c, int64_t test_batch, int shard_rank, int shard_count) {
  if (c.dataset == "imagefolder") return open_image_folders(c, test_batch, shard_rank, shard_count);
  DataSources d;
  d.memory = std::make_unique<data::DatasetPair>(data::load_dataset(c.dataset, c.data_dir));
  d.name = d.memory->train.name;
  d.channels = d.memory->train.channels();
  d.num_classes = d.memory->train.num_classes;
  data::LoaderOptions tr;
  tr.batch_size = c.batch;
  tr.shuffle = true;
  tr.drop_last = true;
  tr.augment = {c.augment_pad, c.hflip};
  tr.seed = c.seed;
  tr.limit = c.train_limit;
  tr.shard_rank = shard_rank;
  tr.shard_count = shard_count;
  d.train = std::make_unique<data::Loader>(d.memory->train, tr);
  data::LoaderOptions te;
  te.batch_size = test_batch > 0 ? test_batch : 500;
  te.limit = c.test_limit;
  te.shard_rank = shard_rank;
  te.shard_count = shard_count;
  d.test = std::make_unique<data::Loader>(d.memory->test, te);
  return d;
}

std::unique_ptr<data::BatchSource> open_calibration_data(const TrainConfig& c, const DataSources& d, int shard_rank,
                                                         int shard_count) {
  if (!d.memory) return nullptr;
  data::LoaderOptions o;
  o.batch_size = c.batch;
  o.shuffle = true;  // a seeded random subset of the classes' images, not the file's first ones
  o.seed = c.seed;
  o.limit = c.train_limit;
  o.shard_rank = shard_rank;
  o.shard_count = shard_count;
  return std::make_unique<data::Loader>(d.memory->train, o);
}

}  // namespace bitswitch::train
