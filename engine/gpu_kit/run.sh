#!/usr/bin/env bash
# DeconvNet GPU kit: measures our CUDA Caffe (built for sm_90), the Python
# pipeline on it, and the same network in PyTorch on one GPU, offline. Needs
# the NVIDIA driver and a CPython 3.12 whose site-packages hold the CUDA
# wheels (nvidia-cuda-runtime, nvidia-cublas, nvidia-curand,
# nvidia-cudnn-cu13, nvidia-nccl-cu13) and the packages of ASSUMED_PACKAGES
# (the lent machine's), and torch for the PyTorch side. Steps, each stopping
# the kit with a clear message when it fails:
#   1. find those libraries, and check that every library of the kit loads;
#      install the kit's wheels (wheels/: our Caffe for cp312, pydensecrf2,
#      lmdb, protobuf) with pip --no-index --target site/, and import the
#      pipeline with them; read a batch through the Python data layer;
#      tools/infer.py on the CPU for --cpu-images images (the ratio's side);
#   2. the first GPU call, caffe device_query;
#   3. the Unpooling layer's gtest cases (CPU and GPU);
#   4. caffe time of the full DeconvNet at batch 8, and of 50 proposals
#      with the deploy net and with its folded twin (tools/fold_bn.py);
#   5. caffe train -gpu for --iterations updates of batch 8 x iter_size 8,
#      from DummyData; then tools/train.py (stage 2, the full net) for
#      --train-updates updates with the Python data layer reading the kit's
#      crop LMDB; and tools/infer.py (folded net, 50 proposals, dense CRF)
#      on the kit's 20 images of 500x375 on the GPU;
#   6. PyTorch on the same architecture and GPU (skipped without torch);
#   7. results/results.json and results/results.md.
#
# Usage: ./run.sh [--python PY] [--gpu N] [--iterations N] [--train-updates N] [--cpu-images N] [--out DIR]
#   --python PY         the Python with the nvidia-* wheels (default: python3)
#   --gpu N             the GPU (default: 0)
#   --iterations N      C++ training updates and timed passes (default: 20)
#   --train-updates N   tools/train.py updates (default: 6; the first 2 are not timed)
#   --cpu-images N      images tools/infer.py segments on the CPU (default: 3)
#   --out DIR           results folder (default: ./results beside run.sh)
set -euo pipefail
KIT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=python3
gpu=0
iterations=20
train_updates=6
cpu_images=3
out="$KIT/results"
die() { echo "run.sh: error: $*" >&2; exit 1; }
log() { echo "run.sh: $*" >&2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python="$2"; shift ;;
    --gpu) gpu="$2"; shift ;;
    --iterations) iterations="$2"; shift ;;
    --train-updates) train_updates="$2"; shift ;;
    --cpu-images) cpu_images="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[[ "$gpu" =~ ^[0-9]+$ ]] || die "--gpu takes a device number, not '$gpu'"
for value in "$iterations" "$train_updates" "$cpu_images"; do
  [[ "$value" =~ ^[1-9][0-9]*$ ]] || die "--iterations, --train-updates and --cpu-images take positive numbers, not '$value'"
done
mkdir -p "$out"
out=$(cd "$out" && pwd)

# --- 1. the libraries ---------------------------------------------------------
[ "$(uname -m)" = x86_64 ] || die "the kit is built for x86-64 Linux, not $(uname -m)"
need_glibc=$(cat "$KIT/GLIBC_REQUIRED")
have_glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$need_glibc" "${have_glibc:-0}" | sort -V | head -n 1)" != "$need_glibc" ]; then
  die "the kit needs glibc $need_glibc or newer; this machine has ${have_glibc:-an unknown one}"
fi
command -v "$python" > /dev/null || die "no Python '$python'; pass --python /path/to/python (the one with the nvidia-* wheels)"
site_dirs=$("$python" -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))' 2>/dev/null) \
  || die "'$python' does not run"
# soname, then the wheel that holds it, as "pip install" takes it.
WANTED="libcudart.so.13 nvidia-cuda-runtime
libcublas.so.13 nvidia-cublas
libcublasLt.so.13 nvidia-cublas
libcurand.so.10 nvidia-curand
libcudnn.so.9 nvidia-cudnn-cu13
libnccl.so.2 nvidia-nccl-cu13"
lib_dirs=""
missing=""
while read -r soname wheel; do
  hit=""
  while IFS= read -r dir; do
    [ -d "$dir/nvidia" ] || continue
    hit=$(find "$dir/nvidia" -maxdepth 3 -name "$soname" -print -quit 2>/dev/null)
    [ -z "$hit" ] || break
  done <<< "$site_dirs"
  if [ -z "$hit" ]; then
    missing="$missing $wheel"
  else
    case ":$lib_dirs:" in *":$(dirname "$hit"):"*) ;; *) lib_dirs="$lib_dirs:$(dirname "$hit")" ;; esac
  fi
done <<< "$WANTED"
if [ -n "$missing" ]; then
  die "$python's site-packages lack the CUDA libraries of:$(echo "$missing" | tr ' ' '\n' | sort -u | tr '\n' ' ')- install them with pip (versions: $KIT/CUDA_WHEELS) or pass --python"
fi
export LD_LIBRARY_PATH="${lib_dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log "CUDA libraries from ${lib_dirs#:}"
for elf in "$KIT"/bin/* "$KIT"/lib/*; do
  unresolved=$(ldd "$elf" 2>&1 | grep "not found" || true)
  [ -z "$unresolved" ] || die "$(basename "$elf") cannot load: $unresolved"
done
export GLOG_logtostderr=1

# --- 1b. the kit's wheels and the Python pipeline -------------------------------
py_version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$py_version" = "$(cat "$KIT/PYTHON_VERSION")" ] \
  || die "$python is Python $py_version; the kit's wheels are for $(cat "$KIT/PYTHON_VERSION") (pass --python)"
site="$KIT/site"
if [ ! -f "$site/.installed" ]; then
  rm -rf "$site"
  "$python" -m pip install --no-index --no-deps --target "$site" "$KIT"/wheels/*.whl > "$out/pip.log" 2>&1 \
    || { tail -n 20 "$out/pip.log" >&2; die "pip could not install the kit's wheels; see $out/pip.log"; }
  touch "$site/.installed"
fi
log "installed the kit's wheels into $site: $(cd "$KIT/wheels" && ls | sed 's/-[0-9].*//' | tr '\n' ' ')"
export PYTHONPATH="$site:$KIT/project${PYTHONPATH:+:$PYTHONPATH}"
# shellcheck disable=SC2046  # one package name per word
missing=$("$python" -c 'import importlib.util, sys
modules = {"opencv-python-headless": "cv2", "pillow": "PIL", "scikit-image": "skimage"}
print(" ".join(p for p in sys.argv[1:] if importlib.util.find_spec(modules.get(p, p)) is None))' \
  $(cat "$KIT/ASSUMED_PACKAGES"))
[ -z "$missing" ] || die "$python lacks packages the kit expects the machine to have: $missing (pip install them)"
"$python" "$KIT/project/deconvnet/bench/gpu_kit_checks.py" imports > "$out/imports.log" 2>&1 \
  || { tail -n 20 "$out/imports.log" >&2; die "the pipeline does not import with the kit's wheels; see $out/imports.log"; }
log "$(tail -n 1 "$out/imports.log")"
cd "$KIT/project"
"$python" "$KIT/project/deconvnet/bench/gpu_kit_checks.py" data-layer "$out" > "$out/data_layer.log" 2>&1 \
  || { tail -n 20 "$out/data_layer.log" >&2; die "the Python data layer could not read the kit's LMDB; see $out/data_layer.log"; }
log "$(tail -n 1 "$out/data_layer.log")"
# tools/infer.py with the folded net, 50 proposals and the CRF.
infer() {  # infer NAME [--gpu N] -- IMAGES...
  local name=$1 device=()
  shift
  while [ "$1" != -- ]; do device+=("$1"); shift; done
  shift
  "$python" tools/infer.py --model prototxt/deconvnet_deploy_folded.prototxt --weights data/no_weights.caffemodel \
    --allow-missing-weights --top-k 50 --crf --edges gradient --proposal-cache data/proposals \
    --out "$out/$name" --overwrite --timings "$out/$name.json" "${device[@]}" "$@" > "$out/$name.log" 2>&1 \
    || { tail -n 20 "$out/$name.log" >&2; die "tools/infer.py ($name) failed; see $out/$name.log"; }
}
mapfile -t images < <(find data/infer_images -name '*.jpg' | sort)
log "tools/infer.py on the CPU: $cpu_images images"
infer infer_cpu -- "${images[@]:0:$cpu_images}"
log "CPU $(grep -o 'per image: .*' "$out/infer_cpu.log" | tail -n 1)"
cd "$KIT"

# Keeps the nvidia-smi samples of memory.used while a command runs.
watch_memory() {  # watch_memory CSV COMMAND...
  local csv=$1; shift
  local poller=""
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$gpu" -lms 200 > "$csv" 2>/dev/null &
    poller=$!
    sleep 0.5
  fi
  local status=0
  "$@" || status=$?
  if [ -n "$poller" ]; then kill "$poller" 2>/dev/null || true; wait "$poller" 2>/dev/null || true; fi
  return $status
}

# --- 2. the first GPU call -----------------------------------------------------
log "caffe device_query -gpu $gpu"
if ! "$KIT/bin/caffe" device_query -gpu "$gpu" > "$out/device_query.log" 2>&1; then
  grep -v '^\*\*\*\|^    @' "$out/device_query.log" | tail -n 5 >&2
  die "stopped at the first GPU call (caffe device_query -gpu $gpu): no usable GPU or NVIDIA driver here; see $out/device_query.log"
fi
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader -i "$gpu" > "$out/gpu.txt" 2>/dev/null || true
else
  grep -o 'Name: .*' "$out/device_query.log" | head -n 1 | cut -d' ' -f2- > "$out/gpu.txt" || true
fi
log "GPU: $(head -n 1 "$out/gpu.txt")"

# --- 3. the Unpooling gtest ------------------------------------------------------
log "Unpooling gtest (CPU and GPU cases)"
"$KIT/bin/test.testbin" --gtest_filter='*Unpooling*' "$gpu" > "$out/gtest.log" 2>&1 \
  || { tail -n 20 "$out/gtest.log" >&2; die "the Unpooling gtest failed; see $out/gtest.log"; }

# --- 4. caffe time ---------------------------------------------------------------
cd "$KIT/prototxt"
log "caffe time: full DeconvNet, batch 8, forward and backward"
watch_memory "$out/memory_time_b8.csv" "$KIT/bin/caffe" time -model benchmark_train_b8.prototxt -gpu "$gpu" \
  -iterations "$iterations" > "$out/time_train_b8.log" 2>&1 \
  || { tail -n 20 "$out/time_train_b8.log" >&2; die "caffe time failed; see $out/time_train_b8.log"; }
log "caffe time: 50 proposals in one batch"
watch_memory "$out/memory_forward_b50.csv" "$KIT/bin/caffe" time -model benchmark_forward_b50.prototxt -gpu "$gpu" \
  -iterations "$iterations" > "$out/time_forward_b50.log" 2>&1 \
  || { tail -n 20 "$out/time_forward_b50.log" >&2; die "caffe time failed; see $out/time_forward_b50.log"; }
log "caffe time: 50 proposals in one batch, BatchNorm folded"
watch_memory "$out/memory_forward_b50_folded.csv" "$KIT/bin/caffe" time -model benchmark_forward_b50_folded.prototxt \
  -gpu "$gpu" -iterations "$iterations" > "$out/time_forward_b50_folded.log" 2>&1 \
  || { tail -n 20 "$out/time_forward_b50_folded.log" >&2; die "caffe time failed; see $out/time_forward_b50_folded.log"; }

# --- 5. caffe train --------------------------------------------------------------
sed "s/^max_iter: .*/max_iter: $iterations/" benchmark_solver.prototxt > "$out/solver.prototxt"
cp benchmark_train_b8.prototxt "$out/"
log "caffe train: $iterations updates of batch 8 x iter_size 8"
(cd "$out" && watch_memory "$out/memory_train.csv" "$KIT/bin/caffe" train -solver solver.prototxt -gpu "$gpu" \
  > "$out/train.log" 2>&1) \
  || { tail -n 20 "$out/train.log" >&2; die "caffe train failed; see $out/train.log"; }

log "tools/train.py: $train_updates updates of the full net, Python data layer (stage 2)"
(cd "$KIT/project" && watch_memory "$out/memory_train_python.csv" "$python" tools/train.py --stage 2 \
  --solver2 prototxt/stage2_solver.prototxt --weights data/no_weights.caffemodel --allow-missing-weights \
  --run-dir "$out/train_python" --max-iter "$train_updates" --log-interval 1 --gpu "$gpu" \
  > "$out/train_python.log" 2>&1) \
  || { tail -n 20 "$out/train_python.log" >&2; die "tools/train.py failed; see $out/train_python.log"; }
log "tools/infer.py on the GPU: ${#images[@]} images"
(cd "$KIT/project" && watch_memory "$out/memory_infer_gpu.csv" infer infer_gpu --gpu "$gpu" -- "${images[@]}")
log "GPU $(grep -o 'per image: .*' "$out/infer_gpu.log" | tail -n 1)"

# --- 6. PyTorch ------------------------------------------------------------------
if "$python" -c "import torch" 2>/dev/null; then
  log "PyTorch: the same network on the same GPU"
  PYTHONPATH="$KIT/project" "$python" -m deconvnet.bench.torch_benchmark --device "cuda:$gpu" \
    --iterations "$(( iterations < 5 ? iterations : 5 ))" --json "$out/torch.json" > "$out/torch.log" 2>&1 \
    || { tail -n 20 "$out/torch.log" >&2; die "the PyTorch benchmark failed; see $out/torch.log"; }
else
  log "no torch in $python: the PyTorch column stays empty"
fi

# --- 7. the report ---------------------------------------------------------------
cp "$KIT/project/data/proposals/proposals.json" "$out/proposals_on_the_kit_builder.json"
PYTHONPATH="$KIT/project" "$python" -m deconvnet.bench.gpu_kit_report "$out"
log "wrote $out/results.json and $out/results.md"
