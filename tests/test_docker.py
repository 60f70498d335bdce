"""The Dockerfile: hadolint, and a real build on a Docker engine (the running
one, or a daemon of our own; see docker_engine.py) with five checks inside
the image, plus the CUDA build it holds. The build compiles the CUDA variant
with the same script and flags as scripts/setup.sh --cuda: CI's compile of
the pinned architectures (test_wheels.py compiles sm_90 alone on the host)."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from deconvnet.data.voc import write_indexed_png

from docker_engine import DATA_ROOT, DockerEngine, build_project_image
from helpers import ROOT, VENV_BIN, write

CAFFE_PINS = "/opt/deconvnet/engine/pins.sh"


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


def test_dockerfile_builds_through_the_setup_script():
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=debian:bookworm" in text
    assert "RUN bash scripts/setup.sh --use-cuda" in text   # -> engine/build_caffe.sh --cuda
    assert "git clone" not in text


@pytest.fixture(scope="module")
def image(engine: DockerEngine) -> str:
    tag, record = build_project_image(engine)
    with open(DATA_ROOT / "build-times.log", "a") as times:   # kept beside the layer cache
        times.write(record + "\n")
    print("\n" + record)
    return tag


@pytest.mark.slow
@pytest.mark.docker_image
def test_pycaffe_has_the_unpooling_layer(engine, image):
    out = engine.run_container(image, "python -c \"import caffe; assert 'Unpooling' in caffe.layer_type_list()\"")
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.docker_image
def test_caffe_command(engine, image):
    out = engine.run_container(image, "caffe --version")
    assert out.returncode == 0 and "caffe version 1.0.0" in out.stdout + out.stderr, out.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.docker_image
def test_device_query_without_a_gpu_fails_clearly(engine, image):
    out = engine.run_container(image, "caffe device_query -gpu 0")
    # A message and exit status 1, not a CHECK failure's abort (134) and stack trace.
    assert out.returncode == 1, (out.returncode, out.stderr[-3000:])
    assert "no usable NVIDIA GPU" in out.stderr and "--gpus all" in out.stderr, out.stderr[-3000:]
    assert "Check failed" not in out.stderr and "stack trace" not in out.stderr


@pytest.mark.slow
@pytest.mark.docker_image
def test_quick_demo_in_the_image(engine, image):
    """The CUDA build on the CPU: cuDNN layers are chosen only in GPU mode."""
    out = engine.run_container(image, "python tools/demo.py --quick --out /tmp/demo && cat /tmp/demo/report.md")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "mean IoU" in out.stdout or "mIoU" in out.stdout, out.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.docker_image
def test_eval_voc_in_the_image(engine, image, tmp_path):
    # The hand-computed case of test_eval_voc: IoU bkg 2/5, aeroplane 3/5, person 1/2.
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    write_indexed_png(gt_dir / "a.png", np.array([[0, 0, 1, 1], [255, 1, 1, 0]], np.uint8))
    write_indexed_png(gt_dir / "b.png", np.array([[15, 15]], np.uint8))
    write_indexed_png(pred_dir / "a.png", np.array([[0, 1, 1, 1], [15, 1, 0, 0]], np.uint8))
    write_indexed_png(pred_dir / "b.png", np.array([[15, 0]], np.uint8))
    out = engine.run_container(image, "python tools/eval_voc.py --gt-dir /fixture/gt --pred-dir /fixture/pred "
                   "--json /fixture/scores.json", f"{tmp_path}:/fixture")
    assert out.returncode == 0, out.stderr[-3000:]
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["mean_iou"] == pytest.approx((2 / 5 + 3 / 5 + 1 / 2) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(6 / 9)


@pytest.mark.slow
@pytest.mark.docker_image
def test_image_holds_the_cuda_build(engine, image):
    """Device code for every pinned architecture, PTX, our kernels, the
    pinned toolkit, and every CUDA library resolved inside the image."""
    script = f"""set -e
. {CAFFE_PINS}
lib=$(ls /opt/deconvnet/.cache/caffe/cuda/install/lib/libcaffe.so.*)
tool=$(find /opt/deconvnet/.cache/cuda-wheels -name cuobjdump)
echo "ARCHS $CAFFE_CUDA_ARCH_BIN"
$tool --list-elf "$lib" | sed 's/^/ELF /'
$tool --list-ptx "$lib" | sed 's/^/PTX /'
$tool --dump-elf-symbols "$lib" | grep -oE 'Unpool(Forward|Backward)' | sort -u | sed 's/^/KERNEL /'
ldd "$lib" | sed 's/^/LDD /'
grep CUDA_TOOLKIT_ROOT_DIR_INTERNAL /opt/deconvnet/.cache/caffe/cuda/CMakeCache.txt
ls -d /opt/deconvnet/.cache/caffe/cuda/build /opt/deconvnet/.cache/caffe/cuda/src 2>/dev/null | sed 's/^/TREE /'
dpkg -l | awk '$2 ~ /-dev(:|$)/ {{print "DEV " $2}}'
ls /var/lib/apt/lists | grep -v -e '^lock$' -e '^partial$' | sed 's/^/APTLIST /' || true
"""
    out = engine.run_container(image, script)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    archs = next(line for line in lines if line.startswith("ARCHS")).split()[1:]
    assert archs == ["80", "86", "89", "90"]
    elves = "\n".join(line for line in lines if line.startswith("ELF"))
    for arch in archs:
        assert f"sm_{arch}" in elves, f"no sm_{arch} code in libcaffe"
    assert any(line.startswith("PTX") and "sm_90" in line for line in lines), "no PTX for newer GPUs"
    assert {"KERNEL UnpoolForward", "KERNEL UnpoolBackward"} <= set(lines)
    for name in ("libcudart.so", "libcublas.so", "libcurand.so", "libcudnn.so", "libnccl.so"):
        linked = [line for line in lines if line.startswith("LDD") and name in line]
        assert linked and "/opt/deconvnet/.cache/" in linked[0], f"{name} not resolved: {linked}"
    assert "CUDA_TOOLKIT_ROOT_DIR_INTERNAL:INTERNAL=/opt/deconvnet/.cache/cuda-wheels/nvidia/cu13" in lines
    # Run-time image: no build trees, -dev packages or apt lists.
    assert not [line for line in lines if line.startswith(("TREE", "DEV", "APTLIST"))], lines
