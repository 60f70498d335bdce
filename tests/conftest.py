"""Shared fixtures: the built Caffe, and small helpers to write nets."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Caffe logs to stderr through glog; keep test output readable.
os.environ.setdefault("GLOG_minloglevel", "2")

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
CAFFE_CACHE = Path(os.environ.get("CAFFE_CACHE", ROOT / ".cache" / "caffe"))
SETUP_HINT = "run scripts/setup.sh first"


@pytest.fixture(scope="session")
def caffe():
    import caffe as caffe_module

    caffe_module.set_mode_cpu()
    return caffe_module


@pytest.fixture(scope="session")
def cpu_prefix() -> Path:
    prefix = CAFFE_CACHE / "cpu" / "install"
    assert (prefix / "bin" / "caffe").exists(), f"no CPU Caffe build at {prefix}; {SETUP_HINT}"
    return prefix


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_python(code: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter: Caffe CHECK failures abort the process."""
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
