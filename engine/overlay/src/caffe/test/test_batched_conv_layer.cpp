// Patch 0018: Convolution and Deconvolution run their CPU forward and
// backward passes over groups of images with one GEMM per group. Each case
// here runs a layer three ways on the same input, weights and top gradient:
// image by image (the unpatched path, CAFFE_CPU_CONV_BATCH_MIB=0), all
// images in one group, and groups of two that do not divide the batch of
// five; the outputs, the input gradients and the weight and bias gradients
// must agree to float rounding. The layers' own gtests (test_convolution_layer,
// test_deconvolution_layer) check the batched path against Caffe's naive
// reference convolution.
#include <cmath>
#include <cstdlib>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/layers/conv_layer.hpp"
#include "caffe/layers/deconv_layer.hpp"
#include "caffe/util/math_functions.hpp"

#include "caffe/test/test_caffe_main.hpp"

namespace caffe {

// Exposes the group size the layers choose.
template <typename Dtype>
class GroupedConvolution : public ConvolutionLayer<Dtype> {
 public:
  explicit GroupedConvolution(const LayerParameter& param)
      : ConvolutionLayer<Dtype>(param) {}
  using ConvolutionLayer<Dtype>::images_per_gemm;
};

template <typename Dtype>
class GroupedDeconvolution : public DeconvolutionLayer<Dtype> {
 public:
  explicit GroupedDeconvolution(const LayerParameter& param)
      : DeconvolutionLayer<Dtype>(param) {}
  using DeconvolutionLayer<Dtype>::images_per_gemm;
};

struct Geometry {
  int kernel, stride, pad, dilation, group, channels, outputs;
};

template <typename Dtype>
class BatchedConvolutionTest : public CPUDeviceTest<Dtype> {
 protected:
  BatchedConvolutionTest() : bottom_(new Blob<Dtype>(5, 4, 9, 11)),
      top_(new Blob<Dtype>()) {}
  virtual void SetUp() {
    bottom_vec_.push_back(bottom_);
    top_vec_.push_back(top_);
  }
  virtual ~BatchedConvolutionTest() {
    unsetenv("CAFFE_CPU_CONV_BATCH_MIB");
    unsetenv("CAFFE_CPU_CONV_BATCH_IMAGES");
    unsetenv("CAFFE_CPU_CONV_BATCH_COLUMNS");
    unsetenv("CAFFE_CPU_CONV_WINOGRAD");
    delete bottom_;
    delete top_;
  }

  LayerParameter Param(const Geometry& g) {
    LayerParameter param;
    ConvolutionParameter* conv = param.mutable_convolution_param();
    conv->add_kernel_size(g.kernel);
    conv->add_stride(g.stride);
    conv->add_pad(g.pad);
    conv->add_dilation(g.dilation);
    conv->set_group(g.group);
    conv->set_num_output(g.outputs);
    conv->mutable_weight_filler()->set_type("gaussian");
    conv->mutable_bias_filler()->set_type("gaussian");
    return param;
  }

  // The layer's output, then the gradients of its input, weights and bias,
  // and its group size, under the batch settings given; the same seed gives
  // the same weights, input and top gradient every time.
  std::vector<Dtype> Run(bool deconv, const Geometry& g, const char* mib,
                         const char* images, int* per_gemm) {
    setenv("CAFFE_CPU_CONV_BATCH_MIB", mib, 1);
    setenv("CAFFE_CPU_CONV_BATCH_IMAGES", images, 1);
    // The im2col path, also for the 3x3 stride-1 cases (patch 0019 would
    // take those to Winograd's, tested in test_winograd_conv_layer).
    setenv("CAFFE_CPU_CONV_WINOGRAD", "0", 1);
    Caffe::set_random_seed(1701);
    bottom_->Reshape(5, g.channels, 9, 11);
    FillerParameter filler_param;
    GaussianFiller<Dtype> filler(filler_param);
    filler.Fill(bottom_);
    LayerParameter param = Param(g);
    if (deconv) {
      GroupedDeconvolution<Dtype> layer(param);
      return Pass(&layer, &filler, per_gemm);
    }
    GroupedConvolution<Dtype> layer(param);
    return Pass(&layer, &filler, per_gemm);
  }

  template <typename LayerType>
  std::vector<Dtype> Pass(LayerType* layer, GaussianFiller<Dtype>* filler,
                          int* per_gemm) {
    layer->SetUp(bottom_vec_, top_vec_);
    layer->Forward(bottom_vec_, top_vec_);
    *per_gemm = layer->images_per_gemm();
    std::vector<Dtype> out(top_->cpu_data(), top_->cpu_data() + top_->count());
    Blob<Dtype> top_diff;
    top_diff.ReshapeLike(*top_);
    filler->Fill(&top_diff);
    caffe_copy(top_->count(), top_diff.cpu_data(), top_->mutable_cpu_diff());
    for (int b = 0; b < layer->blobs().size(); ++b) {
      caffe_set(layer->blobs()[b]->count(), Dtype(0),
                layer->blobs()[b]->mutable_cpu_diff());
    }
    layer->Backward(top_vec_, vector<bool>(1, true), bottom_vec_);
    out.insert(out.end(), bottom_->cpu_diff(),
               bottom_->cpu_diff() + bottom_->count());
    for (int b = 0; b < layer->blobs().size(); ++b) {
      const Blob<Dtype>& blob = *layer->blobs()[b];
      out.insert(out.end(), blob.cpu_diff(), blob.cpu_diff() + blob.count());
    }
    return out;
  }

  void CheckAllWays(bool deconv, const Geometry& g) {
    int per_gemm = 0;
    const std::vector<Dtype> single = Run(deconv, g, "0", "0", &per_gemm);
    EXPECT_EQ(1, per_gemm);
    const std::vector<Dtype> whole = Run(deconv, g, "64", "0", &per_gemm);
    EXPECT_EQ(5, per_gemm);
    const std::vector<Dtype> pairs = Run(deconv, g, "64", "2", &per_gemm);
    EXPECT_EQ(2, per_gemm);  // groups of 2, 2 and 1
    ASSERT_EQ(single.size(), whole.size());
    ASSERT_EQ(single.size(), pairs.size());
    const Dtype tolerance = sizeof(Dtype) == 4 ? 1e-4 : 1e-10;
    for (size_t i = 0; i < single.size(); ++i) {
      const Dtype scale = std::max(Dtype(1), std::fabs(single[i]));
      EXPECT_NEAR(single[i], whole[i], tolerance * scale) << "at " << i;
      EXPECT_NEAR(single[i], pairs[i], tolerance * scale) << "at " << i;
    }
  }

  Blob<Dtype>* const bottom_;
  Blob<Dtype>* const top_;
  vector<Blob<Dtype>*> bottom_vec_;
  vector<Blob<Dtype>*> top_vec_;
};

TYPED_TEST_CASE(BatchedConvolutionTest, TestDtypes);

// kernel, stride, pad, dilation, group, channels, outputs
static const Geometry kPlain = {3, 1, 1, 1, 1, 4, 6};
static const Geometry kStridePad = {3, 2, 1, 1, 1, 4, 6};
static const Geometry kDilated = {3, 1, 2, 2, 1, 4, 6};
static const Geometry kGrouped = {3, 1, 1, 1, 2, 4, 6};
static const Geometry kOneByOne = {1, 1, 0, 1, 1, 4, 3};
static const Geometry kEverything = {3, 2, 2, 2, 2, 4, 6};

TYPED_TEST(BatchedConvolutionTest, ConvolutionPlain) {
  this->CheckAllWays(false, kPlain);
}
TYPED_TEST(BatchedConvolutionTest, ConvolutionStridePad) {
  this->CheckAllWays(false, kStridePad);
}
TYPED_TEST(BatchedConvolutionTest, ConvolutionDilated) {
  this->CheckAllWays(false, kDilated);
}
TYPED_TEST(BatchedConvolutionTest, ConvolutionGrouped) {
  this->CheckAllWays(false, kGrouped);
}
TYPED_TEST(BatchedConvolutionTest, ConvolutionOneByOne) {
  this->CheckAllWays(false, kOneByOne);
}
TYPED_TEST(BatchedConvolutionTest, ConvolutionEverything) {
  this->CheckAllWays(false, kEverything);
}
TYPED_TEST(BatchedConvolutionTest, DeconvolutionPlain) {
  this->CheckAllWays(true, kPlain);
}
TYPED_TEST(BatchedConvolutionTest, DeconvolutionStridePad) {
  this->CheckAllWays(true, kStridePad);
}
TYPED_TEST(BatchedConvolutionTest, DeconvolutionDilated) {
  this->CheckAllWays(true, kDilated);
}
TYPED_TEST(BatchedConvolutionTest, DeconvolutionGrouped) {
  this->CheckAllWays(true, kGrouped);
}
TYPED_TEST(BatchedConvolutionTest, DeconvolutionEverything) {
  this->CheckAllWays(true, kEverything);
}

// The group holds enough images for CAFFE_CPU_CONV_BATCH_COLUMNS output
// positions, and no more than the budget's bytes allow: column rows
// (channels x kernel area) plus output channels, per output position.
TYPED_TEST(BatchedConvolutionTest, GroupSizeFollowsTheBudget) {
  typedef TypeParam Dtype;
  LayerParameter param = this->Param(kPlain);
  this->bottom_->Reshape(64, 32, 64, 64);
  param.mutable_convolution_param()->set_num_output(32);
  GroupedConvolution<Dtype> layer(param);
  layer.SetUp(this->bottom_vec_, this->top_vec_);
  unsetenv("CAFFE_CPU_CONV_BATCH_MIB");
  unsetenv("CAFFE_CPU_CONV_BATCH_IMAGES");
  unsetenv("CAFFE_CPU_CONV_BATCH_COLUMNS");
  EXPECT_EQ(1, layer.images_per_gemm());  // 64 x 64 = 4096 positions already
  setenv("CAFFE_CPU_CONV_BATCH_COLUMNS", "10000", 1);
  EXPECT_EQ(3, layer.images_per_gemm());  // 3 x 4096 >= 10000
  setenv("CAFFE_CPU_CONV_BATCH_COLUMNS", "100000000", 1);
  // 64 x 64 positions x (32 x 9 + 32) values per image.
  const size_t per_image = sizeof(Dtype) * 64 * 64 * (32 * 9 + 32);
  setenv("CAFFE_CPU_CONV_BATCH_MIB", "16", 1);
  EXPECT_EQ(static_cast<int>((size_t(16) << 20) / per_image),
            layer.images_per_gemm());
  setenv("CAFFE_CPU_CONV_BATCH_MIB", "1", 1);
  EXPECT_EQ(1, layer.images_per_gemm());  // one image alone exceeds 1 MiB
  setenv("CAFFE_CPU_CONV_BATCH_MIB", "100000", 1);
  EXPECT_EQ(64, layer.images_per_gemm());  // never more than the batch
}

}  // namespace caffe
