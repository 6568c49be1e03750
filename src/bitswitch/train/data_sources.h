// The training and test batch sources a TrainConfig describes: in-memory datasets
// (fashion-mnist, cifar10, cifar100) through data::Loader, or an image folder
// (data_dir/train, data_dir/val) streamed by data::ImageFolderLoader.
#pragma once
#include <memory>
#include <string>

#include "bitswitch/data/datasets.h"
#include "bitswitch/data/loader.h"
#include "bitswitch/train/config.h"

namespace bitswitch::train {

struct DataSources {
  std::string name;
  int64_t channels = 0;
  int64_t num_classes = 0;
  std::unique_ptr<data::BatchSource> train;  // shuffled, augmented, drop_last
  std::unique_ptr<data::BatchSource> test;   // in order, no augmentation
  std::unique_ptr<data::DatasetPair> memory; // the in-memory datasets the Loaders read
};

// Opens the dataset of `config` (dataset, data_dir, batch, limits, augmentation, seed, workers,
// skip_corrupt, image_size). `test_batch`: evaluation batch size (0: 500 for in-memory data,
// `batch` for image folders). `shard_rank` / `shard_count`: this process's shard of every batch
// in data-parallel training (each rank decodes only its part of an image folder's batches). Throws bitswitch::Error naming the field or the path.
DataSources open_data(const TrainConfig& config, int64_t test_batch = 0, int shard_rank = 0, int shard_count = 1);

// Training images without augmentation, in a seeded shuffled order, in batches of `batch`: the
// data of BN re-estimation (bn_calibration.h). Null for image folders, whose calibration uses
// the (augmented) training source itself.
std::unique_ptr<data::BatchSource> open_calibration_data(const TrainConfig& config, const DataSources& sources,
                                                         int shard_rank = 0, int shard_count = 1);

}  // namespace bitswitch::train
