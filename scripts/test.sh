#!/usr/bin/env bash
# The test command (README, .ci/run): full set-up, including the compile and
# link of the CUDA variant so that a broken .cu file fails, then the tests.
# Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh --cuda
exec .venv/bin/python -m pytest -ra "$@"
