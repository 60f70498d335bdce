#!/usr/bin/env bash
# The test command (README, .ci/run): full set-up, including the compile and
# link of the CUDA variant so that a broken .cu file fails, then the lint
# gate (ruff, mypy) and the tests. Extra arguments go to pytest, e.g.
# -m "not slow" for the quick tier.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh --cuda
echo "test: ruff check" >&2
.venv/bin/ruff check .
echo "test: mypy" >&2
.venv/bin/mypy
exec .venv/bin/python -m pytest -ra "$@"
