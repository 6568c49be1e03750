// Image classification datasets held in memory as uint8 tensors.
// Fashion-MNIST from gzipped IDX files (Debian's dataset-fashion-mnist), CIFAR-10/100 binary batches.
// (ImageNet-style image folders are streamed from disk instead: data/image_folder.h.)
#pragma once
#include <torch/types.h>

#include <string>
#include <vector>

namespace bitswitch::data {

struct Dataset {
  std::string name;
  torch::Tensor images;  // uint8 [N, C, H, W]
  torch::Tensor labels;  // int64 [N]
  int64_t num_classes = 0;
  std::vector<float> mean;  // per channel, in [0, 1] pixel units
  std::vector<float> std;

  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  int64_t channels() const { return images.size(1); }
};

struct DatasetPair {
  Dataset train;
  Dataset test;
};

constexpr const char* kFashionMnistDefaultDir = "/usr/share/datasets/fashion-mnist";

// Reads train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-*.gz from `dir`.
DatasetPair load_fashion_mnist(const std::string& dir = kFashionMnistDefaultDir);
// Reads data_batch_1..5.bin and test_batch.bin (CIFAR-10 binary version) from `dir`.
DatasetPair load_cifar10(const std::string& dir);
// Reads train.bin and test.bin (CIFAR-100 binary version: coarse label, fine label, pixels);
// the class is the fine label (100 classes).
DatasetPair load_cifar100(const std::string& dir);
// By name: "fashion-mnist" or "cifar10". An empty `dir` means the dataset's default location.
DatasetPair load_dataset(const std::string& name, const std::string& dir);

// Low-level readers, exposed for tests. Throw bitswitch::Error naming the file on bad input.
torch::Tensor read_idx_images_gz(const std::string& path);  // uint8 [N, 1, H, W]
torch::Tensor read_idx_labels_gz(const std::string& path);  // int64 [N]

}  // namespace bitswitch::data
