# The pinned inputs of the Caffe build, sourced by engine/build_caffe.sh and
# scripts/setup.sh.

# Official Caffe: Debian's source package; its orig tarball is upstream BVLC
# master, differing from the final commit 9b89154 only in README.md and
# scripts/cpp_lint.py.
CAFFE_DEB_VERSION="1.0.0+git20180821.99bd997-8"
CAFFE_DEB_SUITE="bullseye"
CAFFE_ORIG_TARBALL="caffe_1.0.0+git20180821.99bd997.orig.tar.gz"
CAFFE_ORIG_SHA256="e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c"
CAFFE_UPSTREAM_COMMIT="9b89154"  # BVLC/caffe master, for git checkouts (Docker)

# CUDA variant: real architectures (Ampere, Ada, Hopper) plus PTX for newer.
CAFFE_CUDA_ARCH_BIN="80 86 89 90"
CAFFE_CUDA_ARCH_PTX="90"
# cuBLAS, cuRAND, cuDNN and NCCL come from PyPI wheels matching nvcc 13.0;
# cuobjdump (to list the compiled architectures) is the oldest 13.x on PyPI.
CAFFE_CUDA_WHEELS="nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cudnn-cu13==9.13.0.50 nvidia-nccl-cu13==2.27.7 nvidia-cuda-cuobjdump==13.2.51"
# The CUDA 13.0 toolkit itself (nvcc, the runtime, CCCL, CRT, NVVM), so that
# no system CUDA is needed; they install into nvidia/cu13 beside cuBLAS.
# CUDA_HOME=/path builds with another toolkit instead.
CAFFE_CUDA_TOOLKIT_WHEELS="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88"
# What a CUDA build loads at run time, from the pins above (the CUDA wheel's
# dependencies, the GPU kit's list): cudart, cuBLAS, cuRAND, cuDNN, NCCL.
CAFFE_CUDA_RUNTIME_WHEELS=$(for pin in $CAFFE_CUDA_WHEELS $CAFFE_CUDA_TOOLKIT_WHEELS; do
  case "$pin" in nvidia-cuda-runtime==*|nvidia-cublas==*|nvidia-curand==*|nvidia-cudnn-cu13==*|nvidia-nccl-cu13==*)
    echo "$pin" ;;
  esac
done)
# The CUDA wheel's requirements: ranges within CUDA 13, cuDNN 9 and NCCL 2,
# from the pins above (their lowest bound, which the tests install) to the
# next major version, so that the wheel installs beside other packages built
# on the same CUDA 13 wheels (PyTorch's cu130 build, for one).
CAFFE_CUDA_RUNTIME_RANGES=$(for pin in $CAFFE_CUDA_RUNTIME_WHEELS; do
  version=${pin#*==}
  echo "${pin%%==*}>=$version,<$(( ${version%%.*} + 1 ))"
done)

# The pip wheels of scripts/build_wheel.sh: Caffe 1.0 at its final upstream
# commit's date, for Debian 12's glibc (2.36); CPU and CUDA 13 distributions
# both provide the `caffe` package, so install one of them.
CAFFE_WHEEL_VERSION="1.0.0.post20180821"
CAFFE_WHEEL_PLAT="manylinux_2_36_x86_64"
CAFFE_WHEEL_NAME_CPU="deconvnet-caffe"
CAFFE_WHEEL_NAME_CUDA="deconvnet-caffe-cu13"

# boost.python for each CPython (engine/build_pycaffe.sh): Debian 12's
# boost1.74 source package (the version of its libboost*-dev, whose other
# headers and libraries libcaffe uses), as Debian patches it, plus our
# engine/boost-patches.
BOOST_DEB_VERSION="1.74.0+ds1-21"
BOOST_DEB_SUITE="bookworm"
BOOST_ORIG_TARBALL="boost1.74_1.74.0+ds1.orig.tar.xz"
BOOST_ORIG_SHA256="192f5df504d282cb81288f88232d8af45b64a9ab531e1c7cf8ae955f16f6bb28"
BOOST_DEBIAN_TARBALL="boost1.74_1.74.0+ds1-21.debian.tar.xz"
BOOST_DEBIAN_SHA256="6549dab4824c781e0510272ac352f9e0367d4d47c16c94989e5ec7447fd8f0d8"
# The CPython versions the wheels are built for (scripts/build_all_wheels.sh).
CAFFE_PYTHONS="3.10 3.11 3.12 3.13"
# numpy whose C headers pycaffe is compiled with, for each of those Pythons
# (2.2 is the last numpy for 3.10); the module runs with any numpy 2.x.
CAFFE_NUMPY_BUILD="numpy==2.2.6"
