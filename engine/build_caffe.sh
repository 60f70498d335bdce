#!/usr/bin/env bash
# Builds official Caffe from its pinned source with our patches and added
# layer files, into a cache directory keyed by a hash of everything that goes
# into the build. A second run with the same inputs does nothing.
#
# This is the core of a variant, built once: libcaffe (with the CUDA kernels),
# the caffe tool, libcaffe_tool and the Unpooling gtest, with no Python in
# them. pycaffe, the one part that needs an interpreter, is built per CPython
# by engine/build_pycaffe.sh against this install tree, which keeps what that
# needs (share/Caffe/pycaffe: pycaffe's sources and the compile definitions).
#
# Usage: engine/build_caffe.sh [--cuda] [--arch LIST] [--source PATH] [--jobs N]
#   --cuda         build the CUDA + cuDNN + NCCL variant (default: CPU_ONLY)
#   --arch LIST    with --cuda: only these GPU architectures, as SASS and no
#                  PTX (e.g. "90"; default: CAFFE_CUDA_ARCH_BIN and _PTX of
#                  engine/pins.sh); cached as its own variant, cuda_sm<LIST>
#   --source PATH  a Caffe source tarball or directory to use instead of the
#                  pinned Debian source package (also: CAFFE_SOURCE=PATH)
#   --jobs N       parallel compile jobs (default: nproc)
#   --cuda-libs D  a folder holding the nvidia-* wheels (CUDA variant;
#                  also: CAFFE_CUDA_LIBS=D); its nvidia/cu13 is the CUDA
#                  toolkit unless CUDA_HOME names another
# Environment: CAFFE_CACHE (default: <repo>/.cache/caffe), CAFFE_APT_MIRROR
# (a Debian mirror URI; default: the one this machine's apt uses), CUDA_HOME
# (a CUDA toolkit to build with instead of the pinned wheels').
# On success prints the install prefix as the last line of stdout.
set -euo pipefail

ENGINE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$ENGINE_DIR")
# shellcheck source=engine/pins.sh
source "$ENGINE_DIR/pins.sh"

variant=cpu
source_path="${CAFFE_SOURCE:-}"
jobs=$(nproc)
cuda_libs="${CAFFE_CUDA_LIBS:-}"
cache="${CAFFE_CACHE:-$ROOT/.cache/caffe}"
arch_bin=""

die() { echo "build_caffe: error: $*" >&2; exit 1; }
log() { echo "build_caffe: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --cuda) variant=cuda ;;
    --arch) arch_bin="$2"; shift ;;
    --source) source_path="$2"; shift ;;
    --jobs) jobs="$2"; shift ;;
    --cuda-libs) cuda_libs="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

# The variant's name in the cache: cpu, cuda (the pinned architectures) or
# cuda_sm<LIST> (--arch); each keeps its own newest build.
label=$variant
arch_ptx="$CAFFE_CUDA_ARCH_PTX"
if [ -n "$arch_bin" ]; then
  [ "$variant" = cuda ] || die "--arch needs --cuda"
  [[ "$arch_bin" =~ ^[0-9]+( [0-9]+)*$ ]] || die "--arch takes compute capabilities like \"90\" or \"80 90\", not '$arch_bin'"
  label="cuda_sm${arch_bin// /_}"
  arch_ptx=""
else
  arch_bin="$CAFFE_CUDA_ARCH_BIN"
fi

# --- the source ------------------------------------------------------------

# shellcheck source=engine/apt_mirror.sh
source "$ENGINE_DIR/apt_mirror.sh"

# Downloads the pinned orig tarball with apt-get source and verifies it.
fetch_pinned_tarball() {
  local dest="$cache/downloads/$CAFFE_ORIG_TARBALL"
  if [ -f "$dest" ]; then echo "$dest"; return; fi
  local tmp; tmp=$(mktemp -d "$cache/fetch.XXXXXX")
  apt_source_download "caffe=$CAFFE_DEB_VERSION" "$CAFFE_DEB_SUITE" "$tmp" \
    || die "could not fetch caffe=$CAFFE_DEB_VERSION; set CAFFE_SOURCE=<tarball or directory> to use another copy"
  local got; got=$(sha256sum "$tmp/$CAFFE_ORIG_TARBALL" | cut -d' ' -f1)
  [ "$got" = "$CAFFE_ORIG_SHA256" ] || die "$CAFFE_ORIG_TARBALL has sha256 $got, expected $CAFFE_ORIG_SHA256"
  mkdir -p "$(dirname "$dest")"
  mv "$tmp/$CAFFE_ORIG_TARBALL" "$dest.part" && mv "$dest.part" "$dest"
  rm -rf "$tmp"
  echo "$dest"
}

# A content hash of the source, so that another copy gets its own build.
source_hash() {
  local path="$1"
  if [ -f "$path" ]; then
    sha256sum "$path" | cut -d' ' -f1
  else
    (cd "$path" && find . -type f -not -path './.git/*' -not -path './build/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
  fi
}

# Unpacks a tarball (with or without a top-level folder) or copies a directory.
unpack_source() {
  local path="$1" dest="$2"
  mkdir -p "$dest"
  if [ -f "$path" ]; then
    tar -xzf "$path" -C "$dest"
    if [ ! -f "$dest/CMakeLists.txt" ]; then
      local top; top=$(find "$dest" -mindepth 1 -maxdepth 1 -type d)
      [ -f "$top/CMakeLists.txt" ] || die "'$path' does not look like a Caffe source tarball (no CMakeLists.txt)"
      (shopt -s dotglob; mv "$top"/* "$dest"/ && rmdir "$top")
    fi
  else
    [ -f "$path/CMakeLists.txt" ] || die "'$path' is not a Caffe source directory (no CMakeLists.txt)"
    (cd "$path" && tar -cf - --exclude=./.git --exclude=./build .) | tar -xf - -C "$dest"
  fi
}

if [ -n "$source_path" ]; then
  [ -e "$source_path" ] || die "CAFFE_SOURCE '$source_path' does not exist"
  source_path=$(cd "$(dirname "$source_path")" && pwd)/$(basename "$source_path")
  log "using Caffe source $source_path"
else
  mkdir -p "$cache"
  source_path=$(fetch_pinned_tarball)
fi

# --- the configuration -----------------------------------------------------

cmake_flags=(
  -DCMAKE_BUILD_TYPE=Release
  -DBLAS=Open
  -DUSE_LEVELDB=OFF
  -DUSE_LMDB=ON
  # Our data layers decode with cv2 from pip; Caffe's OpenCV-only parts
  # (ImageData, WindowData, encoded Datums, convert_imageset) go unused.
  -DUSE_OPENCV=OFF
  -DBUILD_docs=OFF
  # pycaffe and the Python layer: engine/build_pycaffe.sh, per CPython.
  -DBUILD_python=OFF
  -DBUILD_python_layer=OFF
  # Only our layers' gtests and those of the layers our patches change (plus
  # gtest's main): the full suite takes long.
  -DBUILD_only_tests=unpooling_layer,batched_conv_layer,winograd_conv_layer,convolution_layer,deconvolution_layer
)

if [ "$variant" = cuda ]; then
  [ -n "$cuda_libs" ] || die "--cuda needs --cuda-libs <folder with the nvidia-* wheels of CAFFE_CUDA_WHEELS in engine/pins.sh>"
  nv="$cuda_libs/nvidia"
  toolkit="${CUDA_HOME:-$nv/cu13}"
  [ -x "$toolkit/bin/nvcc" ] || die "no nvcc in $toolkit/bin: install the toolkit wheels (scripts/setup.sh --cuda) or set CUDA_HOME to a CUDA 13 toolkit"
  log "CUDA toolkit: $toolkit ($("$toolkit/bin/nvcc" --version | grep -o 'release [0-9.]*'))"
  find_one() {  # find_one NAME: first file called NAME under the nvidia wheels
    local hit; hit=$(find "$nv" -name "$1" -print -quit 2>/dev/null)
    [ -n "$hit" ] || die "'$1' not found under $nv; install the CUDA wheels (scripts/setup.sh --cuda)"
    echo "$hit"
  }
  cudnn_h=$(find_one cudnn.h); cublas_h=$(find_one cublas_v2.h); curand_h=$(find_one curand.h)
  cudnn_so=$(find_one 'libcudnn.so.[0-9]*'); cublas_so=$(find_one 'libcublas.so.[0-9]*')
  curand_so=$(find_one 'libcurand.so.[0-9]*')
  nccl_h=$(find_one nccl.h); nccl_so=$(find_one 'libnccl.so.[0-9]*')
  extra_inc="-I$(dirname "$cublas_h") -I$(dirname "$curand_h") -I$(dirname "$cudnn_h")"
  # cuBLAS needs cuBLASLt from the same wheel at link time. At run time the
  # installed libraries find the wheels through the rpath CMake records
  # (CMAKE_INSTALL_RPATH_USE_LINK_PATH); copies moved elsewhere need
  # LD_LIBRARY_PATH.
  link_dirs="-Wl,-rpath-link,$(dirname "$cublas_so"):$(dirname "$cudnn_so"):$(dirname "$curand_so"):$(dirname "$nccl_so")"
  cmake_flags+=(
    -DCPU_ONLY=OFF
    -DUSE_CUDNN=ON
    # Multi-GPU training: caffe train -gpu 0,1,... or -gpu all.
    -DUSE_NCCL=ON
    -DNCCL_INCLUDE_DIR="$(dirname "$nccl_h")"
    -DNCCL_LIBRARIES="$nccl_so"
    -DCUDA_TOOLKIT_ROOT_DIR="$toolkit"
    # The defaults include compute_20, which nvcc 13 rejects.
    -DCUDA_ARCH_NAME=Manual
    -DCUDA_ARCH_BIN="$arch_bin"
    -DCUDA_ARCH_PTX="$arch_ptx"
    -DCUDNN_INCLUDE="$(dirname "$cudnn_h")"
    -DCUDNN_LIBRARY="$cudnn_so"
    # FindCUDA looks for cuBLAS and cuRAND itself (and drops preset paths on
    # the first run): point it at unversioned links to the wheels' libraries.
    -DCMAKE_LIBRARY_PATH="$cache/cuda-links"
    -DCMAKE_CXX_FLAGS="$extra_inc"
    -DCUDA_NVCC_FLAGS="$extra_inc"
    -DCMAKE_EXE_LINKER_FLAGS="$link_dirs"
    -DCMAKE_SHARED_LINKER_FLAGS="$link_dirs"
  )
else
  cmake_flags+=(-DCPU_ONLY=ON)
fi

if [ "$variant" = cuda ]; then
  # FindCUDA links against the unversioned names; at run time the loader
  # looks for the sonames in the rpath, which records this folder. Made on
  # every run, so a cached build finds its libraries too.
  # cuBLAS loads cuBLASLt from beside it, so every library of those wheel
  # folders gets a link.
  mkdir -p "$cache/cuda-links"
  for so in "$(dirname "$cublas_so")"/lib*.so.* "$(dirname "$curand_so")"/lib*.so.*; do
    ln -sfn "$so" "$cache/cuda-links/$(basename "$so")"
  done
  ln -sfn "$cublas_so" "$cache/cuda-links/libcublas.so"
  ln -sfn "$curand_so" "$cache/cuda-links/libcurand.so"
fi

# --- the cache key ---------------------------------------------------------

key=$( {
  echo "source $(source_hash "$source_path")"
  (cd "$ENGINE_DIR" && find patches overlay -type f -print0 \
     | LC_ALL=C sort -z | xargs -0 sha256sum)
  printf 'flag %s\n' "${cmake_flags[@]}"
} | sha256sum | cut -c1-16)
work="$cache/$label-$key"

if [ -f "$work/.complete" ]; then
  log "$label build is up to date ($work)"
  ln -sfn "$(basename "$work")" "$cache/$label"
  echo "$work/install"
  exit 0
fi

# --- patch, configure, build -----------------------------------------------

log "building the $label variant in $work (key $key)"
rm -rf "$work"
unpack_source "$source_path" "$work/src"
for p in "$ENGINE_DIR"/patches/*.patch; do
  patch -d "$work/src" -p1 --forward --batch --quiet < "$p" >&2 \
    || die "patch $(basename "$p") does not apply to $source_path; the patches target caffe $CAFFE_DEB_VERSION (upstream 9b89154)"
done
cp -r "$ENGINE_DIR/overlay/." "$work/src/"

cmake -S "$work/src" -B "$work/build" -DCMAKE_INSTALL_PREFIX="$work/install" \
  "${cmake_flags[@]}" > "$work/configure.log" 2>&1 \
  || { tail -n 40 "$work/configure.log" >&2; die "cmake configure failed; full log: $work/configure.log"; }
if [ "$variant" = cuda ]; then
  # Caffe's CMake quietly builds a CPU-only library when it finds no CUDA.
  for found in "CUDA detected" "Found cuDNN" "Found NCCL"; do
    grep -q "$found" "$work/configure.log" \
      || die "CMake did not report '$found' for the CUDA variant (toolkit $toolkit); see $work/configure.log"
  done
fi
log "configured; compiling with $jobs jobs (log: $work/build.log)"
targets=(caffe caffe.bin caffe_tool test.testbin upgrade_net_proto_text)
if ! cmake --build "$work/build" -j "$jobs" --target "${targets[@]}" > "$work/build.log" 2>&1; then
  grep -E -B2 -A6 'error|Error' "$work/build.log" | head -n 60 >&2
  die "compile failed; full log: $work/build.log"
fi
# install needs every default target; they are all built by now but tools.
cmake --build "$work/build" -j "$jobs" > "$work/build-rest.log" 2>&1 \
  || { tail -n 40 "$work/build-rest.log" >&2; die "build failed; log: $work/build-rest.log"; }
cmake --install "$work/build" > "$work/install.log" 2>&1 \
  || { tail -n 20 "$work/install.log" >&2; die "install failed; log: $work/install.log"; }
cp "$work/build/test/test.testbin" "$work/install/bin/"
# What engine/build_pycaffe.sh needs of this build, kept in the install tree
# so that a copy of it (the Docker image's) serves too: pycaffe's patched
# sources and the definitions libcaffe's headers were compiled with.
rm -rf "$work/install/share/Caffe/pycaffe" && mkdir -p "$work/install/share/Caffe/pycaffe"
cp -r "$work/src/python/caffe" "$work/install/share/Caffe/pycaffe/caffe"
# caffe_pb2.py, which CMake generates and installs even without pycaffe.
mkdir -p "$work/install/share/Caffe/pycaffe/caffe/proto"
cp "$work/install/python/caffe/proto/"*.py "$work/install/share/Caffe/pycaffe/caffe/proto/"
rm -rf "$work/install/python"
sed -n 's/^CXX_DEFINES = //p' "$work/build/src/caffe/CMakeFiles/caffe.dir/flags.make" | tr ' ' '\n' \
  | grep -v -e '^$' -e '^-Dcaffe_EXPORTS$' > "$work/install/share/Caffe/pycaffe/defines"
grep -q -- '-DCAFFE_VERSION=' "$work/install/share/Caffe/pycaffe/defines" \
  || die "no compile definitions found in $work/build/src/caffe/CMakeFiles/caffe.dir/flags.make"
touch "$work/.complete"
ln -sfn "$(basename "$work")" "$cache/$label"
# Older builds of this variant are superseded.
find "$cache" -mindepth 1 -maxdepth 1 -type d -name "$label-*" ! -name "$(basename "$work")" \
  ! -name cuda-links -exec rm -rf {} +
log "done: $work/install"
echo "$work/install"
