"""Issue 25: the second hostile run, item by item, each checked against a
hand-made reference (fake cgroup trees, pixel values computed here, a fake
CUDA driver) or run as a user would (subprocesses, real files, a read-only
mount). Items that need a trained model or a cluster are tested where their
fixtures live: 1 and 14 in test_fold_bn.py, 2, 4 and 5 in
test_sharded_datasets.py, 3 on a real Slurm in test_slurm.py (and
test_sharding.py), 8, 9 and the infer half of 10 in test_infer_e2e.py, 12
and 15 in test_training.py."""
from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from deconvnet.common import cli, machine
from deconvnet.common.sharding import Shard
from deconvnet.data import proposals
from deconvnet.data.voc import DatasetError, read_image
from deconvnet.infer import memory

from helpers import ROOT, synthetic_roots

GiB = 1 << 30


def run(*args, timeout=300, **kwargs):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


# --- 6: the proposal cache follows the image's content --------------------------------------------------------

def test_a_replaced_image_gets_new_proposals(tmp_path, monkeypatch):
    calls = []

    def fake_edge_boxes(image, params):
        calls.append(image.shape)
        h, w = image.shape[:2]
        return np.array([[0, 0, w, h]], np.float32), np.ones(1, np.float32)

    monkeypatch.setattr(proposals, "edge_boxes", fake_edge_boxes)
    cache = proposals.ProposalCache(tmp_path / "proposals")
    big, small = np.zeros((300, 400, 3), np.uint8), np.zeros((100, 120, 3), np.uint8)
    boxes, _ = cache.get("img", big)
    assert boxes.tolist() == [[0, 0, 400, 300]] and len(calls) == 1
    cache.get("img", big.copy())                       # same pixels: cached
    assert len(calls) == 1
    boxes, _ = cache.get("img", small)                 # replaced under the same name: recomputed
    assert len(calls) == 2 and boxes.tolist() == [[0, 0, 120, 100]]
    other = small.copy()
    other[0, 0] = 1                                    # same size, other content: recomputed too
    cache.get("img", other)
    assert len(calls) == 3
    # Other settings go to another folder (the settings key).
    assert proposals.ProposalCache(tmp_path / "proposals", proposals.EdgeBoxParams(max_boxes=5)).folder \
        != cache.folder


# --- 7: 16-bit grayscale PNGs ---------------------------------------------------------------------------------

def test_16_bit_gray_png_reads_as_the_eye_sees_it(tmp_path):
    ramp = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 65535 // (64 * 48 - 1)).astype(np.uint16)
    path = tmp_path / "gray16.png"
    assert cv2.imwrite(str(path), ramp)               # written by OpenCV, not by the reader under test
    assert Image.open(path).mode.startswith("I")
    image = read_image(path)
    expected = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert image.shape == (48, 64, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], expected)
    assert (image == 255).mean() < 0.01               # was: all 255
    # 16-bit RGB was right before and stays so.
    rgb16 = np.stack([ramp, ramp // 2, ramp // 4], axis=2)
    assert cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16)   # BGR order on disk
    np.testing.assert_allclose(read_image(tmp_path / "rgb16.png").astype(int), (rgb16 / 257).round(), atol=1)


def test_a_folder_named_like_an_image_is_named_as_a_folder(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(DatasetError, match="a folder, not an image"):
        read_image(tmp_path / "dir.jpg")


# --- 10: one rule for flags without effect --------------------------------------------------------------------

def test_flags_given_are_told_from_defaults():
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--crf", action="store_true")
    parser.add_argument("--crf-iterations", type=int, default=10)
    parser.add_argument("--name", default="x")
    # The default value typed by hand is still a flag given.
    assert cli.given_flags(parser, ["--crf-iterations", "10"]) == {"crf_iterations"}
    assert cli.given_flags(parser, ["--crf-iterations=99", "--name", "y"]) == {"crf_iterations", "name"}
    assert cli.given_flags(parser, []) == set()
    rules = [(("crf_iterations",), True, "without --crf")]
    assert cli.ineffective_flags(parser, {"crf_iterations"}, rules) == ["--crf-iterations has no effect without --crf"]
    assert cli.ineffective_flags(parser, {"crf_iterations"}, [(("crf_iterations",), False, "x")]) == []


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_roots(tmp_path_factory.mktemp("synthetic"), num_images=6, seed=3)


@pytest.mark.parametrize("extra, flag", [
    (["--stage", "1", "--edges", "gradient"], "--edges"),
    (["--stage", "1", "--edge-model", "x.yml.gz"], "--edge-model"),
    (["--stage", "1", "--min-iou", "0.9"], "--min-iou"),
    (["--stage", "1", "--max-proposals", "5"], "--max-proposals"),
    (["--stage", "2", "--stage1-void", "background"], "--stage1-void"),
])
def test_build_dataset_refuses_flags_of_the_other_stage(synthetic, tmp_path, extra, flag):
    voc, sbd = synthetic
    result = run(ROOT / "data_prep" / "build_dataset.py", "--voc", voc, "--sbd", sbd, "--out", tmp_path / "db",
                 "--limit", "1", *extra)
    assert result.returncode == 2 and f"{flag} has no effect in stage" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "db").exists() and not (tmp_path / "db.partial").exists()


def test_stage1_resume_key_leaves_out_proposal_settings():
    from deconvnet.data.build_crops import BuildConfig

    a = BuildConfig(stage=1, out=Path("x"), min_iou=0.9, max_proposals=5).params()
    b = BuildConfig(stage=1, out=Path("x")).params()
    assert a == b and a["min_iou"] is None
    assert BuildConfig(stage=2, out=Path("x"), min_iou=0.9).params() != BuildConfig(stage=2, out=Path("x")).params()


def test_relative_and_absolute_inputs_are_one_input(tmp_path, monkeypatch):
    from deconvnet.data.build_crops import BuildConfig

    monkeypatch.chdir(tmp_path)
    relative = BuildConfig(stage=2, out=Path("x"), voc_root=Path("VOC2012")).params()
    absolute = BuildConfig(stage=2, out=Path("x"), voc_root=tmp_path / "VOC2012").params()
    assert relative == absolute


# --- 11: the memory limit of the process's own cgroup ------------------------------------------------------

def fake_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")


def test_cgroup_v2_limit_deep_in_the_process_path(tmp_path):
    """A Slurm job of 4 GiB: the limit sits on the job's group, not the root."""
    job = "system.slice/slurmstepd.scope/job_42/step_0/user/task_0"
    fake_tree(tmp_path / "cg", {
        "memory.max": "max", "memory.current": str(2 * GiB),                  # the root: what main read
        "system.slice/memory.max": "max", "system.slice/memory.current": str(GiB),
        "system.slice/slurmstepd.scope/job_42/memory.max": str(4 * GiB),
        "system.slice/slurmstepd.scope/job_42/memory.current": str(GiB),
        f"{job}/memory.max": "max", f"{job}/memory.current": str(GiB // 2),
    })
    (tmp_path / "cgroup").write_text(f"0::/{job}\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 25165824 kB\nMemAvailable: 23697490 kB\n")   # 22.6 GiB
    assert memory.cgroup_headroom(tmp_path / "cgroup", tmp_path / "cg") == 3 * GiB
    available = memory.available_memory(meminfo, tmp_path / "cgroup", tmp_path / "cg")
    assert available == 3 * GiB
    # The folded full net: 138 MiB a proposal, 60% of 3 GiB: 13 fit, so 50 go as 4 passes of 13, 13, 12, 12.
    assert memory.choose_batch(138 * 2**20, 50, available) == 13
    assert memory.choose_batch(138 * 2**20, 50, 23697490 * 1024) == 50    # what main chose under the job


def test_cgroup_v1_takes_the_lowest_limit_on_the_path(tmp_path):
    fake_tree(tmp_path / "cg", {
        "memory/memory.limit_in_bytes": str(2**63 - 4096), "memory/memory.usage_in_bytes": str(GiB),
        "memory/slurm/memory.limit_in_bytes": str(8 * GiB), "memory/slurm/memory.usage_in_bytes": str(5 * GiB),
        "memory/slurm/uid_0/job_7/memory.limit_in_bytes": str(6 * GiB),
        "memory/slurm/uid_0/job_7/memory.usage_in_bytes": str(GiB),
    })
    (tmp_path / "cgroup").write_text("12:cpu,cpuacct:/slurm/uid_0/job_7\n4:memory:/slurm/uid_0/job_7\n")
    # The job leaves 5 GiB, its parent only 3 GiB: the lowest counts.
    assert memory.cgroup_headroom(tmp_path / "cgroup", tmp_path / "cg") == 3 * GiB


def test_no_cgroup_limit_leaves_memavailable(tmp_path):
    fake_tree(tmp_path / "cg", {"memory.max": "max", "memory.current": "5"})
    (tmp_path / "cgroup").write_text("0::/\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemAvailable: 1024 kB\n")
    assert memory.cgroup_headroom(tmp_path / "cgroup", tmp_path / "cg") is None
    assert memory.available_memory(meminfo, tmp_path / "cgroup", tmp_path / "cg") == 1024 * 1024
    assert memory.available_memory(meminfo, tmp_path / "absent", tmp_path / "cg") == 1024 * 1024


# --- 13: --gpu where no GPU can be used ----------------------------------------------------------------------

class FakeCuda:
    """libcuda / libcudart stand-ins: each call writes its answer through the pointer."""

    def __init__(self, driver=13000, runtime=13000, init=0, count=1):
        self.values = dict(driver=driver, runtime=runtime, init=init, count=count)

    @staticmethod
    def _put(pointer, value):
        pointer._obj.value = value
        return 0

    def cuDriverGetVersion(self, p):
        return self._put(p, self.values["driver"])

    def cudaRuntimeGetVersion(self, p):
        return self._put(p, self.values["runtime"])

    def cuInit(self, flags):
        return self.values["init"]

    def cuDeviceGetCount(self, p):
        return self._put(p, self.values["count"])


def loader(fake, driver_present=True):
    def load(name):
        if name == "libcuda.so.1" and not driver_present:
            raise OSError("libcuda.so.1: cannot open shared object file")
        return fake
    return load


CUDA_BUILD = ["/x/libcaffe.so.1.0.0", "/x/libcudart.so.13", "/x/libcublas.so.13"]
WHEEL_BUILD = ["/w/caffe.libs/libcaffe-9f8e7d6c.so.1.0.0", "/w/caffe.libs/libcudart-1a2b3c4d.so.13"]


def test_gpu_problems_are_named():
    gpu_problem = machine.gpu_problem
    assert "CPU-only build" in gpu_problem(0, ["/x/libcaffe.so.1.0.0", "/x/libopenblas.so.0"], loader(FakeCuda()))
    assert "no NVIDIA driver" in gpu_problem(0, CUDA_BUILD, loader(FakeCuda(), driver_present=False))
    old = gpu_problem(0, CUDA_BUILD, loader(FakeCuda(driver=12040)))
    assert "supports CUDA 12.4, but this Caffe was built with CUDA 13.0" in old and "580" in old
    assert "no usable NVIDIA GPU" in gpu_problem(0, CUDA_BUILD, loader(FakeCuda(init=100)))
    assert "has 2 GPU(s)" in gpu_problem(2, CUDA_BUILD, loader(FakeCuda(count=2)))
    assert gpu_problem(1, CUDA_BUILD, loader(FakeCuda(count=2))) is None     # the negative case: all is well
    assert gpu_problem(0, WHEEL_BUILD, loader(FakeCuda())) is None
    assert isinstance(ctypes.c_int(0).value, int)


def test_an_old_driver_is_named_with_the_version_it_has_and_needs(tmp_path):
    """Issue 26, item 8: the installed driver's version (from the file the
    kernel module writes) and the one CUDA 13 needs."""
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n"
                    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    old = machine.gpu_problem(0, CUDA_BUILD, loader(FakeCuda(driver=12040)), driver_file=proc)
    assert "driver 550.54.14 supports CUDA 12.4" in old and "needs driver 580 or newer" in old
    open_kernel = tmp_path / "open"
    open_kernel.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  575.51.03  Release Build\n")
    assert machine.driver_version(open_kernel) == "575.51.03"
    assert machine.driver_version(tmp_path / "absent") is None
    # A new enough driver is no problem, whatever its file says.
    assert machine.gpu_problem(0, CUDA_BUILD, loader(FakeCuda(driver=13000)), driver_file=proc) is None


def test_the_image_and_readme_state_the_driver_cuda_13_needs():
    needed = machine.DRIVER_FOR[13000]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f'NVIDIA_REQUIRE_CUDA="cuda>=13.0 driver>={needed}"' in dockerfile
    assert re.search(rf"driver {needed} or newer", (ROOT / "README.md").read_text())
    assert "dist" in (ROOT / ".dockerignore").read_text().split()


@pytest.mark.parametrize("tool, extra", [
    ("tools/infer.py", ["--weights", "w.caffemodel", "--out", "out", "img.jpg"]),
    ("tools/train.py", ["--stage", "1", "--run-dir", "run"]),
])
def test_tools_on_a_cpu_only_caffe_refuse_gpu_cleanly(caffe, tmp_path, tool, extra):
    """This machine's Caffe is the CPU build: Caffe itself would abort (134)."""
    from helpers import write

    write(tmp_path / "w.caffemodel", "")
    write(tmp_path / "img.jpg", "")
    result = run(ROOT / tool, "--gpu", "0", *extra, cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "cannot use --gpu 0: this Caffe is a CPU-only build" in result.stderr
    assert "Traceback" not in result.stderr and "Check failed" not in result.stderr


# --- 8 and 9: the run record of an inference folder ---------------------------------------------------------

@pytest.fixture
def run_record():
    from deconvnet.infer import run_record

    return run_record


def items(n):
    return [(f"im{k}", Path(f"/data/im{k}.jpg")) for k in range(n)]


def test_shards_of_another_list_are_refused(tmp_path, run_record):
    settings = dict(crf=None, model="m")
    run_record.claim(tmp_path, settings, Shard(0, 2), items(12), overwrite=False)
    with pytest.raises(run_record.RunRecordError, match="another image list"):
        run_record.claim(tmp_path, settings, Shard(1, 2), items(18), overwrite=False)
    record = run_record.claim(tmp_path, settings, Shard(1, 2), items(12), overwrite=False)
    assert record["shards"]["run"] == [0, 1] and record["shards"]["images"] == 12
    # --overwrite starts the folder's shards afresh.
    record = run_record.claim(tmp_path, settings, Shard(0, 3), items(18), overwrite=True)
    assert record["shards"] == dict(count=3, images=18, list_fingerprint=run_record.list_fingerprint(items(18)),
                                    run=[0])


def test_other_settings_are_refused(tmp_path, run_record):
    run_record.claim(tmp_path, dict(crf=None, model="m"), Shard(0, 2), items(4), overwrite=False)
    with pytest.raises(run_record.RunRecordError, match=r"other settings than this run's \(crf differ\)"):
        run_record.claim(tmp_path, dict(crf=dict(iterations=10), model="m"), Shard(1, 2), items(4),
                         overwrite=False)
    assert json.loads((tmp_path / "run.json").read_text())["crf"] is None
    run_record.claim(tmp_path, dict(crf=dict(iterations=10), model="m"), None, items(4), overwrite=True)
    assert json.loads((tmp_path / "run.json").read_text())["crf"] == dict(iterations=10)


# --- 16: read-only, missing and full output folders ---------------------------------------------------------

@pytest.fixture
def read_only(tmp_path):
    """A read-only tmpfs (as root; the tests run as root, as CI does): a real
    EROFS, which permission bits cannot give root."""
    folder = tmp_path / "ro"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def full(tmp_path):
    """A 64 KiB tmpfs already full."""
    folder = tmp_path / "full"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
    try:
        with open(folder / "filler", "wb") as f:
            try:
                f.write(b"\0" * (1 << 20))
            except OSError:
                pass
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def eval_inputs(tmp_path):
    from deconvnet.data.voc import write_indexed_png

    for name in ("gt", "pred"):
        (tmp_path / name).mkdir()
        write_indexed_png(tmp_path / name / "a.png", np.array([[0, 1], [1, 0]], np.uint8))
    return ["--gt-dir", tmp_path / "gt", "--pred-dir", tmp_path / "pred"]


def one_clear_line(result, text):
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.count(text) == 1, result.stderr[-2000:]


def test_eval_json_into_read_only_missing_and_full_folders(tmp_path, read_only, full):
    args = eval_inputs(tmp_path)
    result = run(ROOT / "tools" / "eval_voc.py", *args, "--json", read_only / "sub" / "scores.json")
    assert result.returncode == 2
    one_clear_line(result, "the file system is read-only; write the outputs somewhere else")
    result = run(ROOT / "tools" / "eval_voc.py", *args, "--json", full / "scores.json")
    assert result.returncode == 2
    one_clear_line(result, "the disk is full")
    # A missing folder is made (the negative case: a writable place works).
    result = run(ROOT / "tools" / "eval_voc.py", *args, "--json", tmp_path / "new" / "deeper" / "scores.json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "new" / "deeper" / "scores.json").read_text())


def test_infer_and_fold_into_a_read_only_folder(caffe, tmp_path, read_only):
    from helpers import write

    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.zeros((20, 20, 3), np.uint8))
    write(tmp_path / "w.caffemodel", "")
    result = run(ROOT / "tools" / "infer.py", image, "--weights", tmp_path / "w.caffemodel", "--out", read_only / "o")
    assert result.returncode == 2
    one_clear_line(result, "read-only")
    result = run(ROOT / "tools" / "fold_bn.py", "--weights", tmp_path / "w.caffemodel",
                 "--out-model", read_only / "f.prototxt", "--out-weights", tmp_path / "f.caffemodel")
    assert result.returncode == 2
    one_clear_line(result, "read-only")
    assert not (tmp_path / "f.caffemodel").exists()


def test_run_tool_turns_a_late_write_error_into_one_line(tmp_path, read_only, caplog):
    """An output that only fails late (after the checks) still gives one line."""
    def main():
        (read_only / "late.txt").write_text("x")
        return 0

    assert cli.run_tool(main, "tool") == 1
    assert caplog.text.count("cannot write") == 1 and "read-only" in caplog.text

    def other():
        raise FileNotFoundError(2, "No such file", str(tmp_path / "input"))

    with pytest.raises(FileNotFoundError):   # not an output problem: not hidden
        cli.run_tool(other, "tool")
    assert os.path.exists(tmp_path)
