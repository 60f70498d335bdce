# Sourced by scripts/build_wheel.sh and scripts/gpu_kit.sh (from the
# repository root): the CUDA variant they package.
#
# cuda_build [--arch LIST] sets cuda_prefix (the install tree) and cuda_libs
# (the cuda-wheels folder it links with). With CAFFE_CUDA_PREFIX set (an
# install tree built elsewhere, such as the Docker image's, which
# tests/test_wheels.py copies out) and CAFFE_CUDA_LIBS, those are used as
# they are and nothing is compiled; otherwise scripts/setup.sh --cuda builds
# the variant here, for LIST or the pinned architectures.
cuda_build() {
  if [ -n "${CAFFE_CUDA_PREFIX:-}" ]; then
    if [ $# -gt 0 ]; then
      echo "$0: --arch does not apply to CAFFE_CUDA_PREFIX (built for its own architectures)" >&2
      exit 1
    fi
    cuda_prefix=$CAFFE_CUDA_PREFIX
    cuda_libs=${CAFFE_CUDA_LIBS:?CAFFE_CUDA_LIBS: the cuda-wheels folder CAFFE_CUDA_PREFIX was linked with}
    if [ ! -f "$cuda_prefix/lib/libcaffe.so" ] || [ ! -x "$cuda_prefix/bin/caffe" ]; then
      echo "$0: CAFFE_CUDA_PREFIX=$cuda_prefix is not an install tree of Caffe (lib/libcaffe.so, bin/caffe)" >&2
      exit 1
    fi
    echo "$0: using the CUDA build in $cuda_prefix" >&2
    bash scripts/setup.sh >&2
    return
  fi
  local setup_args=(--cuda) build_args=(--cuda)
  if [ $# -ge 2 ] && [ "$1" = --arch ]; then
    setup_args+=(--cuda-arch "$2")
    build_args+=(--arch "$2")
  fi
  bash scripts/setup.sh "${setup_args[@]}" >&2
  cuda_libs="$PWD/.cache/cuda-wheels"
  cuda_prefix=$(engine/build_caffe.sh "${build_args[@]}" --cuda-libs "$cuda_libs" \
    | tail -n 1)
}
