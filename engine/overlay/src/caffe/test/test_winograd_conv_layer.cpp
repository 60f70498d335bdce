// Patch 0019: 2-d 3x3 stride-1 Convolution and Deconvolution layers run
// their CPU forward pass by Winograd's F(2x2, 3x3). Each case runs a layer
// and compares its output with a direct convolution computed here in double
// (Deconvolution as Caffe defines it: every input pixel scattered through
// the filter), on odd and even sizes, pads 0 to 3, grouped layers, no bias,
// and blocks of tiles that cut across images. A deconvolution reference
// that forgets the filters' transposition shows the comparison can fail.
// The input gradients (a Convolution's is a Deconvolution, and the other way
// round) and the weight and bias gradients are compared with those of the
// im2col path, which Caffe's gradient checks cover.
#include <algorithm>
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

struct WinogradCase {
  int num, channels, height, width, outputs, pad, group;
  bool bias;
  int stride;
};

template <typename Dtype>
class WinogradConvolutionTest : public CPUDeviceTest<Dtype> {
 protected:
  WinogradConvolutionTest() : bottom_(new Blob<Dtype>()),
      top_(new Blob<Dtype>()) {}
  virtual void SetUp() {
    bottom_vec_.push_back(bottom_);
    top_vec_.push_back(top_);
  }
  virtual ~WinogradConvolutionTest() {
    unsetenv("CAFFE_CPU_CONV_WINOGRAD");
    unsetenv("CAFFE_CPU_CONV_BATCH_MIB");
    delete bottom_;
    delete top_;
  }

  // Runs the layer on a fixed random input; keeps its weights and bias.
  std::vector<Dtype> Run(bool deconv, const WinogradCase& c,
                         const char* winograd) {
    setenv("CAFFE_CPU_CONV_WINOGRAD", winograd, 1);
    Caffe::set_random_seed(1701);
    bottom_->Reshape(c.num, c.channels, c.height, c.width);
    FillerParameter filler_param;
    GaussianFiller<Dtype> filler(filler_param);
    filler.Fill(bottom_);
    LayerParameter param;
    ConvolutionParameter* conv = param.mutable_convolution_param();
    conv->add_kernel_size(3);
    conv->add_stride(c.stride);
    conv->add_pad(c.pad);
    conv->set_group(c.group);
    conv->set_num_output(c.outputs);
    conv->set_bias_term(c.bias);
    conv->mutable_weight_filler()->set_type("gaussian");
    conv->mutable_bias_filler()->set_type("gaussian");
    shared_ptr<Layer<Dtype> > layer;
    if (deconv) {
      layer.reset(new DeconvolutionLayer<Dtype>(param));
    } else {
      layer.reset(new ConvolutionLayer<Dtype>(param));
    }
    layer->SetUp(bottom_vec_, top_vec_);
    layer->Forward(bottom_vec_, top_vec_);
    Blob<Dtype> top_diff;
    top_diff.ReshapeLike(*top_);
    filler.Fill(&top_diff);
    caffe_copy(top_->count(), top_diff.cpu_data(), top_->mutable_cpu_diff());
    layer->Backward(top_vec_, vector<bool>(1, true), bottom_vec_);
    gradients_.assign(1, std::vector<Dtype>(bottom_->cpu_diff(),
        bottom_->cpu_diff() + bottom_->count()));
    for (int b = 0; b < layer->blobs().size(); ++b) {
      const Blob<Dtype>& blob = *layer->blobs()[b];
      gradients_.push_back(std::vector<Dtype>(blob.cpu_diff(),
          blob.cpu_diff() + blob.count()));
    }
    const Blob<Dtype>& w = *layer->blobs()[0];
    weights_.assign(w.cpu_data(), w.cpu_data() + w.count());
    bias_.assign(c.outputs, 0.);
    if (c.bias) {
      bias_.assign(layer->blobs()[1]->cpu_data(),
                   layer->blobs()[1]->cpu_data() + c.outputs);
    }
    return std::vector<Dtype>(top_->cpu_data(),
                              top_->cpu_data() + top_->count());
  }

  // out(n, k, y, x) = bias(k) + sum over the group's c, p, q of
  // w(k, c, p, q) in(n, c, y - pad + p, x - pad + q).
  std::vector<double> Convolution(const WinogradCase& c) {
    const int oh = c.height + 2 * c.pad - 2, ow = c.width + 2 * c.pad - 2;
    const int in_g = c.channels / c.group, out_g = c.outputs / c.group;
    std::vector<double> out(c.num * c.outputs * oh * ow);
    for (int n = 0; n < c.num; ++n) {
      for (int k = 0; k < c.outputs; ++k) {
        for (int y = 0; y < oh; ++y) {
          for (int x = 0; x < ow; ++x) {
            double sum = bias_[k];
            for (int ci = 0; ci < in_g; ++ci) {
              const int ch = (k / out_g) * in_g + ci;
              for (int p = 0; p < 3; ++p) {
                for (int q = 0; q < 3; ++q) {
                  const int iy = y - c.pad + p, ix = x - c.pad + q;
                  if (iy < 0 || iy >= c.height || ix < 0 || ix >= c.width) {
                    continue;
                  }
                  sum += weights_[((k * in_g + ci) * 3 + p) * 3 + q] *
                      Input(n, ch, iy, ix);
                }
              }
            }
            out[((n * c.outputs + k) * oh + y) * ow + x] = sum;
          }
        }
      }
    }
    return out;
  }

  // Input pixel (n, c, iy, ix) adds w(c, k, p, q) times itself to output
  // (n, k, iy - pad + p, ix - pad + q) for the group's k. `transposed`
  // false reads the weights as a convolution's (k, c) instead: wrong.
  std::vector<double> Deconvolution(const WinogradCase& c, bool transposed) {
    const int oh = c.height - 2 * c.pad + 2, ow = c.width - 2 * c.pad + 2;
    const int in_g = c.channels / c.group, out_g = c.outputs / c.group;
    std::vector<double> out(c.num * c.outputs * oh * ow);
    for (int n = 0; n < c.num; ++n) {
      for (int k = 0; k < c.outputs; ++k) {
        for (int i = 0; i < oh * ow; ++i) {
          out[(n * c.outputs + k) * oh * ow + i] = bias_[k];
        }
      }
      for (int ch = 0; ch < c.channels; ++ch) {
        for (int iy = 0; iy < c.height; ++iy) {
          for (int ix = 0; ix < c.width; ++ix) {
            const double v = Input(n, ch, iy, ix);
            for (int kk = 0; kk < out_g; ++kk) {
              const int k = (ch / in_g) * out_g + kk;
              for (int p = 0; p < 3; ++p) {
                for (int q = 0; q < 3; ++q) {
                  const int oy = iy - c.pad + p, ox = ix - c.pad + q;
                  if (oy < 0 || oy >= oh || ox < 0 || ox >= ow) {
                    continue;
                  }
                  // Transposed: blob (channels, outputs / group, 3, 3).
                  const int row = transposed ? ch * out_g + kk
                                             : (kk * in_g + ch % in_g);
                  out[((n * c.outputs + k) * oh + oy) * ow + ox] +=
                      weights_[(row * 3 + p) * 3 + q] * v;
                }
              }
            }
          }
        }
      }
    }
    return out;
  }

  double Input(int n, int c, int y, int x) const {
    return bottom_->cpu_data()[bottom_->offset(n, c, y, x)];
  }

  // Largest difference over the reference's range.
  static double Error(const std::vector<Dtype>& got,
                      const std::vector<double>& want) {
    EXPECT_EQ(want.size(), got.size());
    double worst = 0, low = want[0], high = want[0];
    for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
      worst = std::max(worst, std::fabs(want[i] - got[i]));
      low = std::min(low, want[i]);
      high = std::max(high, want[i]);
    }
    EXPECT_GT(high - low, 0);
    return worst / (high - low);
  }

  void Check(bool deconv, const WinogradCase& c) {
    const std::vector<Dtype> got = Run(deconv, c, "1");
    const double tolerance = sizeof(Dtype) == 4 ? 1e-5 : 1e-12;
    EXPECT_LT(Error(got, deconv ? Deconvolution(c, true) : Convolution(c)),
              tolerance);
  }

  Blob<Dtype>* const bottom_;
  Blob<Dtype>* const top_;
  vector<Blob<Dtype>*> bottom_vec_;
  vector<Blob<Dtype>*> top_vec_;
  std::vector<double> weights_, bias_;
  // The last Run's input gradient, then its weight and bias gradients.
  std::vector<std::vector<Dtype> > gradients_;
};

TYPED_TEST_CASE(WinogradConvolutionTest, TestDtypes);

// num, channels, height, width, outputs, pad, group, bias, stride
TYPED_TEST(WinogradConvolutionTest, ConvolutionOddOutput) {
  WinogradCase c = {3, 5, 9, 11, 4, 1, 1, true, 1};
  this->Check(false, c);
}

TYPED_TEST(WinogradConvolutionTest, ConvolutionNoPad) {
  WinogradCase c = {2, 5, 8, 7, 6, 0, 1, true, 1};
  this->Check(false, c);
}

TYPED_TEST(WinogradConvolutionTest, ConvolutionPad2Grouped) {
  WinogradCase c = {2, 6, 7, 10, 4, 2, 2, true, 1};
  this->Check(false, c);
}

TYPED_TEST(WinogradConvolutionTest, ConvolutionNoBias) {
  WinogradCase c = {2, 3, 6, 6, 5, 1, 1, false, 1};
  this->Check(false, c);
}

TYPED_TEST(WinogradConvolutionTest, ConvolutionOnePixel) {
  WinogradCase c = {4, 3, 1, 1, 2, 1, 1, true, 1};
  this->Check(false, c);
}

TYPED_TEST(WinogradConvolutionTest, DeconvolutionPad1) {
  WinogradCase c = {3, 5, 9, 11, 4, 1, 1, true, 1};
  this->Check(true, c);
}

TYPED_TEST(WinogradConvolutionTest, DeconvolutionPad0Grouped) {
  WinogradCase c = {2, 6, 5, 8, 4, 0, 2, true, 1};
  this->Check(true, c);
}

TYPED_TEST(WinogradConvolutionTest, DeconvolutionPad2And3) {
  WinogradCase c = {2, 4, 9, 7, 6, 2, 1, true, 1};
  this->Check(true, c);
  WinogradCase d = {2, 4, 9, 8, 6, 3, 1, false, 1};
  this->Check(true, d);
}

// A 1 MiB budget holds 64 tiles of 128 + 128 channels: blocks of 64 tiles
// over images of 7 x 8 = 56 tiles each start and end inside images.
TYPED_TEST(WinogradConvolutionTest, BlocksAcrossImages) {
  setenv("CAFFE_CPU_CONV_BATCH_MIB", "1", 1);
  WinogradCase c = {3, 128, 13, 15, 128, 1, 1, true, 1};
  this->Check(false, c);
  this->Check(true, c);
}

// The Winograd path is the one taken (its rounding differs from im2col's)
// and is only taken for stride 1.
TYPED_TEST(WinogradConvolutionTest, TakenOnlyForStride1) {
  WinogradCase c = {2, 8, 9, 9, 8, 1, 1, true, 1};
  const std::vector<TypeParam> winograd = this->Run(false, c, "1");
  const std::vector<TypeParam> im2col = this->Run(false, c, "0");
  EXPECT_FALSE(winograd == im2col);
  WinogradCase strided = {2, 8, 9, 9, 8, 1, 1, true, 2};
  EXPECT_TRUE(this->Run(false, strided, "1") ==
              this->Run(false, strided, "0"));
}

TYPED_TEST(WinogradConvolutionTest, Gradients) {
  setenv("CAFFE_CPU_CONV_BATCH_MIB", "1", 1);  // blocks across images too
  const WinogradCase cases[] = {{3, 5, 9, 11, 4, 1, 1, true, 1},
      {2, 6, 7, 10, 4, 0, 2, true, 1}, {2, 4, 9, 8, 6, 3, 1, false, 1},
      {3, 128, 13, 15, 128, 1, 1, true, 1}};
  const double tolerance = sizeof(TypeParam) == 4 ? 1e-5 : 1e-12;
  for (int i = 0; i < 4; ++i) {
    for (int deconv = 0; deconv < 2; ++deconv) {
      this->Run(deconv, cases[i], "0");
      const std::vector<std::vector<TypeParam> > im2col = this->gradients_;
      this->Run(deconv, cases[i], "1");
      ASSERT_EQ(im2col.size(), this->gradients_.size());
      for (int part = 0; part < im2col.size(); ++part) {  // input, weights
        const std::vector<double> want(im2col[part].begin(),
                                       im2col[part].end());
        EXPECT_LT(this->Error(this->gradients_[part], want), tolerance)
            << "case " << i << (deconv ? " deconvolution" : " convolution")
            << " gradient " << part;
        if (part < 2) {  // Winograd's rounding, not the bias's sum
          EXPECT_FALSE(this->gradients_[part] == im2col[part]);
        }
      }
    }
  }
}

TYPED_TEST(WinogradConvolutionTest, WrongReferenceFails) {
  WinogradCase c = {2, 4, 6, 7, 4, 1, 1, true, 1};
  const std::vector<TypeParam> got = this->Run(true, c, "1");
  EXPECT_GT(this->Error(got, this->Deconvolution(c, false)), 1e-2);
}

}  // namespace caffe
