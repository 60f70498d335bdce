"""Paths and small helpers the tests share (imported as ``helpers``; the
fixtures are in conftest.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
CAFFE_CACHE = Path(os.environ.get("CAFFE_CACHE", ROOT / ".cache" / "caffe"))
SETUP_HINT = "run scripts/setup.sh first"
# The caffe command the CLI tests run; test_wheels.py points it at a wheel's.
CAFFE_COMMAND = os.environ.get("DECONVNET_CAFFE_COMMAND", str(VENV_BIN / "caffe"))


def synthetic_roots(root: Path, num_images: int, seed: int) -> tuple[Path, Path]:
    """Writes the built-in synthetic dataset under root; its VOC and SBD folders."""
    from deconvnet.data.synthetic import SyntheticSpec, write_dataset

    write_dataset(root, SyntheticSpec(num_images=num_images, seed=seed))
    return root / "VOCdevkit" / "VOC2012", root / "benchmark_RELEASE" / "dataset"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_python(code: str, cwd: Path, timeout: float = 120, python: str = sys.executable,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter: Caffe CHECK failures abort the process."""
    env = dict(os.environ if env is None else env, GLOG_minloglevel="0", GLOG_logtostderr="1")
    return subprocess.run([python, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def apt_install(*packages: str) -> None:
    """Installs the Debian packages that are missing (needs root)."""
    missing = [p for p in packages
               if "ok installed" not in subprocess.run(["dpkg-query", "-W", "-f=${Status}", p],
                                                       capture_output=True, text=True).stdout]
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"the tests need {' '.join(missing)}; install them as root (apt-get install)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def run_find_python(version: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """engine/find_python.sh's find_python X.Y, as the wheel script runs it."""
    return subprocess.run(["bash", "-c", f"source engine/find_python.sh && find_python {version}"], cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, **(env or {})))


def docker_image_tier(config) -> bool:
    """Whether this pytest run builds the Docker image (DECONVNET_TESTS=all or
    -m docker_image), and so takes the wheels' CUDA build from it."""
    return os.environ.get("DECONVNET_TESTS") == "all" or "docker_image" in (config.getoption("-m") or "")


def voc_mean_iou_by_hand(gt_dir: Path, pred_dir: Path, ids: list[str]) -> float:
    """VOC's measure written out with numpy, as the tests' independent
    reference: one confusion matrix over the images' label PNGs, void (255)
    skipped, the mean over classes that occur."""
    import numpy as np
    from PIL import Image

    cm = np.zeros((21, 21), np.int64)
    for image_id in ids:
        gt = np.array(Image.open(gt_dir / f"{image_id}.png")).astype(int)
        pred = np.array(Image.open(pred_dir / f"{image_id}.png")).astype(int)
        keep = gt != 255
        cm += np.bincount(gt[keep] * 21 + pred[keep], minlength=441).reshape(21, 21)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))
