#!/usr/bin/env bash
# Builds pycaffe for one CPython against a core build of engine/build_caffe.sh
# (CPU or CUDA): the part of Caffe that needs an interpreter, in about a
# minute per Python instead of a whole Caffe build.
#   1. boost.python for that interpreter, from Debian's pinned boost1.74
#      source package (engine/pins.sh) with engine/boost-patches, compiled
#      with the interpreter's headers; once per interpreter, shared by the
#      CPU and CUDA variants ($CAFFE_CACHE/boost-python/).
#   2. pycaffe's _caffe module, which also registers the Python layer type
#      (engine patch 0016), linked to the core's libcaffe; numpy's headers
#      come from the pinned numpy wheel for that Python (CAFFE_NUMPY_BUILD).
#   3. The `caffe` package beside the core: pycaffe's modules, _caffe, the
#      caffe command (_command.py, engine/wheel/caffe_command.py) and a link
#      to the core's libcaffe_tool.
#
# Usage: engine/build_pycaffe.sh --prefix DIR [--python PY] [--cuda-libs D] [--jobs N]
#   --prefix DIR    the install tree of a core build (build_caffe.sh's output)
#   --python PY     the interpreter (default: .venv/bin/python); it needs its
#                   C headers (Python.h), as python3-dev or a pyenv build has
#   --cuda-libs D   for a CUDA core: the folder of the nvidia-* wheels, for
#                   the CUDA headers libcaffe's headers include (also:
#                   CAFFE_CUDA_LIBS)
#   --jobs N        parallel compile jobs (default: nproc)
# Environment: CAFFE_CACHE (default: <repo>/.cache/caffe), CAFFE_APT_MIRROR.
# Prints the folder that holds the `caffe` package as the last line of stdout
# (DIR/../pycaffe/cpXY-KEY); a second run with the same inputs does nothing.
set -euo pipefail

ENGINE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$ENGINE_DIR")
# shellcheck source=engine/pins.sh
source "$ENGINE_DIR/pins.sh"
# shellcheck source=engine/apt_mirror.sh
source "$ENGINE_DIR/apt_mirror.sh"

prefix=""
python_exe="$ROOT/.venv/bin/python"
cuda_libs="${CAFFE_CUDA_LIBS:-}"
jobs=$(nproc)
cache="${CAFFE_CACHE:-$ROOT/.cache/caffe}"

die() { echo "build_pycaffe: error: $*" >&2; exit 1; }
log() { echo "build_pycaffe: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a DIR"; prefix="$2"; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; python_exe="$2"; shift ;;
    --cuda-libs) [ $# -ge 2 ] || die "--cuda-libs needs a folder"; cuda_libs="$2"; shift ;;
    --jobs) [ $# -ge 2 ] || die "--jobs needs N"; jobs="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

[ -n "$prefix" ] || die "--prefix is required: the install tree engine/build_caffe.sh printed"
# One build at a time in this cache: two runs for one interpreter would
# remove each other's files.
mkdir -p "$cache"
exec 9> "$cache/.build_pycaffe.lock"
flock 9
prefix=$(cd "$prefix" 2>/dev/null && pwd -P) || die "--prefix '$prefix' is not a folder"
share="$prefix/share/Caffe/pycaffe"
[ -f "$share/defines" ] && [ -f "$share/caffe/_caffe.cpp" ] \
  || die "$prefix has no share/Caffe/pycaffe (pycaffe's sources); it predates engine/build_pycaffe.sh: rebuild it with engine/build_caffe.sh"
[ -f "$prefix/lib/libcaffe.so" ] || die "$prefix has no lib/libcaffe.so"
[ -x "$python_exe" ] || die "no Python interpreter at '$python_exe' (pass --python)"

# --- the interpreter ----------------------------------------------------------
py_info=$("$python_exe" - <<'EOF'
import sys, sysconfig
print("%d.%d" % sys.version_info[:2])
print("%d.%d.%d" % sys.version_info[:3])
print(sysconfig.get_paths()["include"])
print(sys.implementation.name)
EOF
) || die "'$python_exe' does not run"
{ read -r py_version; read -r py_full; read -r py_include; read -r py_impl; } <<< "$py_info"
[ "$py_impl" = cpython ] || die "'$python_exe' is $py_impl; pycaffe is built for CPython"
[ -f "$py_include/Python.h" ] \
  || die "no Python.h in $py_include for '$python_exe': install its headers (Debian: apt-get install python${py_version}-dev; pyenv builds have them)"
py_tag="cp${py_version/./}"
py_key=$(cat "$py_include/patchlevel.h" "$py_include/pyconfig.h" | sha256sum | cut -c1-12)

# --- numpy's headers, from the pinned wheel for this Python -----------------
numpy_headers() {
  local dest="$cache/numpy-headers/$py_tag-${CAFFE_NUMPY_BUILD#numpy==}"
  if [ ! -f "$dest/.complete" ]; then
    local tmp; tmp=$(mktemp -d "${TMPDIR:-/tmp}/numpy-headers.XXXXXX")
    log "downloading $CAFFE_NUMPY_BUILD for $py_tag (its C headers)"
    "$ROOT/.venv/bin/python" -m pip download -q --no-deps --only-binary :all: --python-version "$py_version" \
      --implementation cp --abi "$py_tag" --platform manylinux2014_x86_64 -d "$tmp" "$CAFFE_NUMPY_BUILD" >&2 \
      || die "pip could not download $CAFFE_NUMPY_BUILD for $py_tag (needs .venv: scripts/setup.sh)"
    rm -rf "$dest" && mkdir -p "$dest"
    "$ROOT/.venv/bin/python" - "$tmp"/numpy-*.whl "$dest" <<'EOF' || die "could not unpack numpy's headers"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("numpy/_core/include/")])
EOF
    rm -rf "$tmp"
    touch "$dest/.complete"
  fi
  echo "$dest/numpy/_core/include"
}

# --- boost.python's source, as Debian and we patch it -----------------------
boost_source() {
  local dest="$cache/boost-python-src-$BOOST_DEB_VERSION"
  local patches_key; patches_key=$(cat "$ENGINE_DIR"/boost-patches/*.patch | sha256sum | cut -c1-12)
  if [ "$(cat "$dest/.complete" 2>/dev/null)" != "$patches_key" ]; then
    local dl="$cache/downloads/boost1.74-$BOOST_DEB_VERSION"
    if [ ! -f "$dl/.complete" ]; then
      rm -rf "$dl" && mkdir -p "$dl"
      apt_source_download "boost1.74=$BOOST_DEB_VERSION" "$BOOST_DEB_SUITE" "$dl" \
        || die "could not fetch Debian's boost1.74=$BOOST_DEB_VERSION source"
      echo "$BOOST_ORIG_SHA256  $dl/$BOOST_ORIG_TARBALL" | sha256sum -c --quiet - >&2 \
        || die "$BOOST_ORIG_TARBALL does not have the pinned sha256 $BOOST_ORIG_SHA256"
      echo "$BOOST_DEBIAN_SHA256  $dl/$BOOST_DEBIAN_TARBALL" | sha256sum -c --quiet - >&2 \
        || die "$BOOST_DEBIAN_TARBALL does not have the pinned sha256 $BOOST_DEBIAN_SHA256"
      touch "$dl/.complete"
    fi
    log "unpacking boost1.74 $BOOST_DEB_VERSION with Debian's patches (boost.python only is kept)"
    local tmp; tmp=$(mktemp -d "$cache/boost-src.XXXXXX")
    dpkg-source -x --no-check "$dl"/boost1.74_*.dsc "$tmp/src" > "$tmp/dpkg-source.log" 2>&1 \
      || { tail -n 20 "$tmp/dpkg-source.log" >&2; die "dpkg-source could not unpack $dl"; }
    for p in "$ENGINE_DIR"/boost-patches/*.patch; do
      patch -d "$tmp/src" -p1 --forward --batch --quiet < "$p" >&2 || die "boost patch $(basename "$p") does not apply"
    done
    rm -rf "$dest" && mkdir -p "$dest"
    mv "$tmp/src/libs/python/include" "$tmp/src/libs/python/src" "$tmp/src/LICENSE_1_0.txt" "$dest/"
    rm -rf "$dest/src/numpy" "$tmp"   # boost.numpy is not needed
    echo "$patches_key" > "$dest/.complete"
  fi
  echo "$dest"
}

# --- boost.python for this interpreter ---------------------------------------
# Its other Boost headers are Debian 12's libboost1.74-dev, the same version.
cxx_flags=(-std=c++14 -O2 -fPIC -DNDEBUG -DBOOST_ALL_NO_LIB -Wno-deprecated-declarations)
build_boost_python() {
  local src="$1" key dest lib
  key=$( { echo "$py_key $BOOST_DEB_VERSION ${cxx_flags[*]}"; cat "$src/.complete"; } | sha256sum | cut -c1-12)
  dest="$cache/boost-python/$py_tag-$key"
  lib="libboost_python${py_version/./}.so.1.74.0"
  if [ ! -f "$dest/.complete" ]; then
    log "compiling boost.python for Python $py_full ($python_exe) with $jobs jobs"
    rm -rf "$dest" && mkdir -p "$dest/obj" "$dest/lib"
    (cd "$src/src" && find . -name '*.cpp' -printf '%P\n' | sort) > "$dest/sources"
    export BP_SRC="$src" BP_DEST="$dest" BP_INCLUDE="$py_include"
    xargs -P "$jobs" -I{} sh -c 'o="$BP_DEST/obj/$(echo "{}" | tr / _ ).o"; \
        g++ '"${cxx_flags[*]}"' -DBOOST_PYTHON_SOURCE -DBOOST_PYTHON_DYN_LINK -I"$BP_SRC/include" -I"$BP_INCLUDE" \
            -c "$BP_SRC/src/{}" -o "$o" 2>> "$BP_DEST/build.log" || { echo "failed: {}" >> "$BP_DEST/build.log"; exit 255; }' \
      < "$dest/sources" || { grep -m 20 -B2 -A4 'error' "$dest/build.log" >&2; die "boost.python did not compile for $python_exe; log: $dest/build.log"; }
    # No libpython: the interpreter that loads it provides those symbols.
    g++ -shared -Wl,-soname,"$lib" -o "$dest/lib/$lib" "$dest"/obj/*.o >> "$dest/build.log" 2>&1 \
      || die "boost.python did not link; log: $dest/build.log"
    ln -sfn "$lib" "$dest/lib/libboost_python${py_version/./}.so"
    cp "$src/LICENSE_1_0.txt" "$dest/"
    rm -rf "$dest/obj"
    touch "$dest/.complete"
    # Older builds for this Python (other flags or patches) are superseded.
    find "$cache/boost-python" -mindepth 1 -maxdepth 1 -type d -name "$py_tag-*" ! -name "$(basename "$dest")" \
      -exec rm -rf {} +
  fi
  echo "$dest"
}

# --- the CUDA headers a CUDA core's headers include --------------------------
cuda_includes=()
if grep -qx -- '-DCPU_ONLY' "$share/defines"; then
  variant=cpu
else
  variant=cuda
  [ -n "$cuda_libs" ] || die "$prefix is a CUDA build: pass --cuda-libs <folder of the nvidia-* wheels it was built with>"
  for header in cuda_runtime.h cublas_v2.h curand.h cudnn.h nccl.h; do
    hit=$(find "$cuda_libs/nvidia" -name "$header" -print -quit 2>/dev/null)
    [ -n "$hit" ] || die "'$header' not found under $cuda_libs/nvidia; install the CUDA wheels (scripts/setup.sh --cuda)"
    cuda_includes+=(-I"$(dirname "$hit")")
  done
fi

# --- pycaffe ----------------------------------------------------------------
bsrc=$(boost_source)
bp=$(build_boost_python "$bsrc")
nphdr=$(numpy_headers)
mapfile -t defines < "$share/defines"
key=$( {
  echo "$py_key $variant ${cxx_flags[*]} $CAFFE_NUMPY_BUILD $(basename "$bp")"
  sha256sum "$prefix/lib/libcaffe.so" "$ENGINE_DIR/wheel/caffe_command.py"
  (cd "$share" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
} | sha256sum | cut -c1-12)
out="$(dirname "$prefix")/pycaffe/$py_tag-$key"
if [ -f "$out/.complete" ]; then
  log "pycaffe for $py_tag is up to date ($out)"
  echo "$out"
  exit 0
fi
log "compiling pycaffe's _caffe for Python $py_full against $prefix"
rm -rf "$out" && mkdir -p "$out"
cp -r "$share/caffe" "$out/caffe"
rm -f "$out/caffe/_caffe.cpp"
ext=$("$python_exe" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX") or ".so")')
# Caffe's headers expect Python.h first (its _POSIX_C_SOURCE).
g++ "${cxx_flags[@]}" "${defines[@]}" -DWITH_PYTHON_LAYER -DBOOST_PYTHON_DYN_LINK \
  -I"$bsrc/include" -I"$py_include" -I"$nphdr" -I"$prefix/include" -isystem /usr/include/hdf5/serial \
  "${cuda_includes[@]}" -c "$share/caffe/_caffe.cpp" -o "$out/_caffe.o" > "$out/build.log" 2>&1 \
  || { grep -m 20 -B2 -A6 'error' "$out/build.log" >&2; die "_caffe.cpp did not compile; log: $out/build.log"; }
bp_lib="$bp/lib/libboost_python${py_version/./}.so.1.74.0"
g++ -shared -o "$out/caffe/_caffe$ext" "$out/_caffe.o" "$prefix/lib/libcaffe.so" "$bp_lib" \
  -lboost_system -lglog -lgflags -lprotobuf -Wl,-rpath,"$prefix/lib:$bp/lib" >> "$out/build.log" 2>&1 \
  || { tail -n 20 "$out/build.log" >&2; die "_caffe did not link; log: $out/build.log"; }
rm -f "$out/_caffe.o"
cp "$ENGINE_DIR/wheel/caffe_command.py" "$out/caffe/_command.py"
ln -sfn "$prefix/lib/libcaffe_tool.so" "$out/caffe/libcaffe_tool.so"
# Where the interpreter has numpy (which _caffe imports), it loads the module
# alone (not the package, whose other needs it may lack) and finds both our
# layers: Unpooling from libcaffe, Python registered here.
if "$python_exe" -c 'import numpy' 2> /dev/null; then
  "$python_exe" -c 'import importlib.util, sys
spec = importlib.util.spec_from_file_location("_caffe", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
assert {"Python", "Unpooling"} <= set(module.layer_type_list()), module.layer_type_list()' "$out/caffe/_caffe$ext" \
    > /dev/null 2>> "$out/build.log" \
    || { tail -n 20 "$out/build.log" >&2; die "the built pycaffe does not import with $python_exe; log: $out/build.log"; }
fi
touch "$out/.complete"
# Older pycaffe builds of this Python against this core are superseded.
find "$(dirname "$prefix")/pycaffe" -mindepth 1 -maxdepth 1 -type d -name "$py_tag-*" ! -name "$(basename "$out")" \
  -exec rm -rf {} +
log "done: $out"
echo "$out"
