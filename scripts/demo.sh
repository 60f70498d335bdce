#!/usr/bin/env bash
# The main job (README): set-up, then the end-to-end demo on built-in data.
# Extra arguments go to the demo tool.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
exec .venv/bin/python tools/demo.py "$@"
