"""The Dockerfile passes hadolint (CI cannot run Docker) and builds Caffe
through the same script and flags as the local CUDA set-up."""
from __future__ import annotations

import subprocess

from helpers import ROOT, VENV_BIN, write


def hadolint(path) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "hadolint"), "--config", str(ROOT / ".hadolint.yaml"), str(path)],
                          capture_output=True, text=True, timeout=60)


def test_dockerfile_passes_hadolint():
    result = hadolint(ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = write(tmp_path / "Dockerfile", "FROM ubuntu:latest\nRUN cd /tmp && apt-get install -y git\n")
    result = hadolint(bad)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_dockerfile_uses_the_cuda_setup():
    text = (ROOT / "Dockerfile").read_text()
    assert "bash scripts/setup.sh --use-cuda" in text   # -> engine/build_caffe.sh --cuda
    assert "FROM nvidia/cuda:13.0" in text               # the nvcc 13 that CI compiles with
    assert "ARG CAFFE_COMMIT=9b89154" in text
