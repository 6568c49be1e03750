// Tests of BatchNorm re-estimation (train/bn_calibration.h): the re-estimated statistics are the
// plain averages of the calibration batches' statistics, for the BNs of the calibrated width only.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "bitswitch/data/loader.h"
#include "bitswitch/models/model.h"
#include "bitswitch/nn/layers.h"
#include "bitswitch/train/bn_calibration.h"
#include "bitswitch/util/error.h"

using namespace bitswitch;

namespace {
data::Dataset random_dataset(int64_t n) {
  torch::manual_seed(5);
  data::Dataset ds;
  ds.name = "random";
  ds.images = torch::randint(0, 256, {n, 1, 28, 28}).to(torch::kUInt8);
  ds.labels = torch::randint(0, 10, {n});
  ds.num_classes = 10;
  ds.mean = {0.5f};
  ds.std = {0.25f};
  return ds;
}

template <class T>
std::shared_ptr<T> module(models::ModelImpl& m, const std::string& name) {
  auto p = std::dynamic_pointer_cast<T>(m.named_modules()[name]);
  EXPECT_TRUE(p) << name;
  return p;
}
}  // namespace

TEST(BnCalibration, StatisticsAreTheAverageOfTheCalibrationBatches) {
  models::ModelSpec spec;
  spec.name = "smallcnn";
  spec.bits = {8, 4};
  auto model = models::create_model(spec);
  const auto ds = random_dataset(48);
  data::LoaderOptions o;
  o.batch_size = 16;
  data::Loader loader(ds, o);
  {
    // Initialise the quantizers' scales (first forward) at both widths.
    torch::NoGradGuard ng;
    data::Batch b;
    loader.start_epoch(0);
    loader.next(b);
    for (int w : {8, 4}) {
      nn::apply_bits(*model, nn::BitConfig::uniform(w));
      model->forward(b.images);
    }
  }
  auto bn1 = module<nn::SwitchableBatchNorm2dImpl>(*model, "bn1");
  auto bn2 = module<nn::SwitchableBatchNorm2dImpl>(*model, "bn2");
  auto conv1 = module<nn::QConv2dImpl>(*model, "conv1");
  auto conv2 = module<nn::QConv2dImpl>(*model, "conv2");
  const auto bn8_mean = bn2->bn_for(8)->running_mean.clone();
  std::map<std::string, torch::Tensor> params;
  for (const auto& p : model->named_parameters()) params[p.key()] = p.value().detach().clone();

  model->eval();
  const int64_t images = train::recalibrate_bn(*model, loader, {nn::BitConfig::uniform(4)}, /*max_batches=*/2);
  EXPECT_EQ(images, 32);
  EXPECT_FALSE(model->is_training());  // the mode is restored

  // Each BN's statistics are the means of the two batches' per-channel mean and unbiased
  // variance of its input, computed here with the width-4 forward in training mode (earlier
  // BNs normalise with batch statistics). bn1 follows the FP first conv: one BN for all widths.
  EXPECT_EQ(bn1->active_key(), "fp");
  EXPECT_EQ(bn2->active_key(), "4");
  const auto bn1_mean = bn1->bn_for_key("fp")->running_mean.clone(), bn1_var = bn1->bn_for_key("fp")->running_var.clone();
  const auto bn2_mean = bn2->bn_for(4)->running_mean.clone(), bn2_var = bn2->bn_for(4)->running_var.clone();
  EXPECT_EQ(bn2->bn_for(4)->num_batches_tracked.item<int64_t>(), 2);
  EXPECT_FALSE(bn2->bn_for(4)->options.momentum() == c10::nullopt);  // the momentum is restored
  // The other width's BN and every parameter are untouched.
  EXPECT_TRUE(torch::equal(bn2->bn_for(8)->running_mean, bn8_mean));
  for (const auto& p : model->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), params.at(p.key()))) << p.key();

  torch::NoGradGuard ng;
  model->train();
  std::vector<torch::Tensor> sums(4);
  auto add = [&](int k, const torch::Tensor& y) {
    auto st = k % 2 == 0 ? y.mean({0, 2, 3}) : y.var({0, 2, 3}, /*unbiased=*/true);
    sums[k] = sums[k].defined() ? sums[k] + st : st;
  };
  data::Batch b;
  loader.start_epoch(0);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(loader.next(b));
    auto y1 = conv1->forward(b.images);
    add(0, y1);
    add(1, y1);
    auto y = torch::max_pool2d(torch::relu(bn1->forward(y1)), 2);
    auto y2 = conv2->forward(y);
    add(2, y2);
    add(3, y2);
  }
  model->eval();
  EXPECT_TRUE(torch::allclose(bn1_mean, sums[0] / 2, 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(bn1_var, sums[1] / 2, 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(bn2_mean, sums[2] / 2, 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(bn2_var, sums[3] / 2, 1e-4, 1e-5));

  // Deterministic and independent of the previous statistics; 0 batches means the whole epoch.
  train::recalibrate_bn(*model, loader, {nn::BitConfig::uniform(4)}, 2);
  EXPECT_TRUE(torch::equal(bn2->bn_for(4)->running_var, bn2_var));
  EXPECT_EQ(train::recalibrate_bn(*model, loader, {nn::BitConfig::uniform(4)}, 0), 48);
  EXPECT_THROW(train::recalibrate_bn(*model, loader, {nn::BitConfig::uniform(4)}, -1), Error);
}
