#include <vector>

#include "caffe/layers/unpooling_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

// One thread per input value. An out-of-range index is not written; its
// position (plus one) goes to *bad_position so the host can stop with a
// message.
template <typename Dtype>
__global__ void UnpoolForward(const int nthreads, const Dtype* bottom_data,
    const Dtype* mask, const int in_plane, const int out_plane,
    Dtype* top_data, int* bad_position) {
  CUDA_KERNEL_LOOP(i, nthreads) {
    const Dtype index = mask[i];
    if (index >= 0 && index < out_plane) {
      top_data[(i / in_plane) * out_plane + static_cast<int>(index)] =
          bottom_data[i];
    } else {
      *bad_position = i + 1;
    }
  }
}

template <typename Dtype>
__global__ void UnpoolBackward(const int nthreads, const Dtype* top_diff,
    const Dtype* mask, const int in_plane, const int out_plane,
    Dtype* bottom_diff, int* bad_position) {
  CUDA_KERNEL_LOOP(i, nthreads) {
    const Dtype index = mask[i];
    if (index >= 0 && index < out_plane) {
      bottom_diff[i] =
          top_diff[(i / in_plane) * out_plane + static_cast<int>(index)];
    } else {
      bottom_diff[i] = 0;
      *bad_position = i + 1;
    }
  }
}

template <typename Dtype>
void UnpoolingLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top) {
  const int count = bottom[0]->count();
  Dtype* top_data = top[0]->mutable_gpu_data();
  caffe_gpu_set(top[0]->count(), Dtype(0), top_data);
  int* bad_position = bad_index_flag_.mutable_gpu_data();
  caffe_gpu_set(1, 0, bad_position);
  // NOLINT_NEXT_LINE(whitespace/operators)
  UnpoolForward<Dtype><<<CAFFE_GET_BLOCKS(count), CAFFE_CUDA_NUM_THREADS>>>(
      count, bottom[0]->gpu_data(), bottom[1]->gpu_data(),
      height_ * width_, out_height_ * out_width_, top_data, bad_position);
  CUDA_POST_KERNEL_CHECK;
  const int bad = bad_index_flag_.cpu_data()[0];
  if (bad) {
    ReportBadIndex(bad - 1, bottom[1]->cpu_data()[bad - 1]);
  }
}

template <typename Dtype>
void UnpoolingLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (!propagate_down[0]) {
    return;
  }
  const int count = bottom[0]->count();
  int* bad_position = bad_index_flag_.mutable_gpu_data();
  caffe_gpu_set(1, 0, bad_position);
  // NOLINT_NEXT_LINE(whitespace/operators)
  UnpoolBackward<Dtype><<<CAFFE_GET_BLOCKS(count), CAFFE_CUDA_NUM_THREADS>>>(
      count, top[0]->gpu_diff(), bottom[1]->gpu_data(),
      height_ * width_, out_height_ * out_width_,
      bottom[0]->mutable_gpu_diff(), bad_position);
  CUDA_POST_KERNEL_CHECK;
  const int bad = bad_index_flag_.cpu_data()[0];
  if (bad) {
    ReportBadIndex(bad - 1, bottom[1]->cpu_data()[bad - 1]);
  }
}

INSTANTIATE_LAYER_GPU_FUNCS(UnpoolingLayer);

}  // namespace caffe
