// Image folders: scan and labels, JPEG decoding (with DCT scaling), the eval transform's
// geometry on a known image, RandomResizedCrop boxes, thread-count independence of batches,
// corrupt images (skip or fatal), and a training run on a folder from pretrained weights.
// The JPEGs are generated here with TurboJPEG.
#include <torch/torch.h>
#include <turbojpeg.h>

#include <filesystem>
#include <fstream>

#include "bitswitch/data/image_folder.h"
#include "bitswitch/models/model.h"
#include "bitswitch/models/pretrained.h"
#include "bitswitch/train/checkpoint.h"
#include "bitswitch/train/trainer.h"
#include "bitswitch/util/error.h"
#include "jpeg_folder.h"
#include "test_util.h"

namespace bs = bitswitch;
using bs::data::ImageFolderLoader;
using bs::data::ImageFolderOptions;
using bs::data::RgbImage;

namespace {

using bs::testing::gradient;
using bs::testing::write_bytes;

// root/{ant,bee,cat}/i.JPEG, 3 + 2 + 3 images of 40x30 .. 60x45 pixels, plus a text file.
std::string make_folder(const std::string& name) {
  const auto root = bs::testing::temp_dir(name);
  const std::vector<std::pair<std::string, int>> classes = {{"cat", 3}, {"ant", 3}, {"bee", 2}};
  int k = 0;
  for (const auto& [cls, count] : classes) {
    std::filesystem::create_directories(root + "/" + cls);
    for (int i = 0; i < count; ++i, ++k)
      write_bytes(root + "/" + cls + "/img" + std::to_string(i) + (i % 2 ? ".jpg" : ".JPEG"),
                  bs::data::encode_jpeg(gradient(40 + 4 * k, 30 + 3 * k, static_cast<uint8_t>(20 * k)), 90));
  }
  write_bytes(root + "/ant/notes.txt", {'h', 'i'});
  return root;
}

// Pixel value in [0, 255] of channel c of a normalised output.
float pixel_value(const torch::Tensor& img, int c, int y, int x) {
  return (img[c][y][x].item<float>() * ImageFolderLoader::kStd[c] + ImageFolderLoader::kMean[c]) * 255.0f;
}

std::vector<bs::data::Batch> all_batches(ImageFolderLoader& loader, int64_t epoch) {
  std::vector<bs::data::Batch> out;
  loader.start_epoch(epoch);
  bs::data::Batch b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

}  // namespace

TEST(ImageFolder, ScanSortsClassesAndLabels) {
  const auto root = make_folder("imgf_scan");
  const auto f = bs::data::scan_image_folder(root);
  EXPECT_EQ(f.classes, (std::vector<std::string>{"ant", "bee", "cat"}));
  ASSERT_EQ(f.size(), 8);  // notes.txt is not an image
  EXPECT_EQ(f.labels, (std::vector<int64_t>{0, 0, 0, 1, 1, 2, 2, 2}));
  EXPECT_EQ(std::filesystem::path(f.paths[0]).filename(), "img0.JPEG");
  EXPECT_ERROR_CONTAINS(bs::data::scan_image_folder(root + "/nope"), "is not a directory");
  const auto empty = bs::testing::temp_dir("imgf_empty");
  EXPECT_ERROR_CONTAINS(bs::data::scan_image_folder(empty), "has no class subdirectories");
  std::filesystem::create_directories(empty + "/c0");
  EXPECT_ERROR_CONTAINS(bs::data::scan_image_folder(empty), "has no .jpg/.jpeg files in its 1 class directories");
}

TEST(ImageFolder, DecodeWithDctScaling) {
  const auto bytes = bs::data::encode_jpeg(gradient(400, 200, 50), 95);
  EXPECT_EQ(bs::data::jpeg_size(bytes, "g.jpg"), (std::pair<int, int>{400, 200}));
  const auto full = bs::data::decode_jpeg(bytes, "g.jpg");
  EXPECT_EQ(full.width, 400);
  EXPECT_EQ(full.height, 200);
  EXPECT_NEAR(full.pixels[(100 * 400 + 300) * 3 + 0], 300 * 255.0 / 399, 3);
  // At least 90 x 60 needed: of TurboJPEG's factors k/8, 3/8 (150x75) is the smallest that fits
  // (2/8 gives 100x50).
  const auto scaled = bs::data::decode_jpeg(bytes, "g.jpg", 90, 60);
  EXPECT_EQ(scaled.width, 150);
  EXPECT_EQ(scaled.height, 75);
  EXPECT_NEAR(scaled.pixels[(37 * 150 + 75) * 3 + 1], 127.5, 4);
  std::vector<uint8_t> garbage(100, 7);
  EXPECT_ERROR_CONTAINS(bs::data::decode_jpeg(garbage, "bad.jpg"), "bad.jpg: not a readable JPEG");
  std::vector<uint8_t> truncated(bytes.begin(), bytes.begin() + static_cast<long>(bytes.size() / 2));
  EXPECT_ERROR_CONTAINS(bs::data::decode_jpeg(truncated, "half.jpg"), "half.jpg: corrupt JPEG");
}

TEST(ImageFolder, GrayscaleAndCmykJpegsBecomeRgb) {
  // CMYK as libjpeg stores Adobe files (inverted): R = C * K / 255, likewise G and B.
  const int w = 16, h = 8;
  std::vector<uint8_t> cmyk(static_cast<size_t>(w) * h * 4);
  for (size_t i = 0; i < cmyk.size(); i += 4) cmyk[i] = 200, cmyk[i + 1] = 100, cmyk[i + 2] = 50, cmyk[i + 3] = 128;
  tjhandle tj = tjInitCompress();
  unsigned char* out = nullptr;
  unsigned long size = 0;
  ASSERT_EQ(tjCompress2(tj, cmyk.data(), w, 0, h, TJPF_CMYK, &out, &size, TJSAMP_444, 100, 0), 0) << tjGetErrorStr2(tj);
  const std::vector<uint8_t> bytes(out, out + size);
  tjFree(out);
  out = nullptr;  // tjCompress2 would otherwise take it for a buffer to reuse
  const auto rgb = bs::data::decode_jpeg(bytes, "cmyk.jpg");
  ASSERT_EQ(rgb.pixels.size(), static_cast<size_t>(w) * h * 3);
  EXPECT_NEAR(rgb.pixels[0], 200 * 128 / 255.0, 2);
  EXPECT_NEAR(rgb.pixels[1], 100 * 128 / 255.0, 2);
  EXPECT_NEAR(rgb.pixels[2], 50 * 128 / 255.0, 2);
  // Grayscale: R = G = B.
  std::vector<uint8_t> gray(static_cast<size_t>(w) * h, 77);
  ASSERT_EQ(tjCompress2(tj, gray.data(), w, 0, h, TJPF_GRAY, &out, &size, TJSAMP_GRAY, 100, 0), 0);
  const std::vector<uint8_t> gbytes(out, out + size);
  tjFree(out);
  tjDestroy(tj);
  const auto g = bs::data::decode_jpeg(gbytes, "gray.jpg");
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(g.pixels[static_cast<size_t>(c)], 77, 1);
}

TEST(ImageFolder, EvalTransformIsResizeThenCenterCrop) {
  // 512x256 with resize 256 / crop 224: no resize, the crop starts at x 144, y 16. The same
  // picture at 1024x512 is resized by 1/2 (decoded at 1/2 by DCT scaling): same crop.
  for (int scale : {1, 2}) {
    const auto root = bs::testing::temp_dir("imgf_center" + std::to_string(scale));
    std::filesystem::create_directories(root + "/only");
    write_bytes(root + "/only/a.jpg", bs::data::encode_jpeg(gradient(512 * scale, 256 * scale, 200), 98));
    ImageFolderOptions o;
    o.batch_size = 1;
    ImageFolderLoader loader(bs::data::scan_image_folder(root), o);
    auto batches = all_batches(loader, 0);
    ASSERT_EQ(batches.size(), 1u);
    const auto img = batches[0].images[0];
    ASSERT_EQ(img.sizes(), (std::vector<int64_t>{3, 224, 224}));
    for (int j : {0, 50, 111, 223}) {
      // Output pixel j samples source x = 144 + j (in 512-wide units), y = 16 + j.
      const double want_r = (144 + j) * scale * 255.0 / (512 * scale - 1) + (scale == 2 ? 0.5 * 255.0 / 1023 : 0);
      const double want_g = (16 + j) * scale * 255.0 / (256 * scale - 1) + (scale == 2 ? 0.5 * 255.0 / 511 : 0);
      EXPECT_NEAR(pixel_value(img, 0, 100, j), want_r, 3.0) << "scale " << scale << " column " << j;
      EXPECT_NEAR(pixel_value(img, 1, j, 100), want_g, 3.0) << "scale " << scale << " row " << j;
      EXPECT_NEAR(pixel_value(img, 2, j, j), 200, 3.0);
    }
  }
}

TEST(ImageFolder, RandomResizedCropBoxesFollowTorchvision) {
  int flips = 0;
  for (int i = 0; i < 2000; ++i) {
    bs::data::SampleRng rng(7, 0, 1, i);
    const auto box = bs::data::random_resized_crop_box(500, 375, rng, true);
    ASSERT_GE(box.x0, 0);
    ASSERT_GE(box.y0, 0);
    ASSERT_LE(box.x0 + box.w, 500);
    ASSERT_LE(box.y0 + box.h, 375);
    const double frac = box.w * box.h / (500.0 * 375.0);
    EXPECT_GE(frac, 0.08 * 0.97);
    EXPECT_LE(frac, 1.0);
    const double ratio = box.w / box.h;
    EXPECT_GE(ratio, 0.75 * 0.95);
    EXPECT_LE(ratio, 4.0 / 3.0 * 1.05);
    flips += box.flip;
  }
  EXPECT_NEAR(flips, 1000, 120);
  // A very wide image never fits most draws: the fallback is the central 4:3 crop.
  bs::data::SampleRng rng(1, 0, 1, 0);
  const auto wide = bs::data::random_resized_crop_box(1000, 10, rng, false);
  EXPECT_GT(wide.w, 0);
  EXPECT_LE(wide.x0 + wide.w, 1000);
  EXPECT_FALSE(wide.flip);
}

TEST(ImageFolder, TrainBatchesDoNotDependOnThreads) {
  const auto root = make_folder("imgf_threads");
  auto run = [&](int threads, int prefetch, int64_t epoch) {
    ImageFolderOptions o;
    o.batch_size = 3;
    o.train = true;
    o.crop = 24;
    o.resize = 28;
    o.threads = threads;
    o.prefetch = prefetch;
    o.seed = 11;
    ImageFolderLoader loader(bs::data::scan_image_folder(root), o);
    EXPECT_EQ(loader.num_batches(), 2);  // 8 images, drop_last
    return all_batches(loader, epoch);
  };
  const auto a = run(1, 1, 0), b = run(3, 4, 0), c = run(2, 2, 1);
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  bool differs = false;
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_EQ(a[k].images.sizes(), (std::vector<int64_t>{3, 3, 24, 24}));
    EXPECT_TRUE(torch::equal(a[k].images, b[k].images)) << k;
    EXPECT_TRUE(torch::equal(a[k].labels, b[k].labels)) << k;
    EXPECT_TRUE(torch::equal(a[k].indices, b[k].indices)) << k;
    differs |= !torch::equal(a[k].images, c[k].images);
    // Labels follow the indices: images 0-2 ant, 3-4 bee, 5-7 cat.
    for (int64_t i = 0; i < 3; ++i) {
      const int64_t idx = a[k].indices[i].item<int64_t>();
      EXPECT_EQ(a[k].labels[i].item<int64_t>(), idx < 3 ? 0 : idx < 5 ? 1 : 2);
    }
  }
  EXPECT_TRUE(differs) << "another epoch must draw other crops";
}

// Data-parallel sharding: each shard decodes only its part of every global batch, and the parts
// concatenate to the one-process batch (same images, crops, flips, and the same replacement of a
// corrupt image), in training and in evaluation, where a shard's part of the last batch may be
// empty.
TEST(ImageFolder, ShardsConcatenateToTheGlobalBatch) {
  const auto root = make_folder("imgf_shards");
  const auto good = bs::data::encode_jpeg(gradient(64, 48, 1), 90);
  write_bytes(root + "/bee/truncated.jpg", std::vector<uint8_t>(good.begin(), good.begin() + static_cast<long>(good.size() / 2)));
  const auto folder = bs::data::scan_image_folder(root);
  ASSERT_EQ(folder.size(), 9);
  for (bool train : {true, false}) {
    for (int world : {2, 3}) {
      SCOPED_TRACE(std::string(train ? "train" : "eval") + ", " + std::to_string(world) + " shards");
      ImageFolderOptions o;
      o.batch_size = 4;
      o.crop = 16;
      o.resize = 18;
      o.threads = 2;
      o.train = train;
      o.seed = 3;
      ImageFolderLoader whole(folder, o);
      std::vector<std::unique_ptr<ImageFolderLoader>> shards;
      for (int r = 0; r < world; ++r) {
        auto so = o;
        so.shard_rank = r;
        so.shard_count = world;
        so.threads = 1 + r % 2;
        shards.push_back(std::make_unique<ImageFolderLoader>(folder, so));
        EXPECT_EQ(shards.back()->num_batches(), whole.num_batches());
      }
      for (int64_t epoch : {0, 1}) {
        const auto ref = all_batches(whole, epoch);
        EXPECT_EQ(ref.size(), train ? 2u : 3u);
        std::vector<std::vector<bs::data::Batch>> parts;
        for (auto& s : shards) parts.push_back(all_batches(*s, epoch));
        std::vector<size_t> at(static_cast<size_t>(world), 0);
        for (size_t k = 0; k < ref.size(); ++k) {
          const auto global = ref[k].labels.size(0);
          std::vector<torch::Tensor> imgs, labels, idx;
          for (int r = 0; r < world; ++r) {
            const auto part = bs::data::shard_range(global, r, world);
            if (part.end == part.begin) continue;  // nothing of this batch on this shard
            ASSERT_LT(at[r], parts[r].size());
            const auto& b = parts[r][at[r]++];
            EXPECT_EQ(b.labels.size(0), part.end - part.begin);
            imgs.push_back(b.images);
            labels.push_back(b.labels);
            idx.push_back(b.indices);
          }
          EXPECT_TRUE(torch::equal(torch::cat(imgs), ref[k].images)) << "batch " << k;
          EXPECT_TRUE(torch::equal(torch::cat(labels), ref[k].labels)) << "batch " << k;
          EXPECT_TRUE(torch::equal(torch::cat(idx), ref[k].indices)) << "batch " << k;
        }
        for (int r = 0; r < world; ++r) EXPECT_EQ(at[r], parts[r].size()) << "shard " << r << " has extra batches";
      }
    }
  }
  ImageFolderOptions bad;
  bad.shard_rank = 2;
  bad.shard_count = 2;
  EXPECT_ERROR_CONTAINS((ImageFolderLoader(folder, bad)), "shard rank 2 is not in [0, 2)");
}

TEST(ImageFolder, CorruptImagesAreSkippedOrFatal) {
  const auto root = make_folder("imgf_corrupt");
  const auto good = bs::data::encode_jpeg(gradient(64, 48, 1), 90);
  write_bytes(root + "/bee/truncated.jpg", std::vector<uint8_t>(good.begin(), good.begin() + static_cast<long>(good.size() * 2 / 3)));
  write_bytes(root + "/cat/zz_not_a_jpeg.jpeg", std::vector<uint8_t>(500, 0x42));
  const auto folder = bs::data::scan_image_folder(root);
  ASSERT_EQ(folder.size(), 10);
  ImageFolderOptions o;
  o.batch_size = 4;
  o.crop = 16;
  o.resize = 20;
  o.skip_corrupt = false;
  {
    ImageFolderLoader fatal(folder, o);
    fatal.start_epoch(0);
    bs::data::Batch b;
    EXPECT_ERROR_CONTAINS(while (fatal.next(b)) {}, "truncated.jpg: corrupt JPEG");
  }
  o.skip_corrupt = true;
  ImageFolderLoader skip(folder, o);
  testing::internal::CaptureStderr();
  auto batches = all_batches(skip, 0);
  all_batches(skip, 1);  // warned once per file, not per epoch
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_EQ(batches.size(), 3u);  // eval mode keeps the last partial batch: 4 + 4 + 2
  EXPECT_EQ(batches[2].labels.size(0), 2);
  const auto skipped = skip.skipped();
  ASSERT_EQ(skipped.size(), 2u);
  EXPECT_NE(err.find("truncated.jpg: corrupt JPEG"), std::string::npos) << err;
  EXPECT_NE(err.find("zz_not_a_jpeg.jpeg: not a readable JPEG"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 2) << err;
  for (const auto& b : batches)
    for (int64_t i = 0; i < b.indices.size(0); ++i) {
      const auto& path = folder.paths[static_cast<size_t>(b.indices[i].item<int64_t>())];
      EXPECT_EQ(std::count(skipped.begin(), skipped.end(), path), 0) << path;
    }
}

TEST(ImageFolder, TrainingFromPretrainedWeightsOnAnImageFolder) {
  // root/{train,val}/{a,b}: class a bluish, class b reddish gradients.
  const auto root = bs::testing::temp_dir("imgf_training");
  for (const std::string split : {"train", "val"})
    for (int c = 0; c < 2; ++c) {
      const auto dir = root + "/" + split + "/" + (c ? "b" : "a");
      std::filesystem::create_directories(dir);
      for (int i = 0; i < (split == "train" ? 4 : 3); ++i)
        write_bytes(dir + "/" + std::to_string(i) + ".jpg",
                    bs::data::encode_jpeg(gradient(48 + 8 * i, 40, static_cast<uint8_t>(c ? 20 : 230)), 90));
    }
  bs::train::TrainConfig c;
  c.model = "resnet18";
  c.dataset = "imagefolder";
  c.data_dir = root;
  c.image_size = 32;
  c.workers = 2;
  c.batch = 4;
  c.bits = {4, 2};
  c.fp_epochs = 1;
  c.epochs = 0;  // run 1: the FP phase only
  c.threads = 1;  // torch's OpenMP threads spin badly on a busy 2-core machine
  c.log_interval = 1000;
  c.out = root + "/run1";
  // Weights to start from, written by another model of the same architecture.
  bs::models::ModelSpec spec;
  spec.name = "resnet18";
  spec.in_channels = 3;
  spec.num_classes = 2;
  spec.bits = c.bits;
  torch::manual_seed(42);
  auto start = bs::models::create_model(spec);
  bs::models::save_fp_safetensors(*start, root + "/start.safetensors");
  c.pretrained = root + "/start.safetensors";
  auto r1 = bs::train::run_training(c);
  ASSERT_TRUE(r1.finished);
  ASSERT_TRUE(r1.accuracy.contains("fp32"));
  // The FP phase wrote its weights with torchvision names; a second run starts from them with
  // no FP phase, and its FP32 baseline is exactly the first run's FP32 accuracy.
  auto reloaded = bs::models::create_model(spec);
  bs::models::load_fp_safetensors(*reloaded, c.out + "/fp32.safetensors");
  bs::train::Checkpoint fp32_pt(c.out + "/fp32.pt");
  auto from_pt = bs::models::create_model(fp32_pt.spec());
  fp32_pt.load_model(*from_pt, /*strict=*/true);
  const auto ta = bs::models::fp_tensors(*reloaded), tb = bs::models::fp_tensors(*from_pt);
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t i = 0; i < ta.size(); ++i) EXPECT_TRUE(torch::equal(ta[i].tensor, tb[i].tensor)) << ta[i].bitswitch_name;
  c.pretrained = c.out + "/fp32.safetensors";
  c.fp_epochs = 0;
  c.epochs = 1;
  c.out = root + "/run2";
  auto r2 = bs::train::run_training(c);
  ASSERT_TRUE(r2.finished);
  EXPECT_TRUE(r2.accuracy.contains("w4") && r2.accuracy.contains("w2"));
  EXPECT_DOUBLE_EQ(r2.accuracy["fp32"].get<double>(), r1.accuracy["fp32"].get<double>());
  EXPECT_FALSE(std::filesystem::exists(c.out + "/fp32.safetensors"));
}
