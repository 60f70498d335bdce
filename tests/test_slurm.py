"""The Slurm scripts of experiments/slurm/ on a real one-node Slurm (munged,
slurmctld and slurmd started here on loopback): the built-in dataset's
stage-2 crops as a 3-task array with one task failing on purpose, the
merge refusing, that task resubmitted alone (--array=1) and the merge again
equal one unsharded build; inference as a 2-task array equals one process. The daemons started
here are stopped by their recorded process ids, and must be gone."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from slurm_cluster import SlurmCluster, _running

from deconvnet.data.crop_db import CropDB, open_crop_db

from helpers import ROOT, synthetic_roots, write

SLURM = ROOT / "experiments" / "slurm"


@pytest.fixture(scope="module")
def cluster():
    slurm = SlurmCluster().start()
    try:
        yield slurm
    finally:
        left = slurm.stop()
        pids = dict(slurm.pids)
        shutil.rmtree(slurm.root, ignore_errors=True)
    assert not left, f"daemons that needed SIGKILL: {left}"
    assert not [name for name, pid in pids.items() if _running(pid)]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm_data")
    voc, sbd = synthetic_roots(root / "syn", 14, seed=8)
    return root, voc, sbd


def test_dataset_build_as_a_job_array_with_a_task_resubmitted(cluster, synthetic, tmp_path):
    """Issue 25, item 3: before, a task resubmitted as --array=1 read itself
    as shard 0 of 1 and built the whole list, and a merge with afterok
    stayed pending forever after the failed task."""
    root, voc, sbd = synthetic
    args = ["--stage", "2", "--voc", voc, "--sbd", sbd, "--edges", "gradient", "--seed", "2",
            "--proposal-cache", tmp_path / "proposals"]
    single = subprocess.run([sys.executable, str(ROOT / "data_prep" / "build_dataset.py"), *map(str, args),
                             "--workers", "1", "--out", str(tmp_path / "single")],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    logs = tmp_path / "logs"
    logs.mkdir()
    # Task 1 fails once, as a node failure would: the python the script runs is this wrapper.
    wrapper = write(tmp_path / "flaky-python", (
        "#!/bin/bash\n"
        f"if [ \"$SLURM_ARRAY_TASK_ID\" = 1 ] && [ ! -e {tmp_path}/failed-once ]; then\n"
        f"  touch {tmp_path}/failed-once; echo 'task 1: failing on purpose' >&2; exit 3\n"
        "fi\n"
        f"exec {sys.executable} \"$@\"\n"))
    wrapper.chmod(0o755)
    export = f"--export=ALL,DECONVNET_PYTHON={wrapper}"
    build = cluster.submit("--array=0-2", "--cpus-per-task=1", export, f"--output={logs}/build-%a.out",
                           SLURM / "build_dataset.sbatch", "3", *args, "--out", tmp_path / "sharded", cwd=ROOT)
    merge = cluster.submit(f"--dependency=afterany:{build}", f"--output={logs}/merge.out",
                           SLURM / "merge_shards.sbatch", tmp_path / "sharded", cwd=ROOT)
    states = cluster.wait(build)
    assert sorted(states) == ["COMPLETED", "COMPLETED", "FAILED"], states
    assert "failing on purpose" in (logs / "build-1.out").read_text()
    # afterany: the merge runs, refuses by name and writes nothing.
    assert cluster.wait(merge) == ["FAILED"]
    assert "shard-1-of-3" in (logs / "merge.out").read_text(), (logs / "merge.out").read_text()[-2000:]
    assert not (tmp_path / "sharded" / "manifest.json").exists()
    # The failed task alone, with the same count (experiments/slurm/README.md), then the merge.
    again = cluster.submit("--array=1", "--cpus-per-task=1", export, f"--output={logs}/again-%a.out",
                           SLURM / "build_dataset.sbatch", "3", *args, "--out", tmp_path / "sharded", cwd=ROOT)
    merge = cluster.submit(f"--dependency=afterany:{again}", f"--output={logs}/merge-again.out",
                           SLURM / "merge_shards.sbatch", tmp_path / "sharded", cwd=ROOT)
    assert cluster.wait(again) == ["COMPLETED"], (logs / "again-1.out").read_text()[-2000:]
    assert cluster.wait(merge) == ["COMPLETED"], (logs / "merge-again.out").read_text()[-2000:]
    assert "(shard 1/3 of 14)" in (logs / "again-1.out").read_text()
    for k in (0, 2):
        assert f"(shard {k}/3 of 14)" in (logs / f"build-{k}.out").read_text()
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir() if p.name.startswith("shard")) == [
        "shard-0-of-3", "shard-1-of-3", "shard-2-of-3"]
    reference, merged = CropDB(tmp_path / "single"), open_crop_db(tmp_path / "sharded")
    assert merged.num_records == reference.num_records > 0
    np.testing.assert_array_equal(merged.index, reference.index)
    for number in range(reference.num_records):
        assert merged.raw(number) == reference.raw(number), f"record {number}"


def test_inference_as_a_job_array(caffe, cluster, synthetic, tmp_path):
    from deconvnet.net import nets

    _, voc, _ = synthetic
    deploy = write(tmp_path / "deconvnet.prototxt", str(nets.deconvnet_deploy(size=nets.Size(64, 8))))
    caffe.set_random_seed(3)
    net = caffe.Net(str(deploy), caffe.TEST)
    for name, params in net.params.items():
        if name.endswith("_bn"):
            params[0].data[...], params[1].data[...], params[2].data[...] = 0, 1, 1
    net.save(str(tmp_path / "deconvnet.caffemodel"))
    args = ["--voc-root", voc, "--split", "val", "--model", deploy, "--weights", tmp_path / "deconvnet.caffemodel",
            "--proposal-cache", tmp_path / "proposals", "--top-k", "8"]
    single = subprocess.run([sys.executable, str(ROOT / "tools" / "infer.py"), *map(str, args),
                             "--out", str(tmp_path / "single")], capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    logs = tmp_path / "logs"
    logs.mkdir()
    # This node has no GPUs: --gres=none replaces the script's gpu:1, as on a CPU partition;
    # and perhaps less memory than a GPU node's 32G: --mem replaces it.
    job = cluster.submit("--array=0-1", "--cpus-per-task=1", "--gres=none", "--mem=2G",
                         f"--output={logs}/infer-%a.out",
                         SLURM / "infer.sbatch", "2", *args, "--out", tmp_path / "arrayed", cwd=ROOT)
    states = cluster.wait(job)
    assert states == ["COMPLETED"] * 2, (states, *(p.read_text()[-1500:] for p in sorted(logs.iterdir())))
    names = sorted(p.name for p in (tmp_path / "single" / "labels").iterdir())
    assert len(names) >= 2 and names == sorted(p.name for p in (tmp_path / "arrayed" / "labels").iterdir())
    for name in names:
        assert (np.array(Image.open(tmp_path / "single" / "labels" / name))
                == np.array(Image.open(tmp_path / "arrayed" / "labels" / name))).all(), name
    assert "shard 0/2" in (logs / "infer-0.out").read_text() and "shard 1/2" in (logs / "infer-1.out").read_text()


def test_training_script_runs_train_py_on_all_gpus_of_the_node(cluster, tmp_path):
    """experiments/slurm/train.sbatch is tools/train.py --gpus all, one task
    per node. This node has neither GPUs nor NCCL: the tool, run by Slurm,
    stops with the reason before any training process starts."""
    logs = tmp_path / "logs"
    logs.mkdir()
    job = cluster.submit("--gres=none", "--cpus-per-task=1", "--mem=1G", f"--output={logs}/train.out",
                         f"--export=ALL,DECONVNET_PYTHON={sys.executable}",
                         SLURM / "train.sbatch", "--stage", "1", "--run-dir", tmp_path / "run", cwd=ROOT)
    states = cluster.wait(job)
    out = (logs / "train.out").read_text()
    assert states == ["FAILED"], (states, out[-2000:])
    assert "built without NCCL" in out or "--gpus all: no GPU to train on" in out, out[-2000:]
    assert not (tmp_path / "run").exists()
