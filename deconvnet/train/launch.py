"""What the training tools (tools/train.py, tools/train_deeplab.py) share:
checking ``--gpus`` against the solvers before anything starts, and running
one stage on one process or one per GPU, its expected failures turned into
a logged message and an exit code."""
from __future__ import annotations

import logging
from pathlib import Path

from deconvnet.net.nets import crop_batch_size
from deconvnet.net.weights import WeightsMismatch
from deconvnet.train.data_parallel import RankFailed, check_devices, parse_gpus, rank_iter_size, train_stage
from deconvnet.train.trainer import DiskFull, StageConfig, Trainer, read_solver

LOG = logging.getLogger(__name__)

def check_gpus(spec: str, solvers: list[Path]) -> list[int]:
    """The GPU ids of ``--gpus spec``; ValueError when a count does not
    divide a solver's iter_size (with the batches that would work) or
    this Caffe or machine cannot train on them."""
    gpus = parse_gpus(spec)
    for solver in solvers:
        param = read_solver(solver)
        net = solver.resolve().parent / (param.train_net or param.net)
        rank_iter_size(param.iter_size, len(gpus), crop_batch_size(net) if net.is_file() else None, solver)
    check_devices(gpus)
    return gpus


def run_stage(config: StageConfig, gpus: list[int] | None, tool: str) -> tuple[Path | None, int]:
    """Trains ``config`` here (no ``gpus``) or on one rank per GPU: (the
    final caffemodel, 0), or (None, exit code) after logging why it stopped."""
    try:
        final = Trainer(config).train() if gpus is None else train_stage(config, list(gpus))
    except DiskFull as err:
        LOG.error("%s: stopped cleanly: %s", tool, err)
        return None, 3
    except WeightsMismatch as err:  # a refusal before training
        LOG.error("%s: %s", tool, err)
        return None, 2
    except RankFailed as err:
        LOG.error("%s: %s", tool, err)
        return None, 1
    return final, 0
