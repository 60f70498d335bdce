#include <climits>
#include <sstream>
#include <string>
#include <vector>

#include "caffe/layers/unpooling_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
std::string UnpoolingLayer<Dtype>::Describe() const {
  return "Unpooling layer '" + this->layer_param_.name() + "'";
}

template <typename Dtype>
void UnpoolingLayer<Dtype>::ReportBadIndex(int position, Dtype index) const {
  const int in_plane = height_ * width_;
  LOG(FATAL) << Describe() << ": mask index " << index << " at (n*C+c="
      << position / in_plane << ", h=" << (position % in_plane) / width_
      << ", w=" << position % width_ << ") is outside the " << out_height_
      << "x" << out_width_ << " output plane. The mask must be the second top"
      << " of a MAX Pooling layer whose input had this output size; for odd"
      << " input sizes set unpooling_param { unpool_h unpool_w } or pass the"
      << " pooling input as a third bottom.";
}

template <typename Dtype>
void UnpoolingLayer<Dtype>::LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top) {
  CHECK(!bottom.empty() && bottom.size() <= 3) << Describe() << " takes 2 or"
      << " 3 bottoms (values, pooling mask[, size reference]); got "
      << bottom.size() << ".";
  CHECK_GE(bottom.size(), 2) << Describe() << ": missing mask. Add the"
      << " second top of the matching MAX Pooling layer (e.g. pool1_mask) as"
      << " its second bottom.";
  const UnpoolingParameter& param = this->layer_param_.unpooling_param();
  CHECK(!(param.has_kernel_size() && (param.has_kernel_h() ||
      param.has_kernel_w()))) << Describe() << ": give kernel_size or"
      << " kernel_h and kernel_w, not both.";
  CHECK_EQ(param.has_kernel_h(), param.has_kernel_w()) << Describe()
      << ": kernel_h and kernel_w must be given together.";
  CHECK(!(param.has_stride() && (param.has_stride_h() ||
      param.has_stride_w()))) << Describe() << ": give stride or stride_h"
      << " and stride_w, not both.";
  CHECK_EQ(param.has_stride_h(), param.has_stride_w()) << Describe()
      << ": stride_h and stride_w must be given together.";
  CHECK(!(param.has_unpool_size() && (param.has_unpool_h() ||
      param.has_unpool_w()))) << Describe() << ": give unpool_size or"
      << " unpool_h and unpool_w, not both.";
  CHECK_EQ(param.has_unpool_h(), param.has_unpool_w()) << Describe()
      << ": unpool_h and unpool_w must be given together.";

  const uint32_t values[] = {
      param.has_kernel_h() ? param.kernel_h() : param.kernel_size(),
      param.has_kernel_w() ? param.kernel_w() : param.kernel_size(),
      param.has_stride_h() ? param.stride_h() : param.stride(),
      param.has_stride_w() ? param.stride_w() : param.stride(),
      param.has_unpool_h() ? param.unpool_h() : param.unpool_size(),
      param.has_unpool_w() ? param.unpool_w() : param.unpool_size()};
  for (int i = 0; i < 6; ++i) {
    // uint32 in the prototxt; a value above INT_MAX would wrap negative.
    CHECK_LE(values[i], static_cast<uint32_t>(INT_MAX)) << Describe()
        << ": unpooling_param value " << values[i] << " is larger than "
        << INT_MAX << ", the most a Caffe blob axis can hold.";
  }
  kernel_h_ = values[0];
  kernel_w_ = values[1];
  stride_h_ = values[2];
  stride_w_ = values[3];
  unpool_h_ = values[4];
  unpool_w_ = values[5];
  CHECK(stride_h_ > 0 && stride_w_ > 0) << Describe()
      << ": stride must be positive.";
  // The output size cannot be inferred from kernel and stride: inputs of 7
  // and 8 both pool to 4 (kernel 2, stride 2), and unpooling a 7 into an 8
  // puts every switch of the last row and column at the wrong place.
  CHECK(unpool_h_ > 0 || bottom.size() == 3) << Describe()
      << ": needs its output size, which kernel and stride cannot tell (inputs"
      << " of 7 and 8 both pool to 4 with kernel 2, stride 2). Set"
      << " unpooling_param { unpool_size } (or unpool_h and unpool_w) to the"
      << " matching pooling layer's input size, or pass that pooling layer's"
      << " input as a third bottom.";
}

template <typename Dtype>
void UnpoolingLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top) {
  CHECK_EQ(4, bottom[0]->num_axes()) << Describe() << ": input must have 4"
      << " axes (N, C, H, W); got shape " << bottom[0]->shape_string() << ".";
  CHECK(bottom[0]->shape() == bottom[1]->shape()) << Describe()
      << ": mask shape " << bottom[1]->shape_string() << " differs from input"
      << " shape " << bottom[0]->shape_string() << ". The mask must come from"
      << " the MAX Pooling layer whose output is being unpooled.";
  channels_ = bottom[0]->channels();
  height_ = bottom[0]->height();
  width_ = bottom[0]->width();
  if (unpool_h_ > 0) {
    out_height_ = unpool_h_;
    out_width_ = unpool_w_;
  } else {
    CHECK_GE(bottom[2]->num_axes(), 2) << Describe() << ": the size bottom"
        << " needs spatial axes; got shape " << bottom[2]->shape_string();
    out_height_ = bottom[2]->shape(-2);
    out_width_ = bottom[2]->shape(-1);
  }
  CHECK(out_height_ > 0 && out_width_ > 0) << Describe()
      << ": output size " << out_height_ << "x" << out_width_
      << " is not positive.";
  const double elements = static_cast<double>(bottom[0]->num()) * channels_
      * out_height_ * out_width_;
  CHECK_LE(elements, static_cast<double>(INT_MAX)) << Describe()
      << ": output " << bottom[0]->num() << "x" << channels_ << "x"
      << out_height_ << "x" << out_width_ << " would hold " << elements
      << " values, more than a Caffe blob's limit of " << INT_MAX << ".";
  top[0]->Reshape(bottom[0]->num(), channels_, out_height_, out_width_);
  bad_index_flag_.Reshape(1, 1, 1, 1);
}

template <typename Dtype>
void UnpoolingLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top) {
  const Dtype* bottom_data = bottom[0]->cpu_data();
  const Dtype* mask = bottom[1]->cpu_data();
  Dtype* top_data = top[0]->mutable_cpu_data();
  caffe_set(top[0]->count(), Dtype(0), top_data);
  const int in_plane = height_ * width_;
  const int out_plane = out_height_ * out_width_;
  const int planes = bottom[0]->num() * channels_;
  for (int p = 0; p < planes; ++p) {
    const int in_offset = p * in_plane;
    Dtype* top_plane = top_data + p * out_plane;
    for (int i = 0; i < in_plane; ++i) {
      const Dtype index = mask[in_offset + i];
      // Written so that NaN fails too.
      if (!(index >= 0 && index < out_plane)) {
        ReportBadIndex(in_offset + i, index);
      }
      top_plane[static_cast<int>(index)] = bottom_data[in_offset + i];
    }
  }
}

template <typename Dtype>
void UnpoolingLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  // No gradient goes to the mask or the size bottom.
  if (!propagate_down[0]) {
    return;
  }
  const Dtype* top_diff = top[0]->cpu_diff();
  const Dtype* mask = bottom[1]->cpu_data();
  Dtype* bottom_diff = bottom[0]->mutable_cpu_diff();
  const int in_plane = height_ * width_;
  const int out_plane = out_height_ * out_width_;
  const int planes = bottom[0]->num() * channels_;
  for (int p = 0; p < planes; ++p) {
    const int in_offset = p * in_plane;
    const Dtype* top_plane = top_diff + p * out_plane;
    for (int i = 0; i < in_plane; ++i) {
      const Dtype index = mask[in_offset + i];
      if (!(index >= 0 && index < out_plane)) {
        ReportBadIndex(in_offset + i, index);
      }
      bottom_diff[in_offset + i] = top_plane[static_cast<int>(index)];
    }
  }
}

#ifdef CPU_ONLY
STUB_GPU(UnpoolingLayer);
#endif

INSTANTIATE_CLASS(UnpoolingLayer);
REGISTER_LAYER_CLASS(Unpooling);

}  // namespace caffe
