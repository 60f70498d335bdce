#ifndef CAFFE_UNPOOLING_LAYER_HPP_
#define CAFFE_UNPOOLING_LAYER_HPP_

#include <string>
#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

/**
 * @brief Reverses MAX pooling by its switches (DeconvNet's "unpooling").
 *
 * Bottoms:
 *   0. the values to place, shape (N, C, H, W);
 *   1. the mask top of a MAX Pooling layer, same shape, holding for every
 *      value the flat index h * W_out + w of its position in the output plane;
 *   2. (optional) a blob whose spatial size sets the output size.
 *
 * Forward zeroes the top and writes top[n, c, mask[i]] = bottom[n, c, i].
 * Backward gathers bottom_diff[i] = top_diff[n, c, mask[i]]; the mask and the
 * size bottom receive no gradient.
 *
 * The output size is required: unpool_size / unpool_h / unpool_w, or the
 * spatial size of bottom[2]. It cannot be inferred from kernel and stride:
 * inputs of 7 and 8 both pool to 4, and the mask indices are only meaningful
 * if the output width equals the width of the pooling input.
 */
template <typename Dtype>
class UnpoolingLayer : public Layer<Dtype> {
 public:
  explicit UnpoolingLayer(const LayerParameter& param)
      : Layer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "Unpooling"; }
  // Bottom counts are checked in LayerSetUp, so that the message can name
  // the layer and say which bottom is missing.
  virtual inline int ExactNumTopBlobs() const { return 1; }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  /// "Unpooling layer 'name'", the prefix of every error message.
  std::string Describe() const;
  /// Stops with a message naming the layer and the offending mask entry.
  void ReportBadIndex(int position, Dtype index) const;

  int kernel_h_, kernel_w_;
  int stride_h_, stride_w_;
  int unpool_h_, unpool_w_;  // 0 when not given as parameters
  int channels_;
  int height_, width_;
  int out_height_, out_width_;
  // GPU kernels cannot stop the process; they raise this flag instead.
  Blob<int> bad_index_flag_;
};

}  // namespace caffe

#endif  // CAFFE_UNPOOLING_LAYER_HPP_
