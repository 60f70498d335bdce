"""Solver definitions for the two DeconvNet training stages and FCN-8s.

Paths inside are relative to the folder the solvers live in (``prototxt/``),
from which ``caffe train -solver stage1_solver.prototxt`` is run.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from deconvnet.common.recipes import PAPER_WEIGHT_DECAY, RELEASE, Recipe

from caffe.proto import caffe_pb2


@dataclass(frozen=True)
class Schedule:
    """The paper's optimisation (docs/PAPER.md, section 3) with the authors' steps."""

    max_iter: int
    stepsize: int
    base_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = PAPER_WEIGHT_DECAY  # as written into the solver (see stage_schedule)
    gamma: float = 0.1
    batch_size: int = RELEASE.batch_per_pass   # per forward pass
    iter_size: int = RELEASE.iter_size         # 8 x 8 = the paper's mini-batch of 64
    snapshot: int = 2000  # one snapshot + solverstate is about 1.9 GB
    test_interval: int = 1000
    test_iter: int = 50
    display: int = 20


STAGE1 = Schedule(max_iter=20000, stepsize=9000)
STAGE2 = Schedule(max_iter=40000, stepsize=10000)

# Why a solver's weight_decay may not read 0.0005 (see deconvnet/common/recipes.py).
DECAY_NOTE = {
    "release": "# weight_decay = 0.0005 / iter_size: the authors' 2015 Caffe added decay x W to the gradient\n"
               "# summed over iter_size passes and then scaled by lr / iter_size; this Caffe averages the\n"
               "# passes first and then adds decay x W, so this value gives the released update exactly.\n",
    "bvlc": "# weight_decay = 0.0005 under this Caffe's rule (average the passes, then add decay x W):\n"
            "# the paper's text taken literally.\n",
}


def stage_schedule(stage: int, recipe: Recipe = RELEASE) -> Schedule:
    """Stage 1's or stage 2's schedule under a recipe: its batch per pass,
    the iter_size that makes 64, and the weight decay for its rule."""
    base = {1: STAGE1, 2: STAGE2}[stage]
    return replace(base, batch_size=recipe.batch_per_pass, iter_size=recipe.iter_size,
                   weight_decay=recipe.solver_weight_decay(recipe.iter_size))


def deconvnet_solver(train_net: str, test_net: str, snapshot_prefix: str,
                     schedule: Schedule, gpu: bool = True) -> caffe_pb2.SolverParameter:
    s = caffe_pb2.SolverParameter()
    s.train_net = train_net
    s.test_net.append(test_net)
    s.test_iter.append(schedule.test_iter)
    s.test_interval = schedule.test_interval
    s.test_initialization = False
    s.base_lr = schedule.base_lr
    s.lr_policy = "step"
    s.gamma = schedule.gamma
    s.stepsize = schedule.stepsize
    s.max_iter = schedule.max_iter
    s.momentum = schedule.momentum
    s.weight_decay = schedule.weight_decay
    s.iter_size = schedule.iter_size
    s.display = schedule.display
    s.average_loss = schedule.display
    s.snapshot = schedule.snapshot
    s.snapshot_prefix = snapshot_prefix
    s.solver_mode = caffe_pb2.SolverParameter.GPU if gpu else caffe_pb2.SolverParameter.CPU
    return s


def benchmark_solver(train_net: str, max_iter: int = 20) -> caffe_pb2.SolverParameter:
    """The stage-1 solver without test nets or snapshots, displaying every
    second update (Caffe prints iter/s per display), for timing training."""
    s = deconvnet_solver(train_net, "", "", stage_schedule(1))
    del s.test_net[:], s.test_iter[:]
    s.ClearField("test_interval")
    s.ClearField("test_initialization")
    s.ClearField("snapshot_prefix")
    s.max_iter = max_iter
    s.display = s.average_loss = 2
    s.snapshot = 0
    s.snapshot_after_train = False
    return s


def fcn8s_solver(train_net: str, test_net: str, snapshot_prefix: str) -> caffe_pb2.SolverParameter:
    """FCN-8s' released settings: unnormalised loss, so a tiny fixed rate
    with high momentum."""
    s = caffe_pb2.SolverParameter()
    s.train_net = train_net
    s.test_net.append(test_net)
    s.test_iter.append(1449)  # VOC 2012 val
    s.test_interval = 999999999  # scored by tools, not by the solver
    s.test_initialization = False
    s.base_lr = 1e-14
    s.lr_policy = "fixed"
    s.momentum = 0.99
    s.weight_decay = 0.0005
    s.iter_size = 1
    s.max_iter = 100000
    s.display = 20
    s.average_loss = 20
    s.snapshot = 4000
    s.snapshot_prefix = snapshot_prefix
    s.solver_mode = caffe_pb2.SolverParameter.GPU
    return s
