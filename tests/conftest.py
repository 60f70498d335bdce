"""Fixtures (the built Caffe, a Docker engine) and the test tiers: ``slow``
tests run unless deselected with -m "not slow"; ``gpu`` tests run where an
NVIDIA GPU is present and are deselected, with a line saying so, where none
is; ``docker_image`` tests (the image's build and what runs in it) run only
when asked for, with DECONVNET_TESTS=all or -m docker_image: CI's run
leaves them out to stay within its time (docs/BENCHMARKS.md, "CI from
nothing")."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from docker_engine import LABEL, RUN_DIR, existing_engine, own_mounts, own_processes, start_engine
from helpers import CAFFE_CACHE, SETUP_HINT, docker_image_tier

# Caffe logs to stderr through glog; keep test output readable.
os.environ.setdefault("GLOG_minloglevel", "2")


def gpu_present() -> bool:
    """An NVIDIA GPU and its driver answer nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and "GPU " in listed.stdout


def _deselect(config: pytest.Config, items: list[pytest.Item], marker: str, note: str) -> None:
    chosen = [item for item in items if item.get_closest_marker(marker)]
    if chosen:
        config.hook.pytest_deselected(items=chosen)
        items[:] = [item for item in items if not item.get_closest_marker(marker)]
        config._deconvnet_notes = getattr(config, "_deconvnet_notes", []) + [f"{len(chosen)} {note}"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not gpu_present():
        _deselect(config, items, "gpu", "gpu test(s) deselected: no NVIDIA GPU answers nvidia-smi on this machine")
    if not docker_image_tier(config):
        _deselect(config, items, "docker_image", "docker_image test(s) deselected: the image's build is not in "
                  "this run (DECONVNET_TESTS=all bash scripts/test.sh runs them)")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    for note in getattr(config, "_deconvnet_notes", []):
        terminalreporter.write_line(note)


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


@pytest.fixture(scope="session")
def cuda_prefix() -> Path:
    prefix = CAFFE_CACHE / "cuda" / "install"
    assert (prefix / "bin" / "caffe").exists(), f"no CUDA Caffe build at {prefix}; run scripts/setup.sh --cuda"
    return prefix


@pytest.fixture(scope="module")
def engine():
    """A Docker engine for one test module (docker_engine.py): the running
    one, or a daemon of our own that is stopped at the end, after which
    neither it nor any container of ours is left."""
    found = existing_engine()
    engine = found or start_engine()
    yield engine
    leftover = engine.run("ps", "-aq", "--filter", f"label={LABEL}").stdout.split()
    if leftover:
        engine.run("rm", "-f", *leftover)
    engine.stop()
    assert not leftover, f"containers left running: {leftover}"
    if found is None:
        assert not own_processes(), f"daemon processes left: {own_processes()}"
        assert not own_mounts() and not RUN_DIR.exists(), f"left behind: {own_mounts()}, {RUN_DIR}"
