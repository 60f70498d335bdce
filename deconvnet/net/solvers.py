"""Solver definitions for the two DeconvNet training stages, FCN-8s and
DeepLab-LargeFOV.

Paths inside are relative to the folder the solvers live in (``prototxt/``),
from which ``caffe train -solver stage1_solver.prototxt`` is run.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from deconvnet.common.recipes import DEEPLAB_LARGEFOV, PAPER_WEIGHT_DECAY, RELEASE, DeepLabRecipe, Recipe

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


# Whole-image solvers (FCN-8s, DeepLab) leave validation to the tools: the
# test net is the 1,449 VOC 2012 val images, never run by the solver.
VOC_VAL_IMAGES = 1449
SCORED_BY_TOOLS = 999999999

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


def _solver(train_net: str, test_net: str, test_iter: int, test_interval: int, snapshot_prefix: str,
            display: int, gpu: bool = True, **fields: float | int | str) -> caffe_pb2.SolverParameter:
    """A solver with one train net and one test net; ``fields`` the rest
    (rate, schedule, momentum, decay, iter_size, snapshot)."""
    s = caffe_pb2.SolverParameter(train_net=train_net, test_interval=test_interval, test_initialization=False,
                                  display=display, average_loss=display, snapshot_prefix=snapshot_prefix,
                                  **fields)
    s.test_net.append(test_net)
    s.test_iter.append(test_iter)
    s.solver_mode = caffe_pb2.SolverParameter.GPU if gpu else caffe_pb2.SolverParameter.CPU
    return s


def deconvnet_solver(train_net: str, test_net: str, snapshot_prefix: str,
                     schedule: Schedule, gpu: bool = True) -> caffe_pb2.SolverParameter:
    return _solver(train_net, test_net, schedule.test_iter, schedule.test_interval, snapshot_prefix,
                   schedule.display, gpu, base_lr=schedule.base_lr, lr_policy="step", gamma=schedule.gamma,
                   stepsize=schedule.stepsize, max_iter=schedule.max_iter, momentum=schedule.momentum,
                   weight_decay=schedule.weight_decay, iter_size=schedule.iter_size, snapshot=schedule.snapshot)


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
    with high momentum. Val (VOC 2012, 1,449 images) is scored by tools."""
    return _solver(train_net, test_net, VOC_VAL_IMAGES, SCORED_BY_TOOLS, snapshot_prefix, 20,
                   base_lr=1e-14, lr_policy="fixed", momentum=0.99, weight_decay=0.0005, iter_size=1,
                   max_iter=100000, snapshot=4000)


def deeplab_solver(train_net: str, test_net: str, snapshot_prefix: str,
                   recipe: DeepLabRecipe = DEEPLAB_LARGEFOV, gpu: bool = True) -> caffe_pb2.SolverParameter:
    """DeepLab-LargeFOV's released schedule: a step every 2,000 of 6,000
    updates of 20 images; val is scored by tools."""
    return _solver(train_net, test_net, VOC_VAL_IMAGES, SCORED_BY_TOOLS, snapshot_prefix, 10, gpu,
                   base_lr=recipe.base_lr, lr_policy="step", gamma=recipe.gamma, stepsize=recipe.stepsize,
                   max_iter=recipe.max_iter, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                   iter_size=recipe.iter_size, snapshot=2000)
