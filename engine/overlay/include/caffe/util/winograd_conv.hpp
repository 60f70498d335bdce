// Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast
// Algorithms for Convolutional Neural Networks", CVPR 2016) for the CPU
// passes of 3x3, stride-1, undilated 2-d Convolution and Deconvolution
// layers: 16 multiplications per 2x2 output block instead of 36, the
// products done as 16 GEMMs over blocks of many images at once. The
// forward pass and the input gradient (a convolution too) by
// winograd_conv3x3_cpu, the weight gradient by its adjoint.
#ifndef CAFFE_UTIL_WINOGRAD_CONV_HPP_
#define CAFFE_UTIL_WINOGRAD_CONV_HPP_

#include <cstddef>

namespace caffe {

// The convolution computed: input (num, channels, height, width) to output
// (num, out_channels, out_height, out_width), output(y, x) reading input
// rows y - pad_h .. y - pad_h + 2 (zero outside the image). A pad may be
// negative: a Deconvolution with pad p is such a convolution with pad 2 - p.
struct WinogradGeometry {
  int num, channels, height, width;
  int out_channels, out_height, out_width;
  int pad_h, pad_w;
  int group;
};

// Transformed positions of one 4x4 input tile (and of one 3x3 filter).
const int kWinogradPositions = 16;

// 2x2 output blocks ("tiles") in one image.
int winograd_tiles_per_image(const WinogradGeometry& g);

// Elements of the transformed filters: kWinogradPositions x out_channels x
// channels / group.
size_t winograd_filter_size(const WinogradGeometry& g);

// Filters to the Winograd domain, U = G w G^T. `weights` is a Convolution's
// blob (out_channels, channels / group, 3, 3) or, when `deconvolution`, a
// Deconvolution's (channels, out_channels / group, 3, 3): the same filters
// transposed and rotated by 180 degrees.
template <typename Dtype>
void winograd_transform_filters(const WinogradGeometry& g,
    const Dtype* weights, bool deconvolution, Dtype* filters);

// The convolution itself, `chunk_tiles` tiles (of any images) at a time:
// `tile_buffer` holds kWinogradPositions x channels x chunk_tiles elements,
// `product_buffer` kWinogradPositions x out_channels x chunk_tiles. `bias`
// (out_channels) may be NULL.
template <typename Dtype>
void winograd_conv3x3_cpu(const WinogradGeometry& g, const Dtype* filters,
    const Dtype* input, const Dtype* bias, int chunk_tiles,
    Dtype* tile_buffer, Dtype* product_buffer, Dtype* output);

// The weight gradient, in the Winograd domain: filter_diff (as `filters`
// above) = the sum over all tiles of (A dY A^T) (B^T d B)^T, dY the output
// gradient of a 2x2 block and d its 4x4 input tile. Buffers as above.
template <typename Dtype>
void winograd_filter_gradient_cpu(const WinogradGeometry& g,
    const Dtype* input, const Dtype* output_diff, int chunk_tiles,
    Dtype* tile_buffer, Dtype* product_buffer, Dtype* filter_diff);

// Adds G^T filter_diff G, the gradient of the blob that
// winograd_transform_filters read (same `deconvolution`), to `weight_diff`.
template <typename Dtype>
void winograd_add_weight_gradient(const WinogradGeometry& g,
    const Dtype* filter_diff, bool deconvolution, Dtype* weight_diff);

}  // namespace caffe

#endif  // CAFFE_UTIL_WINOGRAD_CONV_HPP_
