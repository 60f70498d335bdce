"""Two-stage training: tools/train.py, the plateau rule and momentum history,
resumption after a kill, snapshot retention, the disk check, the plain
`caffe train` path, the BatchNorm statistics tool and the plots."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deconvnet.data.build_crops import BuildConfig, build
from deconvnet.data.synthetic import SyntheticSpec, write_dataset
from deconvnet.net.architecture import Size
from deconvnet.net.prototxt import write_reduced_stage
from deconvnet.net.solvers import Schedule

from helpers import ROOT, VENV_BIN, write

TINY = Size(input_size=32, width_divisor=16)
TINY_STORED = 40


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny LMDBs and reduced stage solvers (CPU, 32-pixel input)."""
    root = tmp_path_factory.mktemp("train")
    write_dataset(root / "syn", SyntheticSpec(num_images=10, seed=4))
    voc, sbd = root / "syn/VOCdevkit/VOC2012", root / "syn/benchmark_RELEASE/dataset"
    dbs = {}
    for stage in (1, 2):
        for split, image_set in (("train", "union-minus-voc-val"), ("test", "voc:val")):
            dbs[(stage, split)] = root / "lmdb" / f"stage{stage}_{split}"
            build(BuildConfig(stage=stage, out=dbs[(stage, split)], voc_root=voc, sbd_root=sbd,
                              image_set=image_set, stored_size=TINY_STORED, balance=split == "train",
                              proposal_cache=root / "proposals", max_proposals=300))
    solvers = {stage: write_reduced_stage(root / "prototxt", stage, dbs[(stage, "train")], dbs[(stage, "test")],
                                          TINY, Schedule(max_iter=6, stepsize=4, iter_size=1, batch_size=2))
               for stage in (1, 2)}
    return dict(root=root, dbs=dbs, solvers=solvers)


def train_cli(tiny, run_dir, *extra, **popen):
    args = [sys.executable, str(ROOT / "tools" / "train.py"), "--solver1", str(tiny["solvers"][1]),
            "--solver2", str(tiny["solvers"][2]), "--run-dir", str(run_dir), *map(str, extra)]
    if popen:
        return subprocess.Popen(args, **popen)
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_two_stages_with_the_cli(tiny, tmp_path):
    result = train_cli(tiny, tmp_path / "run", "--stage", "both", "--max-iter", "4", "--val-interval", "2",
                       "--val-batches", "2", "--snapshot-interval", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in (1, 2):
        state = json.loads((tmp_path / "run" / f"stage{stage}" / "train_state.json").read_text())
        assert Path(state["final"]).name == "snapshot_iter_4.caffemodel"
        events = read_log(tmp_path / "run" / f"stage{stage}" / "log.jsonl")
        assert [e["iter"] for e in events if e["event"] == "val"] == [2, 4]
        assert all(0 <= e["val_miou"] <= 1 for e in events if e["event"] == "val")
    assert "stage 1 finished" in result.stderr and "stage 2 finished" in result.stderr
    # Running again finds both stages done.
    again = train_cli(tiny, tmp_path / "run", "--stage", "both", "--max-iter", "4")
    assert again.returncode == 0 and "stage 2 already finished" in again.stderr


def solverstate_history(path: Path) -> list[np.ndarray]:
    from caffe.proto import caffe_pb2

    state = caffe_pb2.SolverState()
    state.ParseFromString(path.read_bytes())
    return [np.array(h.data) for h in state.history]


def test_plateau_cut_keeps_momentum(caffe, tiny, tmp_path):
    from deconvnet.train.trainer import StageConfig, Trainer

    fake = iter([0.30, 0.30, 0.30])  # never improves after the first

    def validate_fn(trainer):
        return dict(mean_iou=next(fake), pixel_accuracy=0.5)

    config = StageConfig(solver=tiny["solvers"][1], run_dir=tmp_path / "stage1", lr_policy="plateau",
                         patience=1, val_interval=0, snapshot_interval=0, keep_last=5, progress=False)
    trainer = Trainer(config, validate_fn)
    assert trainer.lr == pytest.approx(0.01)
    trainer.solver.step(3)
    trainer.run_validation()                    # best so far: snapshot at 3
    assert trainer.lr == pytest.approx(0.01)
    before = solverstate_history(tmp_path / "stage1" / "snapshot_iter_3.solverstate")
    assert any(np.abs(h).sum() > 0 for h in before), "momentum history should be nonzero"
    trainer.run_validation()                    # no improvement, patience 1: cut
    assert trainer.lr == pytest.approx(0.001)   # the rate the solver applies now
    trainer._snapshot_pair()
    after = solverstate_history(tmp_path / "stage1" / "snapshot_iter_3.solverstate")
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)     # the cut did not touch the history
    events = read_log(tmp_path / "stage1" / "log.jsonl")
    assert [e for e in events if e["event"] == "lr_cut"][0]["lr"] == pytest.approx(0.001)
    trainer._save_state()
    # A re-created solver (resume) restores the history and the cut rate.
    del trainer
    resumed = Trainer(config, validate_fn)
    assert resumed.solver.iter == 3
    assert resumed.lr == pytest.approx(0.001)
    resumed._snapshot_pair()
    for a, b in zip(before, solverstate_history(tmp_path / "stage1" / "snapshot_iter_3.solverstate"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_step_policy_rate(caffe, tiny, tmp_path):
    from deconvnet.train.trainer import StageConfig, Trainer

    trainer = Trainer(StageConfig(solver=tiny["solvers"][1], run_dir=tmp_path / "s", val_interval=0,
                                  snapshot_interval=0, progress=False))
    trainer.solver.step(4)   # stepsize 4, gamma 0.1
    assert trainer.lr == pytest.approx(0.001)


def test_resume_after_kill(tiny, tmp_path):
    run_dir = tmp_path / "run"
    proc = train_cli(tiny, run_dir, "--stage", "1", "--max-iter", "400", "--val-interval", "0",
                     "--snapshot-interval", "5", "--keep-last", "50",
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = run_dir / "stage1" / "snapshot_iter_10.solverstate"
    deadline = time.time() + 300
    while not target.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists(), "the run should have reached iteration 10"
    # The newest whole snapshot: a kill during a write leaves a hidden .part file
    # (.snapshot_iter_30.<host>-<pid>.<tag>.part.solverstate), which is not one.
    killed_at = max(int(p.stem.split("_")[-1]) for p in (run_dir / "stage1").glob("snapshot_iter_*.solverstate"))
    assert killed_at < 400
    result = train_cli(tiny, run_dir, "--stage", "1", "--max-iter", "20" if killed_at < 20 else str(killed_at + 5),
                       "--val-interval", "0", "--snapshot-interval", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    events = read_log(run_dir / "stage1" / "log.jsonl")
    resume = [e for e in events if e["event"] == "resume"]
    assert resume and resume[0]["iter"] == killed_at
    # After the resume the iterations continue from there, not from 0.
    after = [e["iter"] for e in events[events.index(resume[0]):] if e["event"] == "train"]
    assert after and min(after) > killed_at


def test_snapshot_retention_and_best(caffe, tiny, tmp_path):
    from deconvnet.train.trainer import StageConfig, Trainer, snapshots

    values = iter([0.5, 0.4, 0.3, 0.2, 0.1])
    config = StageConfig(solver=tiny["solvers"][1], run_dir=tmp_path / "s", val_interval=2,
                         snapshot_interval=2, keep_last=2, max_iter=10, progress=False)
    # What the best snapshot is chosen by: the release recipe's pixel accuracy.
    trainer = Trainer(config, lambda t: dict(mean_iou=0.0, pixel_accuracy=next(values)))
    trainer.train()
    kept = [it for it, _ in snapshots(tmp_path / "s")]
    assert kept == [2, 8, 10]    # the best (iteration 2) and the last two
    assert (tmp_path / "s" / "best.caffemodel").read_bytes() == \
        (tmp_path / "s" / "snapshot_iter_2.caffemodel").read_bytes()
    assert json.loads((tmp_path / "s" / "train_state.json").read_text())["best_iter"] == 2


def test_disk_check_stops_cleanly(tiny, tmp_path):
    result = train_cli(tiny, tmp_path / "run", "--stage", "1", "--max-iter", "4", "--snapshot-interval", "2",
                       "--val-interval", "0", "--min-free-gb", "1000000")
    assert result.returncode == 3
    assert "stopped cleanly" in result.stderr and "GiB free" in result.stderr
    assert not list((tmp_path / "run" / "stage1").glob("*.caffemodel"))


def test_plain_caffe_train_and_resume(caffe, tiny, tmp_path):
    """`caffe train -solver stageN_solver.prototxt -weights INIT` from the
    solver's folder, then `-snapshot` to resume, as the README documents."""
    from deconvnet.net import nets

    folder = tiny["solvers"][1].parent
    deploy = write(tmp_path / "deploy.prototxt", str(nets.deconvnet_deploy(size=TINY)))
    init = caffe.Net(str(deploy), caffe.TEST)
    init.params["conv1_1"][0].data[...] = 0.5
    init.save(str(tmp_path / "init.caffemodel"))
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")
    caffe_bin = str(VENV_BIN / "caffe")
    first = subprocess.run([caffe_bin, "train", "-solver", "stage1_solver.prototxt", "-weights",
                            str(tmp_path / "init.caffemodel")], cwd=folder, env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Finetuning from" in first.stderr
    state = folder / "snapshots" / "stage1_iter_6.solverstate"
    assert state.exists() and (folder / "snapshots" / "stage1_iter_6.caffemodel").exists()
    text = tiny["solvers"][1].read_text().replace("max_iter: 6", "max_iter: 8")
    write(folder / "stage1_more.prototxt", text)
    again = subprocess.run([caffe_bin, "train", "-solver", "stage1_more.prototxt", "-snapshot", str(state)],
                           cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming from" in again.stderr
    assert (folder / "snapshots" / "stage1_iter_8.caffemodel").exists()


def test_bn_statistics_match_numpy(caffe, tmp_path):
    """A net of 1x1 convolutions: the BatchNorm inputs are recomputed in numpy
    from the same batches, through BatchNorm with batch statistics."""
    from test_seg_data_layer import make_pattern_db

    from deconvnet.net.bn_stats import write_statistics

    make_pattern_db(tmp_path / "db", count=6)
    params = dict(source=str(tmp_path / "db"), batch_size=3, crop_size=32, mirror=True, shuffle=True,
                  seed=11, workers=0)
    data = ('layer { name: "data" type: "Python" top: "data" top: "label" python_param { '
            f"module: \"python_layers.seg_data\" layer: \"SegDataLayer\" param_str: '{json.dumps(params)}' }} }}\n")

    def conv_bn(name, bottom, n):
        return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
                f'convolution_param {{ num_output: {n} kernel_size: 1 weight_filler {{ type: "gaussian" std: 0.01 }} '
                f'bias_filler {{ type: "gaussian" std: 0.1 }} }} }}\n'
                f'layer {{ name: "{name}_bn" type: "BatchNorm" bottom: "{name}" top: "{name}" }}\n'
                f'layer {{ name: "{name}_scale" type: "Scale" bottom: "{name}" top: "{name}" '
                f'scale_param {{ bias_term: true filler {{ type: "gaussian" mean: 1 std: 0.2 }} '
                f'bias_filler {{ type: "gaussian" std: 0.2 }} }} }}\n'
                f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}\n')

    model = write(tmp_path / "train.prototxt", data + conv_bn("conv1", "data", 4) + conv_bn("conv2", "conv1", 3))
    caffe.set_random_seed(2)
    net = caffe.Net(str(model), caffe.TRAIN)
    net.save(str(tmp_path / "w.caffemodel"))
    w = {k: [p.data.copy() for p in v] for k, v in net.params.items()}
    del net
    batches = 4
    write_statistics(model, tmp_path / "w.caffemodel", tmp_path / "bn.caffemodel", batches, progress=False)
    out = caffe.Net(str(model), str(tmp_path / "bn.caffemodel"), caffe.TEST)

    # The same batches, from a net holding only the data layer.
    feeder = caffe.Net(str(write(tmp_path / "data.prototxt", data)), caffe.TRAIN)
    inputs = {"conv1_bn": [], "conv2_bn": []}
    for _ in range(batches):
        feeder.forward()
        x = feeder.blobs["data"].data.astype(np.float64)               # (N, 3, H, W)
        c1 = np.einsum("oc,nchw->nohw", w["conv1"][0][:, :, 0, 0], x) + w["conv1"][1][None, :, None, None]
        inputs["conv1_bn"].append(c1)
        mean = c1.mean(axis=(0, 2, 3), keepdims=True)
        var = c1.var(axis=(0, 2, 3), keepdims=True)
        normed = (c1 - mean) / np.sqrt(var + 1e-5)
        scaled = normed * w["conv1_scale"][0][None, :, None, None] + w["conv1_scale"][1][None, :, None, None]
        relu = np.maximum(scaled, 0)
        c2 = np.einsum("oc,nchw->nohw", w["conv2"][0][:, :, 0, 0], relu) + w["conv2"][1][None, :, None, None]
        inputs["conv2_bn"].append(c2)
    for name, xs in inputs.items():
        allx = np.concatenate([x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1) for x in xs], axis=1)
        m = allx.shape[1]
        mean, var = allx.mean(axis=1), allx.var(axis=1) * m / (m - 1)
        got_mean, got_var, factor = (p.data for p in out.params[name])
        assert factor[0] == 1
        np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got_var, var, rtol=1e-3, atol=1e-5)


def test_plot_tool(tmp_path):
    log = write(tmp_path / "run" / "log.jsonl", "\n".join(json.dumps(r) for r in [
        dict(event="train", iter=10, loss=2.0, lr=0.01), dict(event="train", iter=20, loss=1.5, lr=0.01),
        dict(event="val", iter=20, val_miou=0.3), dict(event="train", iter=30, loss=1.2, lr=0.001)]))
    caffe_log = write(tmp_path / "caffe.log", "I1121 solver.cpp:218] Iteration 0 (0 iter/s, 1s/20 iters), "
                      "loss = 3.0\nI1121 sgd_solver.cpp:105] Iteration 0, lr = 0.01\n"
                      "I1121 solver.cpp:218] Iteration 20 (1 iter/s, 1s/20 iters), loss = 2.5\n"
                      "I1121 solver.cpp:330] Iteration 20, Testing net (#0)\n"
                      "I1121 solver.cpp:397]     Test net output #0: accuracy = 0.7\n")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "plot_training.py"), str(log), str(caffe_log),
                             "--out", str(tmp_path / "plots")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert names == ["loss.png", "lr.png", "test_accuracy.png", "val_miou.png"]


def test_initial_weights_must_cover_the_net(tiny, tmp_path):
    """Issue 12, item 2, for training: a caffemodel lacking layers (here: a
    0-byte file) stops tools/train.py naming them; the flag goes on."""
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    refused = train_cli(tiny, tmp_path / "run", "--stage", "1", "--weights", str(empty))
    assert refused.returncode == 2 and f"{empty} has no weights for" in refused.stderr, refused.stderr[-2000:]
    assert "conv1_1" in refused.stderr
    allowed = train_cli(tiny, tmp_path / "run2", "--stage", "1", "--weights", str(empty), "--allow-missing-weights",
                        "--max-iter", "1", "--val-interval", "0")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "keep their fillers" in allowed.stderr


# --- Issue 25, item 12: snapshots whole, as pairs, and a resume past a damaged one ------------------------------

def test_sigkill_loop_during_snapshots_always_resumes(tiny, tmp_path):
    """A snapshot every iteration and SIGKILL at random moments, many times:
    every rerun resumes (before, a kill during Caffe's in-place write left a
    half-written solverstate, and every rerun then aborted with
    `Check failed: state.history_size() == history_.size()`)."""
    from caffe.proto import caffe_pb2

    run_dir = tmp_path / "run"
    rng = np.random.default_rng(25)
    args = ("--stage", "1", "--max-iter", "400", "--val-interval", "0", "--snapshot-interval", "1",
            "--keep-last", "3")
    resumed = 0
    for _ in range(8):
        log = run_dir / "stage1" / "log.jsonl"
        size = log.stat().st_size if log.exists() else 0
        proc = train_cli(tiny, run_dir, *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120   # until it trains (its resume or first iterations logged)
        while time.time() < deadline and proc.poll() is None and (log.stat().st_size if log.exists() else 0) == size:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        assert proc.returncode == -9, err[-3000:]   # it was still running: killed, not failed
        resumed += "resumed" in err
    done = train_cli(tiny, run_dir, "--stage", "1", "--max-iter", "420", "--val-interval", "0",
                     "--snapshot-interval", "1", "--keep-last", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert resumed >= 5, resumed
    stage = run_dir / "stage1"
    for path in stage.glob("snapshot_iter_*.solverstate"):    # every pair on disk is whole
        state = caffe_pb2.SolverState()
        state.ParseFromString(path.read_bytes())
        assert Path(state.learned_net) == path.with_suffix(".caffemodel").resolve()
    for model in stage.glob("snapshot_iter_*.caffemodel"):   # and no half pair is left
        assert model.with_suffix(".solverstate").exists(), model
    assert (stage / "snapshot_iter_420.caffemodel").exists() and not (stage / ".incoming").exists()


def test_a_damaged_newest_snapshot_falls_back_to_the_one_before(tiny, tmp_path):
    """The half-written file as the old in-place write left it (simulated by
    cutting the newest solverstate short): the resume names it, sets it
    aside and goes on from the previous pair."""
    run_dir = tmp_path / "run"
    first = train_cli(tiny, run_dir, "--stage", "1", "--max-iter", "4", "--val-interval", "0",
                      "--snapshot-interval", "2", "--keep-last", "5")
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir / "stage1" / "train_state.json").unlink()        # not finished: resume it
    newest = run_dir / "stage1" / "snapshot_iter_4.solverstate"
    data = newest.read_bytes()
    newest.write_bytes(data[:len(data) // 2])
    again = train_cli(tiny, run_dir, "--stage", "1", "--max-iter", "6", "--val-interval", "0",
                      "--snapshot-interval", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "snapshot at iteration 4 is damaged" in again.stderr and "snapshot_iter_4.solverstate" in again.stderr
    resume = [e for e in read_log(run_dir / "stage1" / "log.jsonl") if e["event"] == "resume"]
    assert resume[-1]["iter"] == 2
    assert (run_dir / "stage1" / "snapshot_iter_4.solverstate.damaged").exists()
    assert (run_dir / "stage1" / "snapshot_iter_6.solverstate").exists()


# --- Issue 25, item 15: solver typos named by line -----------------------------------------------------------------

@pytest.mark.parametrize("typo, expected", [
    (("base_lr:", "base_lrr:"), r"has no field named \"base_lrr\".*did you mean 'base_lr'\?"),
    (('lr_policy: "step"', 'lr_policy: "stpe"'), r"lr_policy 'stpe' is not one of .*did you mean 'step'\?"),
    (("train_net: \"", "train_net: \"x"), r"train_net '.*' does not exist"),
])
def test_solver_typos_are_named_by_line(tiny, tmp_path, typo, expected):
    import re

    text = tiny["solvers"][1].read_text()
    assert typo[0] in text
    bad = write(tiny["solvers"][1].parent / f"typo_{abs(hash(typo)) % 1000}.prototxt",
                text.replace(typo[0], typo[1], 1))
    line = next(n for n, row in enumerate(bad.read_text().splitlines(), start=1) if typo[1] in row)
    try:
        result = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--stage", "1", "--solver1",
                                 str(bad), "--run-dir", str(tmp_path / "run")], capture_output=True, text=True,
                                timeout=300)
    finally:
        bad.unlink()
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{bad}:{line}" in result.stderr and re.search(expected, result.stderr), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Check failed" not in result.stderr


def test_the_committed_solvers_pass_the_check(caffe):
    from deconvnet.train.solver_check import check_solver

    for name in ("stage1_solver.prototxt", "stage2_solver.prototxt"):
        assert check_solver(ROOT / "prototxt" / name).iter_size == 8


# --- Issue 25, item 10 (train) and the weight-decay log -------------------------------------------------------------

def test_train_refuses_flags_without_effect(tiny, tmp_path):
    patience = train_cli(tiny, tmp_path / "a", "--stage", "1", "--patience", "5")
    assert patience.returncode == 2 and "--patience has no effect with --lr-policy step" in patience.stderr
    metric = train_cli(tiny, tmp_path / "b", "--stage", "1", "--plateau-metric", "mean_iou")
    assert metric.returncode == 2 and "--plateau-metric has no effect" in metric.stderr
    # --recipe paper on the release solvers (iter_size 8): the paper's batch of 64 a pass is not in them.
    paper = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--stage", "1", "--recipe", "paper",
                            "--run-dir", str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert paper.returncode == 2 and "has iter_size 8" in paper.stderr and "make_prototxt.py --recipe paper" \
        in paper.stderr, paper.stderr[-2000:]
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").rglob("*.caffemodel"))
    # The negative case: the plateau rule takes its flags.
    ok = train_cli(tiny, tmp_path / "d", "--stage", "1", "--lr-policy", "plateau", "--patience", "5",
                   "--max-iter", "1", "--val-interval", "0", "--snapshot-interval", "0")
    assert ok.returncode == 0, ok.stderr[-2000:]


def test_weight_decay_is_logged_only_when_it_changes(caffe, tiny, tmp_path, caplog):
    import logging

    from deconvnet.train.trainer import StageConfig, prepare_solver

    caplog.set_level(logging.INFO)
    prepare_solver(StageConfig(solver=tiny["solvers"][1], run_dir=tmp_path / "a", weight_decay_rule="bvlc"))
    assert "weight_decay" not in caplog.text                  # 0.0005 stays 0.0005: nothing to say
    prepare_solver(StageConfig(solver=ROOT / "prototxt" / "stage1_solver.prototxt", run_dir=tmp_path / "b",
                               weight_decay_rule="bvlc"))
    assert "weight_decay 6.25e-05 -> 0.0005 (bvlc rule, iter_size 8)" in caplog.text
