"""The recipes' weight decay in our (BVLC) Caffe, one solver step at a time,
against numpy implementations of the two update rules:

- the authors' 2015 Caffe: V = m V + (lr / iter_size) (sum of the passes'
  gradients + decay W), then W -= V;
- BVLC Caffe: V = m V + lr (sum / iter_size + decay W), then W -= V.

The release recipe's solver value must reproduce the first, the paper
recipe's the second."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from deconvnet.common.recipes import PAPER, PAPER_WEIGHT_DECAY, RELEASE
from deconvnet.net.solvers import stage_schedule

from helpers import write

ITER_SIZE, BATCH, LR, MOMENTUM, STEPS = 2, 2, 0.5, 0.9, 3
RNG = np.random.default_rng(7)
X = RNG.normal(size=(ITER_SIZE * BATCH, 3)).astype(np.float32)
T = RNG.normal(size=(ITER_SIZE * BATCH, 2)).astype(np.float32)


def solver_steps(caffe, tmp_path, weight_decay: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Initial (W, b) and the (W, b) after STEPS updates of our Caffe."""
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["data"], f["target"] = X, T
    write(tmp_path / "list.txt", f"{tmp_path / 'data.h5'}\n")
    net = write(tmp_path / "net.prototxt", f"""
layer {{ name: "d" type: "HDF5Data" top: "data" top: "target"
  hdf5_data_param {{ source: "{tmp_path / 'list.txt'}" batch_size: {BATCH} shuffle: false }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "y"
  inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" std: 1 }}
                         bias_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "target" top: "loss" }}
""")
    solver = write(tmp_path / "solver.prototxt", f"""net: "{net}"
base_lr: {LR} lr_policy: "fixed" momentum: {MOMENTUM} weight_decay: {weight_decay!r}
iter_size: {ITER_SIZE} max_iter: 100 random_seed: 3 solver_mode: CPU display: 0
""")
    s = caffe.SGDSolver(str(solver))
    start = [p.data.copy() for p in s.net.params["ip"]]
    s.step(STEPS)
    return start, [p.data.copy() for p in s.net.params["ip"]]


def gradients(w: np.ndarray, b: np.ndarray, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """EuclideanLoss = sum((x W^T + b - t)^2) / (2 N): its gradients in W and b."""
    dy = (x @ w.T + b - t) / len(x)
    return dy.T @ x, dy.sum(0)


def numpy_steps(start, decay: float, rule: str):
    params = [p.astype(np.float64) for p in start]
    history = [np.zeros_like(p) for p in params]
    for _ in range(STEPS):
        summed = [np.zeros_like(p) for p in params]
        for k in range(ITER_SIZE):  # the passes read consecutive rows
            rows = slice(k * BATCH, (k + 1) * BATCH)
            for acc, g in zip(summed, gradients(*params, X[rows], T[rows]), strict=True):
                acc += g
        for i, p in enumerate(params):
            if rule == "2015":
                step = LR / ITER_SIZE * (summed[i] + decay * p)
            else:
                step = LR * (summed[i] / ITER_SIZE + decay * p)
            history[i] = MOMENTUM * history[i] + step
            params[i] = p - history[i]
    return params


def assert_close(got, expected) -> None:
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6 * np.abs(e).max())


def test_release_recipe_gives_the_2015_update(caffe, tmp_path):
    start, got = solver_steps(caffe, tmp_path, RELEASE.solver_weight_decay(ITER_SIZE))
    assert_close(got, numpy_steps(start, PAPER_WEIGHT_DECAY, "2015"))
    # The check can tell the rules apart: the 2015 update is not BVLC's.
    bvlc = numpy_steps(start, PAPER_WEIGHT_DECAY, "bvlc")
    assert not np.allclose(got[0], bvlc[0], rtol=1e-6, atol=1e-6 * np.abs(bvlc[0]).max())


def test_paper_recipe_gives_the_bvlc_update(caffe, tmp_path):
    start, got = solver_steps(caffe, tmp_path, PAPER.solver_weight_decay(ITER_SIZE))
    assert_close(got, numpy_steps(start, PAPER_WEIGHT_DECAY, "bvlc"))


@pytest.mark.parametrize("stage", [1, 2])
def test_stage_schedules(stage):
    release, paper = stage_schedule(stage, RELEASE), stage_schedule(stage, PAPER)
    assert (release.batch_size, release.iter_size, release.weight_decay) == (8, 8, pytest.approx(6.25e-5))
    assert (paper.batch_size, paper.iter_size, paper.weight_decay) == (64, 1, pytest.approx(5e-4))


@pytest.mark.parametrize("rule, expected", [("release", 0.0005 / 8), ("bvlc", 0.0005), (None, 0.0005 / 8)])
def test_train_tool_rewrites_the_decay_for_its_rule(caffe, tmp_path, rule, expected):
    """tools/train.py passes the recipe's rule; the committed solver has iter_size 8."""
    from deconvnet.common.cli import PROTOTXT
    from deconvnet.train.trainer import StageConfig, prepare_solver

    config = StageConfig(solver=PROTOTXT / "stage1_solver.prototxt", run_dir=tmp_path, weight_decay_rule=rule)
    _, param = prepare_solver(config)
    assert param.iter_size == 8 and param.weight_decay == pytest.approx(expected)


def test_recipe_flags_override_single_fields():
    import argparse

    from deconvnet.common.recipes import add_field_options, add_recipe_option, recipe_from_args

    parser = argparse.ArgumentParser()
    add_recipe_option(parser)
    add_field_options(parser, "weight_decay_rule", "min_box_side")
    recipe = recipe_from_args(parser.parse_args(["--recipe", "paper", "--min-box-side", "50"]),
                              "weight_decay_rule", "min_box_side")
    assert (recipe.name, recipe.min_box_side, recipe.weight_decay_rule) == ("paper", 50, "bvlc")
    assert recipe.ensemble == "mean"
    assert recipe_from_args(parser.parse_args([]), "weight_decay_rule", "min_box_side") == RELEASE
