"""Data-parallel training (deconvnet/train/data_parallel.py): each rank's
share of the epochs, the GPU counts refused, and the whole rank machinery
on two CPU processes with NCCL replaced by pipes, against one process with
the whole iter_size."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from deconvnet.data.balance import balanced_index
from deconvnet.data.crop_db import CropDBWriter, encode_record
from deconvnet.data.layer_params import SegDataParams
from deconvnet.train.data_parallel import RankCountError, batch_choices, parse_gpus, rank_iter_size

from helpers import ROOT, write

sys.path.insert(0, str(ROOT))
from python_layers.seg_data import BatchPlanner  # noqa: E402


def shares(index: np.ndarray, ranks: int, batches: int, batch_size: int = 3) -> list[list[np.ndarray]]:
    """The record numbers of each rank's first ``batches`` batches."""
    params = SegDataParams(source="unused", batch_size=batch_size, crop_size=8, shuffle=True, mirror=True, seed=7)
    planners = [BatchPlanner(index, 10, params, True, rank, ranks) for rank in range(ranks)]
    return [[planner.next().records for _ in range(batches)] for planner in planners]


def global_stream(parts: list[list[np.ndarray]]) -> np.ndarray:
    """Rank r's batch s is batch s * ranks + r of the stream."""
    ranks, batches = len(parts), len(parts[0])
    return np.concatenate([parts[r][s] for s in range(batches) for r in range(ranks)])


@pytest.mark.parametrize("ranks", [2, 4])
def test_each_epoch_is_split_into_disjoint_parts_whose_union_is_the_epoch(ranks):
    epoch = np.arange(48) * 5 + 3  # record numbers, each once
    parts = shares(epoch, ranks, batches=3 * 48 // (3 * ranks))  # three epochs
    stream = global_stream(parts)
    for e in range(3):
        in_epoch = stream[e * 48:(e + 1) * 48]
        assert sorted(in_epoch) == sorted(epoch)  # the union is the epoch, each record once
        start = e * 48 // (3 * ranks)
        mine = [set(np.concatenate(parts[r][start:start + 48 // (3 * ranks)])) for r in range(ranks)]
        assert sum(len(m) for m in mine) == 48 and set().union(*mine) == set(epoch)  # disjoint
    # Each epoch is a new order, and the ranks do read different records.
    assert list(stream[:48]) != list(stream[48:96])
    assert set(parts[0][0]) != set(parts[1][0])


def test_an_epoch_that_the_batches_do_not_divide_is_still_covered_once():
    epoch = np.arange(13)
    parts = shares(epoch, 2, batches=13)  # 78 records: six epochs of 13
    stream = global_stream(parts)
    for e in range(6):
        assert sorted(stream[e * 13:(e + 1) * 13]) == list(range(13))


@pytest.mark.parametrize("ranks", [2, 4])
def test_class_balance_is_unchanged_under_ranks(ranks):
    classes = np.repeat(np.arange(5), [40, 10, 5, 20, 5])  # class of each record
    index = balanced_index(classes, max_repeat=None, seed=1)
    expected = Counter(classes[index].tolist())  # every class 40 times
    assert set(expected.values()) == {40}
    per_epoch = len(index) // (5 * ranks)  # 200 records: batches of 5 on 2 or 4 ranks make one epoch
    parts = shares(index, ranks, batches=per_epoch, batch_size=5)
    seen = Counter(classes[np.concatenate([np.concatenate(p) for p in parts])].tolist())
    assert seen == expected


def test_the_partition_check_fails_when_two_ranks_read_the_same_part():
    """The negative case: two processes both at rank 0 of 2 overlap."""
    epoch = np.arange(24)
    params = SegDataParams(source="unused", batch_size=3, crop_size=8, shuffle=True, seed=7)
    a, b = (BatchPlanner(epoch, 10, params, True, 0, 2) for _ in range(2))
    first = np.concatenate([a.next().records for _ in range(4)])
    second = np.concatenate([b.next().records for _ in range(4)])
    assert set(first) & set(second) and sorted(np.concatenate([first, second])) != list(range(24))


def test_one_rank_reads_what_the_layer_read_before_ranks():
    """ranks=1 keeps the stream of earlier runs: a hand-made reference of
    its first batches (the permutation, then crops and flips per batch)."""
    epoch = np.arange(10)
    params = SegDataParams(source="unused", batch_size=4, crop_size=8, shuffle=True, mirror=True, seed=3)
    planner = BatchPlanner(epoch, 10, params, True)
    rng = np.random.default_rng(3)
    order = rng.permutation(epoch)
    offsets = rng.integers(0, 3, size=(4, 2))
    flips = rng.random(4) < 0.5
    plan = planner.next()
    np.testing.assert_array_equal(plan.records, order[:4])
    np.testing.assert_array_equal(plan.offsets, offsets)
    np.testing.assert_array_equal(plan.flips, flips)


# --- counts refused -------------------------------------------------------------


def test_gpu_counts_that_divide_iter_size_split_it():
    assert rank_iter_size(8, 4, 8, Path("s.prototxt")) == 2
    assert rank_iter_size(8, 8, 8, Path("s.prototxt")) == 1
    assert rank_iter_size(1, 1, 64, Path("s.prototxt")) == 1


def test_a_count_that_does_not_divide_iter_size_is_refused_with_what_would_work():
    with pytest.raises(RankCountError) as err:
        rank_iter_size(8, 3, 8, Path("stage1_solver.prototxt"))
    text = str(err.value)
    assert "3 GPUs cannot share the iter_size 8 of stage1_solver.prototxt" in text
    assert "Use 1, 2, 4, 8 GPUs" in text and "no batch keeps 64 examples per update on 3 GPUs" in text
    with pytest.raises(RankCountError) as err:
        rank_iter_size(8, 16, 8, Path("s.prototxt"))
    assert "batch 4 x iter_size 1, batch 2 x iter_size 2, batch 1 x iter_size 4" in str(err.value)
    assert "--batch-per-pass" in str(err.value)


def test_batch_choices_against_a_hand_count():
    assert batch_choices(64, 4) == [(16, 1), (8, 2), (4, 4), (2, 8), (1, 16)]
    assert batch_choices(64, 3) == []


@pytest.mark.parametrize("spec, message", [
    ("0,x", "give GPU ids separated by commas"), ("0,0", "names a GPU twice"), ("-1", "0 or more"),
])
def test_gpu_lists_are_checked(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_gpus(spec)


def test_gpus_all_counts_what_the_driver_shows():
    assert parse_gpus("all", count=4) == [0, 1, 2, 3]
    assert parse_gpus("2,0") == [2, 0]
    with pytest.raises(ValueError, match="no GPU to train on"):
        parse_gpus("all", count=0)


def test_the_cli_refuses_three_gpus_for_the_committed_solvers(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--gpus", "0,1,2",
                             "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "3 GPUs cannot share the iter_size 8" in result.stderr and "Use 1, 2, 4, 8 GPUs" in result.stderr
    assert not (tmp_path / "run").exists()


def test_the_cli_says_when_this_caffe_has_no_nccl(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--gpus", "0,1",
                             "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "built without NCCL" in result.stderr and "--use-cuda" in result.stderr


def test_gpu_and_gpus_together_are_refused(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--gpus", "0,1", "--gpu", "0",
                             "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--gpu and --gpus both given" in result.stderr


# --- two CPU ranks, NCCL replaced by pipes ------------------------------------------

STORED = 24
NET = """name: "tiny"
layer {{ name: "data" type: "Python" top: "data" top: "label"
  python_param {{ module: "python_layers.seg_data" layer: "SegDataLayer" param_str: '{params}' }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 6 kernel_size: 3 pad: 1 weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" top: "pool1_mask"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "unpool1" type: "Unpooling" bottom: "pool1" bottom: "pool1_mask" top: "unpool1"
  unpooling_param {{ kernel_size: 2 stride: 2 unpool_size: 16 }} }}
layer {{ name: "seg_score" type: "Convolution" bottom: "unpool1" top: "seg_score"
  convolution_param {{ num_output: 21 kernel_size: 3 pad: 1 weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "seg_score" bottom: "label" top: "loss"
  loss_param {{ ignore_label: 255 }} }}
"""
SOLVER = """train_net: "net.prototxt"
base_lr: 0.05
lr_policy: "step"
gamma: 0.5
stepsize: 2
momentum: 0.9
weight_decay: 0.001
iter_size: {iter_size}
max_iter: {max_iter}
snapshot_prefix: "unused"
"""


@pytest.fixture(scope="module")
def tiny_parallel(tmp_path_factory, caffe):
    """Sixteen random crops in a crop database, the net above reading them
    (batch 2, random crops and flips) and its initial weights."""
    root = tmp_path_factory.mktemp("parallel")
    rng = np.random.default_rng(5)
    writer = CropDBWriter(root / "db", dict(test=True))
    for r in range(16):
        image = rng.integers(0, 256, (STORED, STORED, 3), dtype=np.uint8)
        label = rng.integers(0, 21, (STORED, STORED), dtype=np.uint8)
        label[rng.random((STORED, STORED)) < 0.1] = 255
        writer.add_image([(encode_record(image, label, dict(cls=1, record=r)), 1)])
    writer.finish(np.arange(16), dict(params=dict(stored_size=STORED), unique_records=16))
    params = SegDataParams(source=str(root / "db"), batch_size=2, crop_size=16, mirror=True, shuffle=True,
                           workers=1).to_param_str()
    write(root / "net.prototxt", NET.format(params=params))
    net = caffe.Net(str(root / "net.prototxt"), caffe.TRAIN)
    net.save(str(root / "init.caffemodel"))
    del net
    return root


def run_stage(root: Path, run_dir: Path, iter_size: int, max_iter: int, ranks: int,
              extra: str = "", gpu: int | None = None) -> subprocess.CompletedProcess:
    """One stage: ranks=1, the Trainer alone in one process; ranks > 1, that
    many CPU processes with pipes for NCCL. With ``gpu``: the Trainer on it
    (ranks=1), or NCCL's one-rank path on it (ranks=0)."""
    write(root / f"solver_{iter_size}_{max_iter}.prototxt", SOLVER.format(iter_size=iter_size, max_iter=max_iter))
    if ranks == 0:
        launch = f"train_stage(config, [{gpu}], sync='nccl')"
    elif ranks == 1:
        launch = f"Trainer(replace(config, gpu={gpu})).train()"
    else:
        launch = f"train_stage(config, [None] * {ranks}, sync='pipes')"
    code = f"""
import sys
from dataclasses import replace
from pathlib import Path
from deconvnet.common.cli import setup_logging
from deconvnet.train.data_parallel import train_stage
from deconvnet.train.trainer import StageConfig, Trainer
setup_logging()
config = StageConfig(solver=Path({str(root / f"solver_{iter_size}_{max_iter}.prototxt")!r}),
                     run_dir=Path({str(run_dir)!r}), weights=Path({str(root / "init.caffemodel")!r}),
                     weight_decay_rule="release", val_interval=0, snapshot_interval=2, log_interval=1,
                     progress=False)
{extra}
print("FINAL", {launch})
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", GLOG_minloglevel="2")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env,
                          cwd=ROOT)


def learned(model: Path) -> dict[str, list[np.ndarray]]:
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    net.ParseFromString(model.read_bytes())
    return {layer.name: [np.array(b.data, np.float32) for b in layer.blobs] for layer in net.layer if layer.blobs}


def train_losses(run_dir: Path) -> list[float]:
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [e["loss"] for e in events if e["event"] == "train"]


def assert_same_training(a: Path, b: Path) -> None:
    """Float32 sums of the same passes in another order (rank by rank, then
    the mean of the ranks, as NCCL sums) differ in the last bits; four
    updates with momentum keep that under 1e-5 of each blob's range and
    1e-5 relative on the losses. A different set of passes moves the
    losses by more than 1e-3 (the negative case below)."""
    np.testing.assert_allclose(train_losses(a), train_losses(b), rtol=1e-5)
    final_a, final_b = learned(a / "snapshot_iter_4.caffemodel"), learned(b / "snapshot_iter_4.caffemodel")
    assert final_a.keys() == final_b.keys() == {"conv1", "seg_score"}
    for name in final_a:
        for x, y in zip(final_a[name], final_b[name], strict=True):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-5 * float(np.ptp(y)))


@pytest.fixture(scope="module")
def one_process(tiny_parallel, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("one") / "run"
    result = run_stage(tiny_parallel, run_dir, iter_size=4, max_iter=4, ranks=1)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_two_ranks_train_as_one_process_with_twice_their_iter_size(tiny_parallel, one_process, tmp_path):
    run_dir = tmp_path / "run"
    result = run_stage(tiny_parallel, run_dir, iter_size=4, max_iter=4, ranks=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 rank(s) (CPU, CPU)" in result.stderr
    assert "iter_size: 2" in (run_dir / "solver.prototxt").read_text()
    # The release rule from the whole iter_size: 0.0005 / 4, not 0.0005 / 2.
    assert "weight_decay: 0.000125" in (run_dir / "solver.prototxt").read_text()
    assert "test_net" not in (run_dir / "solver_followers.prototxt").read_text()
    assert_same_training(run_dir, one_process)
    assert not (run_dir / "ranks.json").exists()


def test_the_comparison_sees_a_different_set_of_passes(tiny_parallel, one_process, tmp_path):
    """The negative case: one process with half the passes per update."""
    run_dir = tmp_path / "run"
    result = run_stage(tiny_parallel, run_dir, iter_size=2, max_iter=4, ranks=1)
    assert result.returncode == 0, result.stderr[-3000:]
    with pytest.raises(AssertionError):
        assert_same_training(run_dir, one_process)
    assert np.max(np.abs(np.subtract(train_losses(run_dir), train_losses(one_process)))) > 1e-3


def test_a_resumed_two_rank_run_ends_as_a_resumed_one_process_run(tiny_parallel, tmp_path):
    runs = {}
    for ranks in (1, 2):
        run_dir = tmp_path / f"ranks{ranks}"
        first = run_stage(tiny_parallel, run_dir, iter_size=4, max_iter=2, ranks=ranks)
        assert first.returncode == 0, first.stderr[-3000:]
        # The same stage continued to 4: it resumes from the snapshot at 2.
        (run_dir / "train_state.json").write_text(json.dumps(
            {k: v for k, v in json.loads((run_dir / "train_state.json").read_text()).items() if k != "final"}))
        again = run_stage(tiny_parallel, run_dir, iter_size=4, max_iter=4, ranks=ranks)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "resumed" in again.stderr and "at iteration 2" in again.stderr
        runs[ranks] = run_dir
    assert_same_training(runs[2], runs[1])


def test_a_rank_killed_stops_the_others_and_is_named(tiny_parallel, tmp_path):
    run_dir = tmp_path / "run"
    write(tiny_parallel / "solver_4_400.prototxt", SOLVER.format(iter_size=4, max_iter=400))
    code = f"""
from pathlib import Path
from deconvnet.common.cli import setup_logging
from deconvnet.train.data_parallel import train_stage
from deconvnet.train.trainer import StageConfig
setup_logging()
train_stage(StageConfig(solver=Path({str(tiny_parallel / "solver_4_400.prototxt")!r}), run_dir=Path({str(run_dir)!r}),
                        val_interval=0, snapshot_interval=0, progress=False), [None, None], sync="pipes")
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        pids = None
        for _ in range(600):
            log = run_dir / "log.jsonl"
            if (run_dir / "ranks.json").exists() and log.exists() and log.read_text().count("\n") >= 2:
                pids = json.loads((run_dir / "ranks.json").read_text())
                break
            time.sleep(0.1)
        assert pids, "the ranks did not start training"
        os.kill(pids["1"], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert f"rank 1 (CPU, pid {pids['1']}) ended (killed by signal SIGKILL)" in stderr, stderr[-3000:]
    for pid in pids.values():  # rank 0 was stopped too
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_rank_that_raises_stops_the_others_with_its_error(tiny_parallel, tmp_path):
    """Rank 1's data breaks: its layer's error is the run's."""
    run_dir = tmp_path / "run"
    breaks_rank_one = """
import python_layers.seg_data as seg_data
import caffe
loading = seg_data.load_batch
def load_batch(db, plan, crop, mean):
    if caffe.solver_rank() == 1 and plan.seq == 3:
        raise OSError("record 7 of the crop database is damaged")
    return loading(db, plan, crop, mean)
seg_data.load_batch = load_batch
"""
    write(tiny_parallel / "rank_one_breaks.py", breaks_rank_one)
    # The ranks are new interpreters: the module is imported in each through sitecustomize.
    write(tmp_path / "site" / "sitecustomize.py", f"import sys; sys.path.insert(0, {str(tiny_parallel)!r})\n"
          "import rank_one_breaks\n")
    env_extra = f"import os; os.environ['PYTHONPATH'] = {str(tmp_path / 'site')!r} + ':' + os.environ['PYTHONPATH']"
    no_snapshots = "config = replace(config, snapshot_interval=0)"
    result = run_stage(tiny_parallel, run_dir, iter_size=4, max_iter=6, ranks=2, extra=env_extra + "\n" + no_snapshots)
    assert result.returncode != 0
    assert "rank 1 (CPU, pid" in result.stderr and "record 7 of the crop database is damaged" in result.stderr, \
        result.stderr[-3000:]
    assert "the other ranks were stopped" in result.stderr


@pytest.mark.gpu
def test_one_rank_through_nccl_on_a_gpu_trains_as_the_trainer_alone(tiny_parallel, tmp_path):
    """--gpus 0's path: the NCCL communicator of one rank, its broadcast and
    its all-reduce after every update, against the Trainer on the same GPU
    (cuDNN's backward may sum in another order: 1e-4)."""
    runs = {}
    for ranks in (0, 1):
        runs[ranks] = tmp_path / f"ranks{ranks}"
        result = run_stage(tiny_parallel, runs[ranks], iter_size=4, max_iter=4, ranks=ranks, gpu=0)
        assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(train_losses(runs[0]), train_losses(runs[1]), rtol=1e-4)
