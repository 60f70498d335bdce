#include <algorithm>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/layers/pooling_layer.hpp"
#include "caffe/layers/unpooling_layer.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

template <typename TypeParam>
class UnpoolingLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  UnpoolingLayerTest()
      : pool_input_(new Blob<Dtype>()),
        pooled_(new Blob<Dtype>()),
        mask_(new Blob<Dtype>()),
        unpooled_(new Blob<Dtype>()) {}
  virtual void SetUp() {
    Caffe::set_random_seed(1701);
  }
  virtual ~UnpoolingLayerTest() {
    delete pool_input_;
    delete pooled_;
    delete mask_;
    delete unpooled_;
  }

  // Fills pool_input_ with Gaussian noise of the given shape and runs a 2x2,
  // stride 2 MAX Pooling over it, producing pooled_ and mask_.
  void PoolRandomInput(int num, int channels, int height, int width) {
    pool_input_->Reshape(num, channels, height, width);
    FillerParameter filler_param;
    GaussianFiller<Dtype> filler(filler_param);
    filler.Fill(pool_input_);
    LayerParameter param;
    PoolingParameter* pooling_param = param.mutable_pooling_param();
    pooling_param->set_kernel_size(2);
    pooling_param->set_stride(2);
    pooling_param->set_pool(PoolingParameter_PoolMethod_MAX);
    PoolingLayer<Dtype> pool(param);
    vector<Blob<Dtype>*> bottom(1, pool_input_);
    vector<Blob<Dtype>*> top;
    top.push_back(pooled_);
    top.push_back(mask_);
    pool.SetUp(bottom, top);
    pool.Forward(bottom, top);
  }

  vector<Blob<Dtype>*> UnpoolBottoms(bool with_size) {
    vector<Blob<Dtype>*> bottom;
    bottom.push_back(pooled_);
    bottom.push_back(mask_);
    if (with_size) {
      bottom.push_back(pool_input_);
    }
    return bottom;
  }

  Blob<Dtype>* const pool_input_;
  Blob<Dtype>* const pooled_;
  Blob<Dtype>* const mask_;
  Blob<Dtype>* const unpooled_;
};

TYPED_TEST_CASE(UnpoolingLayerTest, TestDtypesAndDevices);

TYPED_TEST(UnpoolingLayerTest, TestSetupWithoutSizeDies) {
  // Kernel and stride alone cannot tell a 7 from an 8 (both pool to 4).
  typedef typename TypeParam::Dtype Dtype;
  this->PoolRandomInput(2, 3, 8, 10);
  LayerParameter param;
  param.set_name("unpool_test");
  param.mutable_unpooling_param()->set_kernel_size(2);
  param.mutable_unpooling_param()->set_stride(2);
  UnpoolingLayer<Dtype> layer(param);
  vector<Blob<Dtype>*> top(1, this->unpooled_);
  EXPECT_DEATH(layer.SetUp(this->UnpoolBottoms(false), top),
               "'unpool_test': needs its output size");
}

TYPED_TEST(UnpoolingLayerTest, TestSetupExplicitSize) {
  typedef typename TypeParam::Dtype Dtype;
  this->PoolRandomInput(1, 2, 7, 9);
  LayerParameter param;
  param.mutable_unpooling_param()->set_unpool_h(7);
  param.mutable_unpooling_param()->set_unpool_w(9);
  UnpoolingLayer<Dtype> layer(param);
  vector<Blob<Dtype>*> top(1, this->unpooled_);
  layer.SetUp(this->UnpoolBottoms(false), top);
  EXPECT_EQ(7, this->unpooled_->height());
  EXPECT_EQ(9, this->unpooled_->width());
}

TYPED_TEST(UnpoolingLayerTest, TestSetupSizeFromBottom) {
  typedef typename TypeParam::Dtype Dtype;
  this->PoolRandomInput(1, 2, 7, 9);
  LayerParameter param;
  UnpoolingLayer<Dtype> layer(param);
  vector<Blob<Dtype>*> top(1, this->unpooled_);
  layer.SetUp(this->UnpoolBottoms(true), top);
  EXPECT_EQ(7, this->unpooled_->height());
  EXPECT_EQ(9, this->unpooled_->width());
}

// A hand-written 1x1x2x2 input and mask placed into a 1x1x3x4 plane.
TYPED_TEST(UnpoolingLayerTest, TestForwardHandComputed) {
  typedef typename TypeParam::Dtype Dtype;
  this->pooled_->Reshape(1, 1, 2, 2);
  this->mask_->Reshape(1, 1, 2, 2);
  const Dtype values[] = {1, 2, 3, 4};
  const Dtype indices[] = {5, 2, 8, 11};
  for (int i = 0; i < 4; ++i) {
    this->pooled_->mutable_cpu_data()[i] = values[i];
    this->mask_->mutable_cpu_data()[i] = indices[i];
  }
  LayerParameter param;
  param.mutable_unpooling_param()->set_unpool_h(3);
  param.mutable_unpooling_param()->set_unpool_w(4);
  UnpoolingLayer<Dtype> layer(param);
  vector<Blob<Dtype>*> bottom = this->UnpoolBottoms(false);
  vector<Blob<Dtype>*> top(1, this->unpooled_);
  layer.SetUp(bottom, top);
  layer.Forward(bottom, top);
  const Dtype expected[] = {0, 0, 2, 0,
                            0, 1, 0, 0,
                            3, 0, 0, 4};
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(expected[i], this->unpooled_->cpu_data()[i]) << "at " << i;
  }
  // Backward gathers from the same positions.
  for (int i = 0; i < 12; ++i) {
    this->unpooled_->mutable_cpu_diff()[i] = 10 + i;
  }
  layer.Backward(top, vector<bool>(2, true), bottom);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(10 + indices[i], this->pooled_->cpu_diff()[i]) << "at " << i;
  }
}

// Pooling then unpooling keeps each window's maximum at its place, computed
// here independently from the pooling input, and zeroes the rest. Odd sizes
// exercise Caffe's rounding up of the pooled size.
TYPED_TEST(UnpoolingLayerTest, TestPoolUnpoolOddSize) {
  typedef typename TypeParam::Dtype Dtype;
  const int num = 2, channels = 3, height = 7, width = 9;
  this->PoolRandomInput(num, channels, height, width);
  LayerParameter param;
  UnpoolingLayer<Dtype> layer(param);
  vector<Blob<Dtype>*> bottom = this->UnpoolBottoms(true);
  vector<Blob<Dtype>*> top(1, this->unpooled_);
  layer.SetUp(bottom, top);
  layer.Forward(bottom, top);
  const Dtype* input = this->pool_input_->cpu_data();
  const Dtype* output = this->unpooled_->cpu_data();
  for (int p = 0; p < num * channels; ++p) {
    const Dtype* in = input + p * height * width;
    const Dtype* out = output + p * height * width;
    for (int h = 0; h < height; ++h) {
      for (int w = 0; w < width; ++w) {
        // Is (h, w) the first maximum of its 2x2 window?
        const int h0 = (h / 2) * 2, w0 = (w / 2) * 2;
        int best = -1;
        for (int hh = h0; hh < std::min(h0 + 2, height); ++hh) {
          for (int ww = w0; ww < std::min(w0 + 2, width); ++ww) {
            if (best < 0 || in[hh * width + ww] > in[best]) {
              best = hh * width + ww;
            }
          }
        }
        const Dtype expected = (best == h * width + w) ? in[best] : Dtype(0);
        EXPECT_EQ(expected, out[h * width + w]);
      }
    }
  }
}

TYPED_TEST(UnpoolingLayerTest, TestGradient) {
  typedef typename TypeParam::Dtype Dtype;
  this->PoolRandomInput(2, 3, 6, 5);
  LayerParameter param;
  UnpoolingLayer<Dtype> layer(param);
  vector<Blob<Dtype>*> top(1, this->unpooled_);
  GradientChecker<Dtype> checker(1e-4, 1e-2);
  // Only the values bottom has a gradient.
  checker.CheckGradientExhaustive(&layer, this->UnpoolBottoms(true), top, 0);
}

#ifndef CPU_ONLY
// The CUDA kernels agree with the CPU code on the same blobs.
template <typename Dtype>
class UnpoolingLayerGPUAgreementTest : public GPUDeviceTest<Dtype> {};

TYPED_TEST_CASE(UnpoolingLayerGPUAgreementTest, TestDtypes);

TYPED_TEST(UnpoolingLayerGPUAgreementTest, TestGPUMatchesCPU) {
  typedef TypeParam Dtype;
  Caffe::set_random_seed(1701);
  Blob<Dtype> input(4, 5, 13, 11), pooled, mask, unpooled;
  FillerParameter filler_param;
  GaussianFiller<Dtype> filler(filler_param);
  filler.Fill(&input);
  LayerParameter pool_param;
  pool_param.mutable_pooling_param()->set_kernel_size(2);
  pool_param.mutable_pooling_param()->set_stride(2);
  PoolingLayer<Dtype> pool(pool_param);
  vector<Blob<Dtype>*> pool_bottom(1, &input);
  vector<Blob<Dtype>*> pool_top;
  pool_top.push_back(&pooled);
  pool_top.push_back(&mask);
  pool.SetUp(pool_bottom, pool_top);
  Caffe::set_mode(Caffe::CPU);
  pool.Forward(pool_bottom, pool_top);

  LayerParameter param;
  UnpoolingLayer<Dtype> layer(param);
  vector<Blob<Dtype>*> bottom;
  bottom.push_back(&pooled);
  bottom.push_back(&mask);
  bottom.push_back(&input);
  vector<Blob<Dtype>*> top(1, &unpooled);
  layer.SetUp(bottom, top);
  filler.Fill(&unpooled);
  caffe_copy(unpooled.count(), unpooled.cpu_data(),
      unpooled.mutable_cpu_diff());

  Caffe::set_mode(Caffe::CPU);
  layer.Forward(bottom, top);
  layer.Backward(top, vector<bool>(3, true), bottom);
  Blob<Dtype> cpu_top, cpu_bottom_diff;
  cpu_top.CopyFrom(unpooled, false, true);
  cpu_bottom_diff.CopyFrom(pooled, true, true);

  Caffe::set_mode(Caffe::GPU);
  caffe_gpu_set(pooled.count(), Dtype(0), pooled.mutable_gpu_diff());
  layer.Forward(bottom, top);
  layer.Backward(top, vector<bool>(3, true), bottom);
  for (int i = 0; i < unpooled.count(); ++i) {
    EXPECT_EQ(cpu_top.cpu_data()[i], unpooled.cpu_data()[i]) << "at " << i;
  }
  for (int i = 0; i < pooled.count(); ++i) {
    EXPECT_EQ(cpu_bottom_diff.cpu_diff()[i], pooled.cpu_diff()[i])
        << "at " << i;
  }
}
#endif  // CPU_ONLY

}  // namespace caffe
