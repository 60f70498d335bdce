#!/usr/bin/env bash
# The test command (README, .ci/run): set-up, the lint gate (ruff, mypy),
# then the tests. Extra arguments go to pytest, e.g. -m "not slow" for the
# quick tier. Each Caffe variant is compiled once per run: the CPU variant
# here (shared by .venv, the tests and the CPU wheel), the CUDA variant by
# the Docker image build of tests/test_docker.py (scripts/setup.sh
# --use-cuda inside it), whose build tests/test_wheels.py copies out for the
# CUDA wheel and the GPU kit. Where an NVIDIA GPU answers nvidia-smi, the
# CUDA variant is also built here, for the gpu tests.
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
