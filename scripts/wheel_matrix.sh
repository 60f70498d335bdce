#!/usr/bin/env bash
# The whole wheel matrix: CPU and CUDA wheels for every CPython of
# CAFFE_PYTHONS (engine/pins.sh, 3.10 to 3.13), each checked with ldd
# against the manylinux policy and installed and run in a bare container of
# its Python (tests/test_wheels.py, which CI runs for a subset: CPU 3.11 and
# 3.12, CUDA 3.11). Each variant's core is compiled once; each Python adds
# its pycaffe. Prints pytest's summary and the wall time.
#
# Usage: scripts/wheel_matrix.sh [PYTEST ARGS...]   (e.g. -k cpu)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
case "${1:-}" in -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
# shellcheck source=engine/pins.sh
source engine/pins.sh
bash scripts/setup.sh >&2
started=$(date +%s)
status=0
DECONVNET_WHEEL_PYTHONS="$CAFFE_PYTHONS" DECONVNET_CUDA_WHEEL_PYTHONS="$CAFFE_PYTHONS" \
  .venv/bin/python -m pytest -ra -p no:cacheprovider tests/test_wheels.py "$@" || status=$?
echo "wheel_matrix: Pythons $CAFFE_PYTHONS, CPU and CUDA: $(( $(date +%s) - started )) s, pytest status $status" >&2
exit "$status"
