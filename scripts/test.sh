#!/usr/bin/env bash
# The test command (README, .ci/run): set-up, the lint gate (ruff, mypy),
# then the tests. Extra arguments go to pytest, e.g. -m "not slow" for the
# quick tier. Each Caffe variant is compiled once per run: the CPU variant
# here (shared by .venv, the tests and the CPU wheel); the CUDA variant by
# tests/test_wheels.py for sm_90 alone (shared by the CUDA wheel and the GPU
# kit), or, with DECONVNET_TESTS=all, by the Docker image build of
# tests/test_docker.py for every pinned architecture, which the wheel and
# the kit then copy out of the image. CI's run leaves the image out (its
# 40-minute compile would take CI from nothing past 60 minutes on 2 cores;
# docs/BENCHMARKS.md). Where an NVIDIA GPU answers nvidia-smi, the CUDA
# variant is also built here, for the gpu tests.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if command -v nvidia-smi > /dev/null && nvidia-smi -L 2> /dev/null | grep -q "^GPU "; then
  bash scripts/setup.sh --cuda
else
  bash scripts/setup.sh
fi
echo "test: ruff check" >&2
.venv/bin/ruff check .
echo "test: mypy" >&2
.venv/bin/mypy
exec .venv/bin/python -m pytest -ra "$@"
