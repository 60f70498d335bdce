#ifndef CAFFE_UTIL_CUDNN_ALGO_H_
#define CAFFE_UTIL_CUDNN_ALGO_H_
#ifdef USE_CUDNN

// cuDNN 8 removed cudnnGetConvolution*Algorithm and the
// *_SPECIFY_WORKSPACE_LIMIT preferences that Caffe used. These helpers keep
// Caffe's behaviour: take cuDNN's own ranking (the _v7 heuristics) and choose
// its best algorithm whose workspace fits in the limit.

#include <glog/logging.h>

#include "caffe/util/cudnn.hpp"

namespace caffe {

namespace cudnn {

template <typename Perf, typename Algo>
inline Algo FirstWithinLimit(const Perf* perf, int returned,
    size_t workspace_limit_bytes, Algo fallback, const char* what) {
  for (int i = 0; i < returned; ++i) {
    if (perf[i].status == CUDNN_STATUS_SUCCESS &&
        perf[i].memory <= workspace_limit_bytes) {
      VLOG(1) << "cuDNN " << what << ": algorithm " << perf[i].algo
          << " (rank " << i << ", workspace " << perf[i].memory
          << " bytes, limit " << workspace_limit_bytes << ")";
      return perf[i].algo;
    }
  }
  VLOG(1) << "cuDNN " << what << ": nothing ranked fits in "
      << workspace_limit_bytes << " bytes; using zero-workspace algorithm "
      << fallback;
  return fallback;
}

inline cudnnConvolutionFwdAlgo_t ChooseForwardAlgo(cudnnHandle_t handle,
    cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
    cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t y,
    size_t workspace_limit_bytes) {
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int returned = 0;
  CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(handle, x, w, conv, y,
      CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf));
  return FirstWithinLimit(perf, returned, workspace_limit_bytes,
      CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, "forward");
}

inline cudnnConvolutionBwdFilterAlgo_t ChooseBackwardFilterAlgo(
    cudnnHandle_t handle, cudnnTensorDescriptor_t x,
    cudnnTensorDescriptor_t dy, cudnnConvolutionDescriptor_t conv,
    cudnnFilterDescriptor_t dw, size_t workspace_limit_bytes) {
  cudnnConvolutionBwdFilterAlgoPerf_t
      perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  int returned = 0;
  CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle, x, dy,
      conv, dw, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &returned, perf));
  return FirstWithinLimit(perf, returned, workspace_limit_bytes,
      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, "backward filter");
}

inline cudnnConvolutionBwdDataAlgo_t ChooseBackwardDataAlgo(
    cudnnHandle_t handle, cudnnFilterDescriptor_t w,
    cudnnTensorDescriptor_t dy, cudnnConvolutionDescriptor_t conv,
    cudnnTensorDescriptor_t dx, size_t workspace_limit_bytes) {
  cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  int returned = 0;
  CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle, w, dy,
      conv, dx, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &returned, perf));
  return FirstWithinLimit(perf, returned, workspace_limit_bytes,
      CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, "backward data");
}

}  // namespace cudnn

}  // namespace caffe

#endif  // USE_CUDNN
#endif  // CAFFE_UTIL_CUDNN_ALGO_H_
