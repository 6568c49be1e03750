// Tests of the data module: Fashion-MNIST IDX/gzip reading (real files and hand-made bad ones),
// the CIFAR-10 binary reader, load_dataset, and the Loader (order, limit, drop_last, augmentation).
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/types.h>

#include "bitswitch/data/datasets.h"
#include "bitswitch/data/loader.h"
#include "bitswitch/util/error.h"
#include "test_util.h"

using bitswitch::data::Augment;
using bitswitch::data::AugmentDraw;
using bitswitch::data::Batch;
using bitswitch::data::Dataset;
using bitswitch::data::DatasetPair;
using bitswitch::data::Loader;
using bitswitch::data::LoaderOptions;

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

void put_be32(Bytes& b, uint32_t v) {
  b.push_back(static_cast<uint8_t>(v >> 24));
  b.push_back(static_cast<uint8_t>(v >> 16));
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}

// Pixel value of image i at (r, c): varied but reproducible.
uint8_t pixel(int64_t i, int64_t r, int64_t c) { return static_cast<uint8_t>((i * 131 + r * 17 + c * 7 + 3) % 256); }

Bytes idx_images(uint32_t n, uint32_t rows, uint32_t cols, uint32_t magic = 0x00000803) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, n);
  put_be32(b, rows);
  put_be32(b, cols);
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t r = 0; r < rows; ++r)
      for (uint32_t c = 0; c < cols; ++c) b.push_back(pixel(i, r, c));
  return b;
}

Bytes idx_labels(const std::vector<uint8_t>& labels, uint32_t magic = 0x00000801) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, static_cast<uint32_t>(labels.size()));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

std::vector<uint8_t> label_list(int n) {
  std::vector<uint8_t> v;
  for (int i = 0; i < n; ++i) v.push_back(static_cast<uint8_t>((i * 3 + 1) % 10));
  return v;
}

void write_gz(const std::string& path, const Bytes& data) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(gzwrite(f, data.data(), static_cast<unsigned>(data.size())), static_cast<int>(data.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

void write_raw(const std::string& path, const Bytes& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  ASSERT_TRUE(out.good()) << path;
}

Bytes read_raw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A complete small Fashion-MNIST directory: 28x28 images, `n_train` / `n_test` samples.
std::string make_mnist_dir(const std::string& name, uint32_t n_train = 6, uint32_t n_test = 4) {
  const std::string dir = bitswitch::testing::temp_dir(name);
  write_gz(dir + "/train-images-idx3-ubyte.gz", idx_images(n_train, 28, 28));
  write_gz(dir + "/train-labels-idx1-ubyte.gz", idx_labels(label_list(static_cast<int>(n_train))));
  write_gz(dir + "/t10k-images-idx3-ubyte.gz", idx_images(n_test, 28, 28));
  write_gz(dir + "/t10k-labels-idx1-ubyte.gz", idx_labels(label_list(static_cast<int>(n_test))));
  return dir;
}

// CIFAR-10 record k of a file: label (k + seed) % 10 and pixels derived from (seed, k).
Bytes cifar_records(int count, int seed) {
  Bytes b;
  for (int k = 0; k < count; ++k) {
    b.push_back(static_cast<uint8_t>((k + seed) % 10));
    for (int p = 0; p < 3072; ++p) b.push_back(static_cast<uint8_t>((p * 5 + k * 11 + seed * 29) % 256));
  }
  return b;
}

std::string make_cifar_dir(const std::string& name) {
  const std::string dir = bitswitch::testing::temp_dir(name);
  for (int i = 1; i <= 5; ++i) write_raw(dir + "/data_batch_" + std::to_string(i) + ".bin", cifar_records(2, i));
  write_raw(dir + "/test_batch.bin", cifar_records(2, 0));
  return dir;
}

const DatasetPair& real_fashion_mnist() {
  static const DatasetPair pair = bitswitch::data::load_fashion_mnist();
  return pair;
}

// A small random dataset for loader tests: C=3, 5x6 images.
Dataset small_dataset(int64_t n = 37) {
  Dataset ds;
  ds.name = "small";
  ds.num_classes = 10;
  at::Generator gen = at::detail::createCPUGenerator(1234);
  ds.images = at::randint(0, 256, {n, 3, 5, 6}, gen, at::kByte);
  ds.labels = at::randint(0, 10, {n}, gen, at::kLong);
  ds.mean = {0.4f, 0.5f, 0.6f};
  ds.std = {0.2f, 0.25f, 0.3f};
  return ds;
}

std::vector<Batch> run_epoch(Loader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<Batch> out;
  Batch b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

std::vector<int64_t> epoch_indices(Loader& loader, int64_t epoch) {
  std::vector<int64_t> idx;
  for (const Batch& b : run_epoch(loader, epoch)) {
    const int64_t* p = b.indices.data_ptr<int64_t>();
    idx.insert(idx.end(), p, p + b.indices.numel());
  }
  return idx;
}

at::Tensor channel_tensor(const std::vector<float>& v) {
  return at::tensor(v, at::kFloat).view({1, static_cast<int64_t>(v.size()), 1, 1});
}

// (img / 255 - mean) / std with tensor ops, for uint8 images [B, C, H, W].
at::Tensor normalise(const at::Tensor& img, const Dataset& ds) {
  return (img.to(at::kFloat) / 255 - channel_tensor(ds.mean)) / channel_tensor(ds.std);
}

}  // namespace

// ---------------------------------------------------------------- Fashion-MNIST, real files

TEST(FashionMnist, LoadsRealFiles) {
  if (!fs::exists(bitswitch::data::kFashionMnistDefaultDir)) GTEST_SKIP() << "Fashion-MNIST is not installed";
  const DatasetPair& d = real_fashion_mnist();
  for (const Dataset* ds : {&d.train, &d.test}) {
    EXPECT_EQ(ds->name, "fashion-mnist");
    EXPECT_EQ(ds->num_classes, 10);
    EXPECT_EQ(ds->images.scalar_type(), at::kByte);
    EXPECT_EQ(ds->labels.scalar_type(), at::kLong);
    EXPECT_EQ(ds->channels(), 1);
    EXPECT_EQ(ds->mean, std::vector<float>{0.2860f});
    EXPECT_EQ(ds->std, std::vector<float>{0.3530f});
    EXPECT_EQ(ds->labels.min().item<int64_t>(), 0);
    EXPECT_EQ(ds->labels.max().item<int64_t>(), 9);
    // Fashion-MNIST is balanced: every class has exactly a tenth of the samples.
    EXPECT_TRUE(at::equal(at::bincount(ds->labels), at::full({10}, ds->size() / 10, at::kLong)));
  }
  EXPECT_EQ(d.train.images.sizes(), (at::IntArrayRef{60000, 1, 28, 28}));
  EXPECT_EQ(d.test.images.sizes(), (at::IntArrayRef{10000, 1, 28, 28}));
  EXPECT_EQ(d.train.size(), 60000);
  EXPECT_EQ(d.test.size(), 10000);
  EXPECT_EQ(d.train.labels[0].item<int64_t>(), 9);  // the first training image is an ankle boot
  EXPECT_EQ(d.test.labels[0].item<int64_t>(), 9);
  EXPECT_GT(d.train.images[0].max().item<int>(), 200);  // not an all-zero image
}

TEST(FashionMnist, LoadDatasetDefaultDir) {
  if (!fs::exists(bitswitch::data::kFashionMnistDefaultDir)) GTEST_SKIP() << "Fashion-MNIST is not installed";
  const DatasetPair d = bitswitch::data::load_dataset("fashion-mnist", "");
  EXPECT_TRUE(at::equal(d.train.images, real_fashion_mnist().train.images));
  EXPECT_TRUE(at::equal(d.test.labels, real_fashion_mnist().test.labels));
  const auto labels = bitswitch::data::read_idx_labels_gz(std::string(bitswitch::data::kFashionMnistDefaultDir) +
                                                          "/t10k-labels-idx1-ubyte.gz");
  EXPECT_TRUE(at::equal(labels, d.test.labels));
}

// ---------------------------------------------------------------- Fashion-MNIST, hand-made files

TEST(FashionMnist, ReadsSmallGzDir) {
  const std::string dir = make_mnist_dir("mnist_small", 6, 4);
  const DatasetPair d = bitswitch::data::load_dataset("fashion-mnist", dir);
  ASSERT_EQ(d.train.images.sizes(), (at::IntArrayRef{6, 1, 28, 28}));
  ASSERT_EQ(d.test.images.sizes(), (at::IntArrayRef{4, 1, 28, 28}));
  const auto labels = label_list(6);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(d.train.labels[i].item<int64_t>(), labels[i]);
  auto acc = d.train.images.accessor<uint8_t, 4>();
  for (int i : {0, 5})
    for (int r : {0, 13, 27})
      for (int c : {0, 9, 27}) EXPECT_EQ(acc[i][0][r][c], pixel(i, r, c)) << i << " " << r << " " << c;
}

TEST(FashionMnist, ReadsNonSquareIdxImages) {
  const std::string dir = bitswitch::testing::temp_dir("mnist_nonsquare");
  write_gz(dir + "/img.gz", idx_images(3, 4, 7));
  const auto img = bitswitch::data::read_idx_images_gz(dir + "/img.gz");
  ASSERT_EQ(img.sizes(), (at::IntArrayRef{3, 1, 4, 7}));
  EXPECT_EQ(img[2][0][3][6].item<int>(), pixel(2, 3, 6));
}

TEST(FashionMnist, WrongMagic) {
  const std::string dir = make_mnist_dir("mnist_magic");
  write_gz(dir + "/train-images-idx3-ubyte.gz", idx_images(6, 28, 28, 0x00000801));
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_fashion_mnist(dir),
                        "train-images-idx3-ubyte.gz: wrong IDX magic 0x00000801, expected 0x00000803");
  // Labels and images swapped.
  write_gz(dir + "/train-images-idx3-ubyte.gz", idx_images(6, 28, 28));
  write_gz(dir + "/t10k-labels-idx1-ubyte.gz", idx_images(4, 28, 28));
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_fashion_mnist(dir),
                        "t10k-labels-idx1-ubyte.gz: wrong IDX magic 0x00000803, expected 0x00000801");
}

TEST(FashionMnist, TruncatedGzip) {
  // Small files and large ones (over 256 KiB of pixels, which zlib decompresses straight into the
  // destination rather than through its own buffer) fail the same way.
  for (uint32_t n : {50u, 700u}) {
    const std::string dir = make_mnist_dir("mnist_truncated_" + std::to_string(n), n, 4);
    const std::string path = dir + "/train-images-idx3-ubyte.gz";
    const Bytes whole = read_raw(path);
    ASSERT_GT(whole.size(), 100u);
    // Cut into the compressed data, then only into the 8-byte trailer (CRC32 and length).
    for (size_t cut : {whole.size() / 2, size_t{9}, size_t{8}, size_t{5}, size_t{3}, size_t{1}}) {
      SCOPED_TRACE(std::to_string(n) + " images, " + std::to_string(cut) + " bytes cut");
      write_raw(path, Bytes(whole.begin(), whole.end() - static_cast<std::ptrdiff_t>(cut)));
      EXPECT_ERROR_CONTAINS(bitswitch::data::load_fashion_mnist(dir), "train-images-idx3-ubyte.gz: truncated");
    }
  }
  const std::string dir = make_mnist_dir("mnist_truncated_header");
  const std::string path = dir + "/train-images-idx3-ubyte.gz";
  const Bytes whole = read_raw(path);
  // A gzip file cut inside its 10-byte header.
  write_raw(path, Bytes(whole.begin(), whole.begin() + 5));
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_fashion_mnist(dir), "train-images-idx3-ubyte.gz: truncated");
}

TEST(FashionMnist, CorruptGzip) {
  const std::string dir = make_mnist_dir("mnist_corrupt");
  const std::string path = dir + "/t10k-images-idx3-ubyte.gz";
  Bytes data = read_raw(path);
  data[data.size() - 8] ^= 0x5a;  // first byte of the CRC32 in the trailer
  write_raw(path, data);
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_fashion_mnist(dir), "t10k-images-idx3-ubyte.gz: corrupt gzip data");
}

TEST(FashionMnist, IdxDataShorterThanHeader) {
  const std::string dir = make_mnist_dir("mnist_short_idx");
  Bytes img = idx_images(6, 28, 28);
  img.resize(img.size() - 100);  // a valid gzip file whose IDX payload is short
  write_gz(dir + "/train-images-idx3-ubyte.gz", img);
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_fashion_mnist(dir), "train-images-idx3-ubyte.gz: truncated");
}

TEST(FashionMnist, IdxDataLongerThanHeader) {
  const std::string dir = make_mnist_dir("mnist_long_idx");
  Bytes lab = idx_labels(label_list(6));
  lab.push_back(1);
  write_gz(dir + "/train-labels-idx1-ubyte.gz", lab);
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_fashion_mnist(dir), "train-labels-idx1-ubyte.gz: unexpected data");
}

TEST(FashionMnist, LabelCountMismatch) {
  const std::string dir = make_mnist_dir("mnist_count");
  write_gz(dir + "/train-labels-idx1-ubyte.gz", idx_labels(label_list(5)));
  try {
    bitswitch::data::load_fashion_mnist(dir);
    ADD_FAILURE() << "expected an error";
  } catch (const bitswitch::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("train-labels-idx1-ubyte.gz holds 5 labels"), std::string::npos) << msg;
    EXPECT_NE(msg.find("train-images-idx3-ubyte.gz holds 6 images"), std::string::npos) << msg;
  }
}

TEST(FashionMnist, MissingFile) {
  const std::string dir = make_mnist_dir("mnist_missing");
  fs::remove(dir + "/t10k-labels-idx1-ubyte.gz");
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_fashion_mnist(dir), "t10k-labels-idx1-ubyte.gz: file not found");
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_fashion_mnist(dir + "/nowhere"),
                        "nowhere/train-images-idx3-ubyte.gz: file not found");
}

TEST(FashionMnist, LabelOutOfRange) {
  const std::string dir = make_mnist_dir("mnist_label_range");
  auto labels = label_list(6);
  labels[4] = 10;
  write_gz(dir + "/train-labels-idx1-ubyte.gz", idx_labels(labels));
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_fashion_mnist(dir),
                        "train-labels-idx1-ubyte.gz: label 10 at index 4 is out of range");
}

TEST(FashionMnist, ImplausibleDims) {
  const std::string dir = bitswitch::testing::temp_dir("mnist_dims");
  Bytes b;
  put_be32(b, 0x00000803);
  put_be32(b, 3);
  put_be32(b, 0);  // zero rows
  put_be32(b, 28);
  write_gz(dir + "/zero-rows.gz", b);
  EXPECT_ERROR_CONTAINS(bitswitch::data::read_idx_images_gz(dir + "/zero-rows.gz"),
                        "zero-rows.gz: implausible IDX image dimensions 3 x 0 x 28");
  b.clear();
  put_be32(b, 0x00000803);
  put_be32(b, 0xffffffffu);
  put_be32(b, 28);
  put_be32(b, 28);
  write_gz(dir + "/huge.gz", b);
  EXPECT_ERROR_CONTAINS(bitswitch::data::read_idx_images_gz(dir + "/huge.gz"), "huge.gz: implausible");
  // Fashion-MNIST insists on 28x28.
  const std::string mdir = make_mnist_dir("mnist_dims_28");
  write_gz(mdir + "/t10k-images-idx3-ubyte.gz", idx_images(4, 32, 32));
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_fashion_mnist(mdir), "t10k-images-idx3-ubyte.gz: Fashion-MNIST images are 28x28");
}

// ---------------------------------------------------------------- CIFAR-10

TEST(Cifar10, ReadsGeneratedDir) {
  const std::string dir = make_cifar_dir("cifar_ok");
  const DatasetPair d = bitswitch::data::load_dataset("cifar10", dir);
  EXPECT_EQ(d.train.name, "cifar10");
  EXPECT_EQ(d.train.num_classes, 10);
  EXPECT_EQ(d.train.mean, (std::vector<float>{0.4914f, 0.4822f, 0.4465f}));
  EXPECT_EQ(d.train.std, (std::vector<float>{0.2470f, 0.2435f, 0.2616f}));
  ASSERT_EQ(d.train.images.sizes(), (at::IntArrayRef{10, 3, 32, 32}));
  ASSERT_EQ(d.test.images.sizes(), (at::IntArrayRef{2, 3, 32, 32}));
  ASSERT_EQ(d.train.labels.sizes(), (at::IntArrayRef{10}));
  EXPECT_EQ(d.train.labels.scalar_type(), at::kLong);
  // Sample 2k+j of train is record j of data_batch_{k+1}.bin.
  for (int file = 1; file <= 5; ++file) {
    const Bytes rec = cifar_records(2, file);
    for (int j = 0; j < 2; ++j) {
      const int64_t s = (file - 1) * 2 + j;
      EXPECT_EQ(d.train.labels[s].item<int64_t>(), rec[j * 3073]);
      const at::Tensor expected =
          at::from_blob(const_cast<uint8_t*>(rec.data()) + j * 3073 + 1, {3, 32, 32}, at::kByte);
      EXPECT_TRUE(at::equal(d.train.images[s], expected)) << "sample " << s;
    }
  }
  const Bytes test_rec = cifar_records(2, 0);
  EXPECT_EQ(d.test.labels[1].item<int64_t>(), test_rec[3073]);
  // Channel-major layout: pixel (c, y, x) is byte 1 + c*1024 + y*32 + x of the record.
  EXPECT_EQ(d.test.images[1][2][5][7].item<int>(), test_rec[3073 + 1 + 2 * 1024 + 5 * 32 + 7]);
}

TEST(Cifar10, BadSize) {
  const std::string dir = make_cifar_dir("cifar_size");
  Bytes b = cifar_records(2, 3);
  b.resize(b.size() + 5);
  write_raw(dir + "/data_batch_3.bin", b);
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_cifar10(dir),
                        "data_batch_3.bin: size 6151 bytes is not a positive multiple of the CIFAR-10 record size 3073");
  write_raw(dir + "/data_batch_3.bin", Bytes{});
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_cifar10(dir), "data_batch_3.bin: size 0 bytes");
}

TEST(Cifar10, MissingFileAndBadLabel) {
  const std::string dir = make_cifar_dir("cifar_missing");
  fs::remove(dir + "/test_batch.bin");
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_cifar10(dir), "test_batch.bin: file not found");
  Bytes b = cifar_records(2, 0);
  b[3073] = 10;  // label of record 1
  write_raw(dir + "/test_batch.bin", b);
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_cifar10(dir), "test_batch.bin: record 1 has label 10, expected 0..9");
}

TEST(LoadDataset, NamesAndDirs) {
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_dataset("mnist", ""), "unknown dataset 'mnist'");
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_dataset("mnist", ""), "fashion-mnist, cifar10, cifar100, imagefolder");
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_dataset("cifar10", ""), "--data-dir is required");
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_dataset("cifar10", "/nonexistent-bitswitch-dir"),
                        "/nonexistent-bitswitch-dir/data_batch_1.bin: file not found");
}

// ---------------------------------------------------------------- Loader

TEST(Loader, EpochOrderGolden) {
  // Pinned so that a change of the shuffle (which would break resumed runs) is noticed.
  const auto order = bitswitch::data::epoch_order(10, true, 42, 3);
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(order, (std::vector<int64_t>{9, 8, 2, 6, 0, 1, 7, 4, 3, 5}));
  EXPECT_EQ(bitswitch::data::epoch_order(4, false, 42, 3), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_TRUE(bitswitch::data::epoch_order(0, true, 1, 1).empty());
}

TEST(Loader, SameSeedAndEpochGiveIdenticalBatches) {
  const Dataset ds = small_dataset();
  LoaderOptions opt;
  opt.batch_size = 8;
  opt.shuffle = true;
  opt.seed = 7;
  opt.augment = Augment{2, true};
  Loader a(ds, opt), b(ds, opt);
  const auto ea = run_epoch(a, 3);
  run_epoch(b, 1);  // b's history must not matter
  const auto eb = run_epoch(b, 3);
  ASSERT_EQ(ea.size(), eb.size());
  for (size_t i = 0; i < ea.size(); ++i) {
    EXPECT_TRUE(at::equal(ea[i].images, eb[i].images)) << "batch " << i;
    EXPECT_TRUE(at::equal(ea[i].labels, eb[i].labels)) << "batch " << i;
    EXPECT_TRUE(at::equal(ea[i].indices, eb[i].indices)) << "batch " << i;
  }
}

TEST(Loader, DifferentEpochOrSeedGivesDifferentOrder) {
  const Dataset ds = small_dataset();
  LoaderOptions opt;
  opt.batch_size = 10;
  opt.shuffle = true;
  opt.seed = 7;
  Loader a(ds, opt);
  const auto e0 = epoch_indices(a, 0);
  const auto e1 = epoch_indices(a, 1);
  EXPECT_NE(e0, e1);
  opt.seed = 8;
  Loader b(ds, opt);
  EXPECT_NE(epoch_indices(b, 0), e0);
  opt.shuffle = false;
  Loader c(ds, opt);
  std::vector<int64_t> identity(37);
  for (int64_t i = 0; i < 37; ++i) identity[i] = i;
  EXPECT_EQ(epoch_indices(c, 0), identity);
  EXPECT_EQ(epoch_indices(c, 5), identity);
}

TEST(Loader, EverySampleOncePerEpoch) {
  const Dataset ds = small_dataset();
  LoaderOptions opt;
  opt.batch_size = 8;
  opt.shuffle = true;
  opt.seed = 11;
  opt.augment = Augment{1, true};
  Loader loader(ds, opt);
  for (int64_t epoch : {0, 1, 2}) {
    const auto batches = run_epoch(loader, epoch);
    std::vector<int64_t> seen;
    for (const Batch& b : batches) {
      EXPECT_EQ(b.labels.scalar_type(), at::kLong);
      EXPECT_EQ(b.indices.scalar_type(), at::kLong);
      EXPECT_EQ(b.images.scalar_type(), at::kFloat);
      EXPECT_TRUE(at::equal(b.labels, ds.labels.index_select(0, b.indices)));
      const int64_t* p = b.indices.data_ptr<int64_t>();
      seen.insert(seen.end(), p, p + b.indices.numel());
    }
    std::sort(seen.begin(), seen.end());
    std::vector<int64_t> all(37);
    for (int64_t i = 0; i < 37; ++i) all[i] = i;
    EXPECT_EQ(seen, all) << "epoch " << epoch;
  }
}

TEST(Loader, BatchCountsAndDropLast) {
  const Dataset ds = small_dataset();
  LoaderOptions opt;
  opt.batch_size = 8;
  Loader keep(ds, opt);
  EXPECT_EQ(keep.num_samples(), 37);
  EXPECT_EQ(keep.num_batches(), 5);
  auto batches = run_epoch(keep, 0);
  ASSERT_EQ(batches.size(), 5u);
  EXPECT_EQ(batches.back().images.sizes(), (at::IntArrayRef{5, 3, 5, 6}));
  Batch extra;
  EXPECT_FALSE(keep.next(extra));  // stays at the end

  opt.drop_last = true;
  Loader drop(ds, opt);
  EXPECT_EQ(drop.num_batches(), 4);
  batches = run_epoch(drop, 0);
  ASSERT_EQ(batches.size(), 4u);
  for (const Batch& b : batches) EXPECT_EQ(b.images.size(0), 8);

  opt.batch_size = 37;
  Loader exact(ds, opt);
  EXPECT_EQ(exact.num_batches(), 1);
  EXPECT_EQ(run_epoch(exact, 0).size(), 1u);
  opt.batch_size = 100;
  Loader too_big(ds, opt);
  EXPECT_EQ(too_big.num_batches(), 0);
  EXPECT_EQ(run_epoch(too_big, 0).size(), 0u);
}

TEST(Loader, LimitUsesFirstSamples) {
  const Dataset ds = small_dataset();
  LoaderOptions opt;
  opt.batch_size = 4;
  opt.shuffle = true;
  opt.limit = 10;
  Loader loader(ds, opt);
  EXPECT_EQ(loader.num_samples(), 10);
  EXPECT_EQ(loader.num_batches(), 3);
  auto idx = epoch_indices(loader, 2);
  std::sort(idx.begin(), idx.end());
  EXPECT_EQ(idx, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  opt.limit = 1000;
  EXPECT_EQ(Loader(ds, opt).num_samples(), 37);
}

// The loader computes (v / 255 - mean) / std with the same float operations as the tensor
// expression, so the comparisons below are exact.
TEST(Loader, NoAugmentMatchesTensorOps) {
  const Dataset ds = small_dataset();
  LoaderOptions opt;
  opt.batch_size = 16;
  opt.shuffle = true;
  opt.seed = 3;
  Loader loader(ds, opt);
  for (const Batch& b : run_epoch(loader, 4)) {
    const at::Tensor expected = normalise(ds.images.index_select(0, b.indices), ds);
    ASSERT_EQ(b.images.sizes(), expected.sizes());
    EXPECT_TRUE(at::equal(b.images, expected));
  }
}

TEST(Loader, PadAndFlipArePixelExact) {
  const Dataset ds = small_dataset();
  const Augment aug{2, true};
  LoaderOptions opt;
  opt.batch_size = 16;
  opt.shuffle = true;
  opt.seed = 99;
  opt.augment = aug;
  Loader loader(ds, opt);
  const int64_t epoch = 6;
  const int64_t H = 5, W = 6;
  int flips = 0, shifted = 0, position = 0;
  for (const Batch& b : run_epoch(loader, epoch)) {
    for (int64_t i = 0; i < b.images.size(0); ++i, ++position) {
      const AugmentDraw d = bitswitch::data::draw_augment(opt.seed, epoch, position, aug);
      ASSERT_GE(d.dy, 0);
      ASSERT_LE(d.dy, 2 * aug.pad);
      ASSERT_GE(d.dx, 0);
      ASSERT_LE(d.dx, 2 * aug.pad);
      flips += d.flip;
      shifted += (d.dy != aug.pad || d.dx != aug.pad);
      const int64_t idx = b.indices[i].item<int64_t>();
      at::Tensor img = at::constant_pad_nd(ds.images.narrow(0, idx, 1), {aug.pad, aug.pad, aug.pad, aug.pad}, 0);
      img = img.narrow(2, d.dy, H).narrow(3, d.dx, W);
      if (d.flip) img = img.flip({3});
      const at::Tensor expected = normalise(img, ds)[0];
      EXPECT_TRUE(at::equal(b.images[i], expected))
          << "position " << position << " dy " << d.dy << " dx " << d.dx << " flip " << d.flip;
    }
  }
  EXPECT_EQ(position, 37);
  EXPECT_GT(flips, 0);
  EXPECT_LT(flips, 37);
  EXPECT_GT(shifted, 0);
}

TEST(Loader, PaddingBecomesMinusMeanOverStd) {
  Dataset ds;
  ds.name = "ones";
  ds.num_classes = 2;
  ds.images = at::full({1, 1, 4, 4}, 255, at::kByte);
  ds.labels = at::zeros({1}, at::kLong);
  ds.mean = {0.5f};
  ds.std = {0.25f};
  LoaderOptions opt;
  opt.batch_size = 1;
  opt.augment = Augment{3, false};
  Loader loader(ds, opt);
  const AugmentDraw d = bitswitch::data::draw_augment(opt.seed, 0, 0, opt.augment);
  ASSERT_FALSE(d.flip);
  const auto batches = run_epoch(loader, 0);
  ASSERT_EQ(batches.size(), 1u);
  const auto acc = batches[0].images.accessor<float, 4>();
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) {
      const int sy = y + d.dy - 3, sx = x + d.dx - 3;
      const bool inside = sy >= 0 && sy < 4 && sx >= 0 && sx < 4;
      EXPECT_FLOAT_EQ(acc[0][0][y][x], inside ? 2.0f : -2.0f) << y << " " << x;
    }
}

TEST(Loader, DrawAugmentIsPureAndCoversRange) {
  const Augment aug{4, true};
  std::set<int> dys, dxs;
  int flips = 0;
  const int n = 4000;
  for (int p = 0; p < n; ++p) {
    const AugmentDraw d = bitswitch::data::draw_augment(5, 2, p, aug);
    const AugmentDraw again = bitswitch::data::draw_augment(5, 2, p, aug);
    ASSERT_EQ(d.dy, again.dy);
    ASSERT_EQ(d.dx, again.dx);
    ASSERT_EQ(d.flip, again.flip);
    dys.insert(d.dy);
    dxs.insert(d.dx);
    flips += d.flip;
  }
  EXPECT_EQ(dys, (std::set<int>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(dxs, (std::set<int>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_NEAR(flips, n / 2, n / 10);
  const AugmentDraw none = bitswitch::data::draw_augment(5, 2, 0, Augment{});
  EXPECT_EQ(none.dy, 0);
  EXPECT_EQ(none.dx, 0);
  EXPECT_FALSE(none.flip);
  // Different epochs draw differently.
  int differ = 0;
  for (int p = 0; p < 100; ++p) {
    const AugmentDraw a = bitswitch::data::draw_augment(5, 2, p, aug);
    const AugmentDraw b = bitswitch::data::draw_augment(5, 3, p, aug);
    differ += (a.dy != b.dy || a.dx != b.dx || a.flip != b.flip);
  }
  EXPECT_GT(differ, 50);
}

TEST(Loader, RealFashionMnistBatch) {
  if (!fs::exists(bitswitch::data::kFashionMnistDefaultDir)) GTEST_SKIP() << "Fashion-MNIST is not installed";
  const Dataset& ds = real_fashion_mnist().test;
  LoaderOptions opt;
  opt.batch_size = 256;
  opt.shuffle = true;
  Loader loader(ds, opt);
  EXPECT_EQ(loader.num_batches(), 40);
  loader.start_epoch(0);
  Batch b;
  ASSERT_TRUE(loader.next(b));
  EXPECT_EQ(b.images.sizes(), (at::IntArrayRef{256, 1, 28, 28}));
  EXPECT_TRUE(at::equal(b.images, normalise(ds.images.index_select(0, b.indices), ds)));
}

TEST(Loader, RejectsBadUse) {
  const Dataset ds = small_dataset();
  LoaderOptions opt;
  opt.batch_size = 0;
  EXPECT_ERROR_CONTAINS(Loader l(ds, opt), "batch size must be > 0");
  opt.batch_size = 4;
  opt.augment.pad = -1;
  EXPECT_ERROR_CONTAINS(Loader l(ds, opt), "crop padding must be >= 0");
  opt.augment.pad = 0;
  Dataset bad = small_dataset();
  bad.mean = {0.5f};
  EXPECT_ERROR_CONTAINS(Loader l(bad, opt), "one value per channel");
  Loader loader(ds, opt);
  Batch b;
  EXPECT_ERROR_CONTAINS(loader.next(b), "next() called before start_epoch()");
}

TEST(Cifar100, ReadsFineLabelsAndRejectsBadFiles) {
  const std::string dir = bitswitch::testing::temp_dir("cifar100");
  // Record k: coarse label 19 - k % 20, fine label (7 * k + seed) % 100, then pixels.
  auto records = [](int count, int seed, int bad_label_at = -1) {
    Bytes b;
    for (int k = 0; k < count; ++k) {
      b.push_back(static_cast<uint8_t>(19 - k % 20));
      b.push_back(static_cast<uint8_t>(k == bad_label_at ? 100 : (7 * k + seed) % 100));
      for (int p = 0; p < 3072; ++p) b.push_back(static_cast<uint8_t>((p * 3 + k * 13 + seed) % 256));
    }
    return b;
  };
  write_raw(dir + "/train.bin", records(5, 1));
  write_raw(dir + "/test.bin", records(3, 2));
  const DatasetPair d = bitswitch::data::load_dataset("cifar100", dir);
  EXPECT_EQ(d.train.name, "cifar100");
  EXPECT_EQ(d.train.num_classes, 100);
  ASSERT_EQ(d.train.size(), 5);
  ASSERT_EQ(d.test.size(), 3);
  for (int k = 0; k < 5; ++k) EXPECT_EQ(d.train.labels[k].item<int64_t>(), (7 * k + 1) % 100);
  // Pixel (c, y, x) of record k is byte 2 + c*1024 + y*32 + x.
  EXPECT_EQ(d.test.images[2][1][3][4].item<int>(), (int(1024 + 3 * 32 + 4) * 3 + 2 * 13 + 2) % 256);
  Bytes b = records(2, 0);
  b.pop_back();
  write_raw(dir + "/test.bin", b);
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_cifar100(dir),
                        "test.bin: size 6147 bytes is not a positive multiple of the CIFAR-100 record size 3074");
  write_raw(dir + "/test.bin", records(3, 0, 2));
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_cifar100(dir), "test.bin: record 2 has label 100, expected 0..99");
  EXPECT_ERROR_CONTAINS(bitswitch::data::load_cifar100(""), "--data-dir is required");
}
