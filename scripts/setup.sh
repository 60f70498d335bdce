#!/usr/bin/env bash
# Sets the project up on a Debian 12 machine, as root, from nothing:
#   1. the apt packages Caffe builds against;
#   2. the virtualenv .venv (from the default python3) with requirements.txt
#      and this project installed in editable mode;
#   3. Caffe from its pinned source with our patches (engine/build_caffe.sh),
#      CPU_ONLY, then pycaffe for .venv's Python (engine/build_pycaffe.sh:
#      boost.python and the _caffe module, which registers Python layers);
#   4. `import caffe` in .venv, and a `caffe` command in .venv/bin (Caffe's
#      tool run inside .venv's Python, so that Python layers run).
# Every step is skipped when already done, so a second run takes seconds.
#
# Usage: scripts/setup.sh [--cuda | --use-cuda] [--cuda-arch LIST]
#   --cuda      also build the CUDA + cuDNN + NCCL variant (it compiles and
#               links without a GPU; it runs only where one exists), with
#               the CUDA 13.0 toolkit (nvcc) and cuBLAS, cuRAND, cuDNN and
#               NCCL from pinned PyPI wheels in .cache/cuda-wheels (CUDA_HOME
#               chooses another toolkit); .venv keeps using the CPU build
#   --use-cuda  build only the CUDA variant and make it the one .venv uses
#               (GPU machines, the Docker image)
#   --cuda-arch LIST  build the CUDA variant for these GPU architectures only
#               (e.g. "90"; see engine/build_caffe.sh --arch)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=engine/pins.sh
source engine/pins.sh

with_cuda=0
use_cuda=0
arch_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cuda) with_cuda=1 ;;
    --use-cuda) with_cuda=1; use_cuda=1 ;;
    --cuda-arch) [ $# -ge 2 ] || { echo "setup: --cuda-arch needs a LIST" >&2; exit 2; }
                 arch_args=(--arch "$2"); shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "setup: $*" >&2; }

# --- 1. apt packages --------------------------------------------------------
APT_PACKAGES=(
  build-essential cmake pkg-config patch ca-certificates
  python3 python3-dev python3-venv
  libboost-system-dev libboost-thread-dev libboost-filesystem-dev dpkg-dev
  libprotobuf-dev protobuf-compiler libgoogle-glog-dev libgflags-dev
  libhdf5-dev liblmdb-dev libopenblas-dev
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "setup: missing apt packages (${missing[*]}); run as root or install them" >&2; exit 1; }
  log "installing apt packages: ${missing[*]}"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# --- 2. virtualenv ----------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  log "creating .venv from $(command -v python3)"
  python3 -m venv .venv
fi
req_stamp=.venv/.requirements.sha256
# The editable install maps the top-level packages present when it runs (the
# Docker build installs the requirements before it copies the project).
req_hash=$( { cat requirements.txt pyproject.toml; ls -d ./*/__init__.py 2>/dev/null || true; } \
  | sha256sum | cut -d' ' -f1)
if [ "$(cat "$req_stamp" 2>/dev/null)" != "$req_hash" ]; then
  log "installing requirements.txt into .venv (log: .venv/pip.log)"
  { .venv/bin/python -m pip install --upgrade pip &&
    .venv/bin/python -m pip install -r requirements.txt &&
    .venv/bin/python -m pip install --no-deps -e . ; } > .venv/pip.log 2>&1 \
    || { tail -n 30 .venv/pip.log >&2; echo "setup: pip install failed; see .venv/pip.log" >&2; exit 1; }
  echo "$req_hash" > "$req_stamp"
fi

# --- 3. Caffe ---------------------------------------------------------------
if [ "$with_cuda" = 1 ]; then
  wheels=.cache/cuda-wheels
  wheel_stamp="$wheels/.installed"
  wanted="$CAFFE_CUDA_WHEELS $CAFFE_CUDA_TOOLKIT_WHEELS"
  if [ "$(cat "$wheel_stamp" 2>/dev/null)" != "$wanted" ]; then
    log "installing the CUDA toolkit and library wheels into $wheels"
    rm -rf "$wheels"
    # shellcheck disable=SC2086
    .venv/bin/python -m pip install --no-deps --target "$wheels" $wanted > .venv/pip-cuda.log 2>&1 \
      || { tail -n 30 .venv/pip-cuda.log >&2; echo "setup: CUDA wheel install failed; see .venv/pip-cuda.log" >&2; exit 1; }
    # CMake's FindCUDA looks for the unversioned runtime library.
    ln -sfn libcudart.so.13 "$wheels/nvidia/cu13/lib/libcudart.so"
    echo "$wanted" > "$wheel_stamp"
  fi
  cuda_prefix=$(engine/build_caffe.sh --cuda "${arch_args[@]}" --cuda-libs "$ROOT/$wheels" | tail -n 1)
fi
if [ "$use_cuda" = 1 ]; then
  prefix=$cuda_prefix
  pycaffe=$(engine/build_pycaffe.sh --prefix "$prefix" --cuda-libs "$ROOT/$wheels" --python "$ROOT/.venv/bin/python" | tail -n 1)
else
  prefix=$(engine/build_caffe.sh | tail -n 1)
  pycaffe=$(engine/build_pycaffe.sh --prefix "$prefix" --python "$ROOT/.venv/bin/python" | tail -n 1)
fi

# --- 4. pycaffe and the caffe command in .venv ------------------------------
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$pycaffe" > "$site/caffe_engine.pth"
cat > .venv/bin/caffe.tmp <<WRAP
#!/usr/bin/env bash
# Caffe's command-line tool (libcaffe_tool of $prefix), run inside this
# virtualenv's Python by pycaffe's caffe._command, so that Python layers
# (python_layers.*) run in this interpreter with its packages.
venv=\$(cd "\$(dirname "\${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$ROOT\${PYTHONPATH:+:\$PYTHONPATH}"
exec "\$venv/bin/python" -m caffe._command "\$@"
WRAP
chmod +x .venv/bin/caffe.tmp && mv .venv/bin/caffe.tmp .venv/bin/caffe

log "ready: .venv/bin/python -c 'import caffe', .venv/bin/caffe"
