// Implements datasets.h: Fashion-MNIST from gzipped IDX files (read with zlib) and the
// CIFAR-10 binary version, each loaded into memory as uint8 image and int64 label tensors.
// Every malformed input is reported as a bitswitch::Error naming the file at fault.
#include "bitswitch/data/datasets.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "bitswitch/util/error.h"

namespace bitswitch::data {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kIdxImagesMagic = 0x00000803;  // unsigned byte data, 3 dimensions
constexpr uint32_t kIdxLabelsMagic = 0x00000801;  // unsigned byte data, 1 dimension
constexpr int64_t kMaxIdxItems = int64_t{1} << 28;
constexpr int64_t kMaxIdxSide = 4096;
constexpr int64_t kMaxIdxBytes = int64_t{1} << 34;

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

void require_regular_file(const std::string& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (!fs::exists(st)) fail(path, ": file not found");
  if (fs::is_directory(st)) fail(path, ": is a directory, expected a file");
}

// Sequential reader of a gzip file that turns every short read or zlib error into an Error.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    require_regular_file(path);
    errno = 0;
    f_ = gzopen(path.c_str(), "rb");
    if (f_ == nullptr) {
      fail(path, ": cannot open: ", errno != 0 ? std::strerror(errno) : "zlib could not allocate its state");
    }
    gzbuffer(f_, kGzBufferBytes);
  }
  ~GzReader() {
    if (f_ != nullptr) gzclose(f_);
  }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads exactly `n` uncompressed bytes; `what` names them in the error message.
  void read(void* dst, int64_t n, const std::string& what) {
    auto* p = static_cast<char*>(dst);
    int64_t done = 0;
    while (done < n) {
      const unsigned chunk = static_cast<unsigned>(std::min<int64_t>(n - done, int64_t{1} << 30));
      const int r = gzread(f_, p + done, chunk);
      if (r < 0) zlib_failure(what);
      if (r == 0) break;
      done += r;
    }
    if (done < n) {
      check_zlib(what);  // a gzip stream cut short reports Z_BUF_ERROR here
      fail(path_, ": truncated: ", what, " needs ", n, " bytes but the file holds only ", done);
    }
  }

  // Reads the last `n` bytes of the file's data and checks that the data ends there and that
  // the gzip trailer (CRC32, length) is intact. zlib only checks the trailer while it has output
  // room left: if a read into the caller's buffer ends exactly at the end of the data, a cut-off
  // trailer is silently taken for end-of-file. So the final stretch is read through a staging
  // buffer with room to spare (smaller than twice the gzbuffer size, so zlib decompresses through
  // its own buffer and runs on to the end of the stream).
  void read_to_end(void* dst, int64_t n, const std::string& what) {
    const int64_t tail = std::min<int64_t>(n, kStagingBytes);
    read(dst, n - tail, what);
    std::vector<char> buf(static_cast<size_t>(tail) + 1);
    int64_t got = 0;
    while (got <= tail) {
      const int r = gzread(f_, buf.data() + got, static_cast<unsigned>(tail + 1 - got));
      if (r < 0) zlib_failure(what);
      if (r == 0) break;
      got += r;
    }
    check_zlib(what);
    if (got < tail) {
      fail(path_, ": truncated: ", what, " needs ", n, " bytes but the file holds only ", n - tail + got);
    }
    if (got > tail) fail(path_, ": unexpected data after ", what, " (the file holds more than its header announces)");
    std::memcpy(static_cast<char*>(dst) + (n - tail), buf.data(), static_cast<size_t>(tail));
  }

 private:
  void check_zlib(const std::string& what) {
    int err = Z_OK;
    gzerror(f_, &err);
    if (err != Z_OK) zlib_failure(what);
  }

  [[noreturn]] void zlib_failure(const std::string& what) {
    int err = Z_OK;
    const char* msg = gzerror(f_, &err);
    std::string detail = msg != nullptr ? msg : "unknown zlib error";
    if (detail.rfind(path_ + ": ", 0) == 0) detail.erase(0, path_.size() + 2);  // zlib prefixes the path
    if (err == Z_BUF_ERROR) {
      fail(path_, ": truncated gzip file: compressed data ends early while reading ", what, " (", detail, ")");
    }
    if (err == Z_DATA_ERROR) fail(path_, ": corrupt gzip data while reading ", what, " (", detail, ")");
    if (err == Z_ERRNO) fail(path_, ": read error while reading ", what, ": ", std::strerror(errno));
    fail(path_, ": zlib error ", err, " while reading ", what, " (", detail, ")");
  }

  static constexpr unsigned kGzBufferBytes = 1 << 17;
  static constexpr int64_t kStagingBytes = 1 << 16;  // < 2 * kGzBufferBytes, see read_to_end
  std::string path_;
  gzFile f_ = nullptr;
};

uint32_t read_be32(GzReader& in, const std::string& what) {
  unsigned char b[4];
  in.read(b, 4, what);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

void check_magic(const std::string& path, uint32_t magic, uint32_t expected, const char* kind) {
  if (magic != expected) {
    fail(path, ": wrong IDX magic ", hex32(magic), ", expected ", hex32(expected), " (", kind,
         "); is this the right file?");
  }
}

// Throws if any label is outside [0, num_classes).
void check_label_range(const std::string& path, const torch::Tensor& labels, int64_t num_classes) {
  const int64_t* p = labels.data_ptr<int64_t>();
  for (int64_t i = 0, n = labels.numel(); i < n; ++i) {
    if (p[i] < 0 || p[i] >= num_classes) {
      fail(path, ": label ", p[i], " at index ", i, " is out of range, expected 0..", num_classes - 1);
    }
  }
}

Dataset fashion_mnist_split(const fs::path& dir, const std::string& prefix) {
  const std::string images_path = (dir / (prefix + "-images-idx3-ubyte.gz")).string();
  const std::string labels_path = (dir / (prefix + "-labels-idx1-ubyte.gz")).string();
  Dataset ds;
  ds.name = "fashion-mnist";
  ds.num_classes = 10;
  ds.mean = {0.2860f};
  ds.std = {0.3530f};
  ds.images = read_idx_images_gz(images_path);
  if (ds.images.size(2) != 28 || ds.images.size(3) != 28) {
    fail(images_path, ": Fashion-MNIST images are 28x28, this file holds ", ds.images.size(2), "x",
         ds.images.size(3));
  }
  ds.labels = read_idx_labels_gz(labels_path);
  if (ds.labels.size(0) != ds.images.size(0)) {
    fail("label count does not match image count: ", labels_path, " holds ", ds.labels.size(0),
         " labels but ", images_path, " holds ", ds.images.size(0), " images");
  }
  check_label_range(labels_path, ds.labels, ds.num_classes);
  return ds;
}

constexpr int64_t kCifarChannels = 3;
constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarPixels = kCifarChannels * kCifarSide * kCifarSide;  // 3072

// The two binary CIFAR layouts: CIFAR-10 records are <label><3072 pixels>; CIFAR-100 records
// are <coarse label><fine label><3072 pixels> (the fine label, 0..99, is the class).
struct CifarFormat {
  const char* name;
  const char* title;  // for messages
  int64_t label_bytes;
  int64_t num_classes;
  std::vector<float> mean, std;
  int64_t record() const { return label_bytes + kCifarPixels; }
};
const CifarFormat kCifar10{"cifar10", "CIFAR-10", 1, 10, {0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
const CifarFormat kCifar100{"cifar100", "CIFAR-100", 2, 100, {0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}};

// Size of a CIFAR batch file in records, after checking it exists and is whole records.
int64_t cifar_records(const std::string& path, const CifarFormat& f) {
  require_regular_file(path);
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) fail(path, ": cannot read file size: ", ec.message());
  if (size == 0 || size % f.record() != 0) {
    fail(path, ": size ", size, " bytes is not a positive multiple of the ", f.title, " record size ", f.record(),
         " (", f.label_bytes, " label byte(s) + 3x32x32 pixels); is this the binary version of ", f.title, "?");
  }
  return static_cast<int64_t>(size / f.record());
}

Dataset cifar_split(const fs::path& dir, const std::vector<std::string>& files, const CifarFormat& f) {
  std::vector<std::string> paths;
  std::vector<int64_t> counts;
  int64_t total = 0;
  for (const auto& file : files) {
    paths.push_back((dir / file).string());
    counts.push_back(cifar_records(paths.back(), f));
    total += counts.back();
  }
  Dataset ds;
  ds.name = f.name;
  ds.num_classes = f.num_classes;
  ds.mean = f.mean;
  ds.std = f.std;
  ds.images = torch::empty({total, kCifarChannels, kCifarSide, kCifarSide}, torch::kUInt8);
  ds.labels = torch::empty({total}, torch::kInt64);
  uint8_t* img = ds.images.data_ptr<uint8_t>();
  int64_t* lab = ds.labels.data_ptr<int64_t>();
  std::vector<char> buf;
  int64_t at = 0;
  for (size_t k = 0; k < paths.size(); ++k) {
    const std::string& path = paths[k];
    const int64_t bytes = counts[k] * f.record();
    buf.resize(static_cast<size_t>(bytes));
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, ": cannot open: ", std::strerror(errno));
    in.read(buf.data(), bytes);
    if (in.gcount() != bytes) fail(path, ": read only ", in.gcount(), " of ", bytes, " bytes");
    for (int64_t r = 0; r < counts[k]; ++r, ++at) {
      const auto* rec = reinterpret_cast<const uint8_t*>(buf.data()) + r * f.record();
      const int label = rec[f.label_bytes - 1];
      if (label >= f.num_classes)
        fail(path, ": record ", r, " has label ", label, ", expected 0..", f.num_classes - 1);
      lab[at] = label;
      std::memcpy(img + at * kCifarPixels, rec + f.label_bytes, kCifarPixels);
    }
  }
  return ds;
}

}  // namespace

torch::Tensor read_idx_images_gz(const std::string& path) {
  GzReader in(path);
  check_magic(path, read_be32(in, "the IDX magic number"), kIdxImagesMagic, "IDX unsigned-byte images, 3 dims");
  const int64_t n = read_be32(in, "the IDX image count");
  const int64_t rows = read_be32(in, "the IDX row count");
  const int64_t cols = read_be32(in, "the IDX column count");
  if (n < 1 || n > kMaxIdxItems || rows < 1 || rows > kMaxIdxSide || cols < 1 || cols > kMaxIdxSide ||
      n * rows * cols > kMaxIdxBytes) {
    fail(path, ": implausible IDX image dimensions ", n, " x ", rows, " x ", cols, " (count must be in 1..",
         kMaxIdxItems, ", rows and columns in 1..", kMaxIdxSide, ")");
  }
  torch::Tensor images = torch::empty({n, 1, rows, cols}, torch::kUInt8);
  in.read_to_end(images.data_ptr<uint8_t>(), n * rows * cols,
                 str_cat("the pixels of ", n, " images of ", rows, "x", cols));
  return images;
}

torch::Tensor read_idx_labels_gz(const std::string& path) {
  GzReader in(path);
  check_magic(path, read_be32(in, "the IDX magic number"), kIdxLabelsMagic, "IDX unsigned-byte labels, 1 dim");
  const int64_t n = read_be32(in, "the IDX label count");
  if (n < 1 || n > kMaxIdxItems) {
    fail(path, ": implausible IDX label count ", n, " (must be in 1..", kMaxIdxItems, ")");
  }
  std::vector<uint8_t> raw(static_cast<size_t>(n));
  in.read_to_end(raw.data(), n, str_cat(n, " labels"));
  torch::Tensor labels = torch::empty({n}, torch::kInt64);
  int64_t* p = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) p[i] = raw[static_cast<size_t>(i)];
  return labels;
}

DatasetPair load_fashion_mnist(const std::string& dir) {
  const fs::path d = dir.empty() ? fs::path(kFashionMnistDefaultDir) : fs::path(dir);
  DatasetPair pair;
  pair.train = fashion_mnist_split(d, "train");
  pair.test = fashion_mnist_split(d, "t10k");
  return pair;
}

DatasetPair load_cifar10(const std::string& dir) {
  BS_CHECK(!dir.empty(), "dataset cifar10: --data-dir is required (the directory holding data_batch_1.bin .. "
                         "data_batch_5.bin and test_batch.bin of the CIFAR-10 binary version)");
  const fs::path d(dir);
  DatasetPair pair;
  pair.train = cifar_split(d, {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                               "data_batch_4.bin", "data_batch_5.bin"}, kCifar10);
  pair.test = cifar_split(d, {"test_batch.bin"}, kCifar10);
  return pair;
}

DatasetPair load_cifar100(const std::string& dir) {
  BS_CHECK(!dir.empty(), "dataset cifar100: --data-dir is required (the directory holding train.bin and "
                         "test.bin of the CIFAR-100 binary version)");
  const fs::path d(dir);
  return {cifar_split(d, {"train.bin"}, kCifar100), cifar_split(d, {"test.bin"}, kCifar100)};
}

DatasetPair load_dataset(const std::string& name, const std::string& dir) {
  if (name == "fashion-mnist") return load_fashion_mnist(dir.empty() ? kFashionMnistDefaultDir : dir);
  if (name == "cifar10") return load_cifar10(dir);
  if (name == "cifar100") return load_cifar100(dir);
  if (name == "imagefolder")
    fail("dataset 'imagefolder' is streamed from disk by data::ImageFolderLoader, not loaded into memory");
  fail("unknown dataset '", name, "'; known datasets: fashion-mnist, cifar10, cifar100, imagefolder");
}

}  // namespace bitswitch::data
