#!/usr/bin/env bash
# Usage: docker/prune.sh ROOT LIST
# The Docker build's last step: removes from the set-up tree ROOT what only
# the build needed (Caffe's build and source trees, the source tarball, the
# CUDA compiler), keeping CMakeCache.txt beside each install as a record, and
# writes to LIST the Debian packages whose shared libraries the rest loads,
# so that the runtime stage installs those and no -dev packages.
set -euo pipefail
root=$1 list=$2
cd "$root"

for work in .cache/caffe/*-*/; do
  [ -f "$work/build/CMakeCache.txt" ] && mv "$work/build/CMakeCache.txt" "$work/"
  # Caffe's licence stays beside the install: the wheels made from it carry it.
  if [ -f "$work/src/LICENSE" ]; then cp "$work/src/LICENSE" "$work/LICENSE"; fi
  rm -rf "$work/build" "$work/src"
done
# Downloads and boost.python's source and numpy's headers (per-Python builds
# fetch them again); boost.python's libraries stay: pycaffe loads them.
rm -rf .cache/caffe/downloads .cache/caffe/boost-python-src-* .cache/caffe/numpy-headers
# The CUDA toolkit minus what runs: cudart (in lib/) and cuobjdump, which
# lists the compiled architectures; and its headers minus CCCL's (the C++
# ones pycaffe for another Python compiles with).
tk=.cache/cuda-wheels/nvidia/cu13
if [ -d "$tk" ]; then
  find "$tk/bin" -mindepth 1 ! -name cuobjdump -exec rm -rf {} +
  rm -rf "$tk/nvvm" "$tk/include/cccl" "$tk"/lib/*.a "$tk"/lib/libnvvm.so*
fi
find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Every shared library that the ELF files under ROOT load from the system,
# mapped to its package (merged /usr: dpkg may know either path).
elf_files() {
  find . -type f \( -name '*.so' -o -name '*.so.*' -o -perm -u+x \) -print0
}
system_libs() {  # the absolute paths ldd resolves outside ROOT
  elf_files | while IFS= read -r -d '' f; do ldd "$f" 2>/dev/null || true; done \
    | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | grep -v "^$root/" || true
}
system_libs | while read -r lib; do
  dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null \
    || dpkg -S "/usr$lib" 2>/dev/null || echo "prune: no package owns $lib" >&2
done | cut -d: -f1 | sort -u > "$list"
# The interpreter of .venv and the CA bundle are not shared libraries.
printf '%s\n' python3 ca-certificates >> "$list"
echo "prune: runtime packages: $(tr '\n' ' ' < "$list")"
