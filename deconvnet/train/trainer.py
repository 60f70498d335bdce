"""The two-stage training recipe driven through pycaffe (docs/PAPER.md, section 3).

A Trainer runs one stage from a solver file: it validates every N
iterations on held-out crops (mean IoU from a confusion matrix), applies the
authors' step schedule or the paper's plateau rule (divide the rate by 10
when validation mIoU has not improved for ``patience`` validations), keeps
the best snapshot and the last K, checks free disk before each snapshot,
resumes from the latest solverstate, shows a progress bar and writes a
JSON-lines log.

Snapshots appear whole or not at all, as a pair: Caffe writes them into
``<run>/.incoming/`` (it writes in place), then the caffemodel is renamed
into the run folder and the solverstate, pointed at it, is written there
atomically, last. A resume checks the newest pair against the net and
falls back to the previous one, by name, when it is damaged.

The plateau rule changes the solver's base rate in place (``lr_policy:
fixed``), so the momentum history is untouched, and the solverstate keeps
it across a re-created solver on resume.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from deconvnet.common.atomic import atomic_path
from deconvnet.common.cli import option
from deconvnet.common.constants import NUM_CLASSES
from deconvnet.common.machine import use_device
from deconvnet.common.recipes import RELEASE, solver_weight_decay
from deconvnet.eval.scoring import confusion, scores
from deconvnet.net.nets import net_reading_from
from deconvnet.net.weights import check_weights
from deconvnet.train.solver_check import check_solver

import caffe
from caffe.proto import caffe_pb2

LOG = logging.getLogger(__name__)
STATE_FILE = "train_state.json"
INCOMING = ".incoming"  # where Caffe writes a snapshot before it is moved into place
FOLLOWERS_SOLVER = "solver_followers.prototxt"  # ranks other than 0 (data_parallel.py)


class DiskFull(Exception):
    pass


@dataclass
class StageConfig:
    """One stage's run. The schedule (max_iter, validation and snapshot
    intervals, validation batches) comes from the solver file; a value set
    here overrides it. The flags of tools/train.py are generated from these
    fields."""

    solver: Path = option(cli=False, help="a stage solver file (its paths relative to its folder)")
    run_dir: Path = option(cli=False, help="snapshots, logs and state of this stage")
    weights: Path | None = option(None, cli=False, help="initial weights (-weights)")
    allow_missing_weights: bool = option(False, help="start even when --weights lacks learned layers of the "
                                                     "net (they are listed and keep their fillers)")
    lr_policy: str = option(RELEASE.lr_policy, choices=("step", "plateau"),
                            help="step: the solver's steps; plateau: divide the rate by 10 after "
                                 "--patience validations without improvement (the paper's rule)")
    patience: int = option(RELEASE.patience, help="plateau: validations without improvement before a cut")
    plateau_metric: str = option(RELEASE.plateau_metric, cli=False,
                                 help="what must improve: mean_iou or pixel_accuracy (also picks best.caffemodel)")
    weight_decay_rule: str | None = option(None, cli=False,
                                           help="release or bvlc: rewrite the solver's weight_decay for that "
                                                "rule and its iter_size (deconvnet/common/recipes.py); None keeps it")
    val_interval: int | None = option(None, help="iterations between validations, 0 for none "
                                                 "(default: the solver's test_interval)")
    val_batches: int | None = option(None, help="batches per validation (default: the solver's test_iter)")
    snapshot_interval: int | None = option(None, help="iterations between snapshots "
                                                      "(default: the solver's snapshot)")
    keep_last: int = option(2, help="snapshots kept besides the best")
    log_interval: int = option(10, help="iterations between training records (loss, time) in log.jsonl")
    min_free_bytes: int | None = option(None, cli=False, help="default: twice a snapshot's estimated size")
    max_iter: int | None = option(None, help="override the solver's max_iter")
    gpu: int | None = option(None, help="GPU id (default: CPU)")
    progress: bool = option(True, cli=False)
    ranks: int = option(1, cli=False, help="data-parallel ranks (deconvnet/train/data_parallel.py): each runs "
                                           "iter_size / ranks passes per update")

    def from_solver(self, solver: caffe_pb2.SolverParameter) -> StageConfig:
        """This config with the schedule the solver file gives where unset."""
        return replace(
            self,
            val_interval=self.val_interval if self.val_interval is not None else solver.test_interval,
            val_batches=self.val_batches if self.val_batches is not None else
            (solver.test_iter[0] if solver.test_iter else 0),
            snapshot_interval=self.snapshot_interval if self.snapshot_interval is not None else solver.snapshot,
            max_iter=self.max_iter if self.max_iter is not None else solver.max_iter)


def read_solver(path: Path) -> caffe_pb2.SolverParameter:
    """The solver file, checked (deconvnet.train.solver_check): SolverError
    names the line and the fix."""
    return check_solver(path)


def prepare_solver(config: StageConfig) -> tuple[Path, caffe_pb2.SolverParameter]:
    """The stage's solver, rewritten into the run folder: absolute net paths,
    snapshots into the run folder, validation and snapshots driven by us."""
    base = read_solver(config.solver)
    folder = config.solver.resolve().parent
    param = caffe_pb2.SolverParameter()
    param.CopyFrom(base)
    config.run_dir.mkdir(parents=True, exist_ok=True)

    def local_copy(name: str) -> str:
        net_file = (folder / name).resolve()
        return str(net_reading_from(net_file, config.run_dir / net_file.name).resolve())
    for field in ("train_net", "net"):
        if param.HasField(field):
            setattr(param, field, local_copy(getattr(param, field)))
    nets = [local_copy(n) for n in param.test_net]
    del param.test_net[:]
    param.test_net.extend(nets)
    if param.test_net:
        del param.test_iter[:]
        param.test_iter.append(1)
        param.test_interval = 2 ** 31 - 1  # validation is ours
        param.test_initialization = False
    param.snapshot = 0                     # snapshots are ours too
    param.snapshot_prefix = str(config.run_dir.resolve() / INCOMING / "snapshot")
    if config.max_iter is not None:
        param.max_iter = config.max_iter
    whole_iter_size = max(param.iter_size, 1)  # the update's passes, over all ranks
    if config.ranks > 1:
        if whole_iter_size % config.ranks:
            raise ValueError(f"{config.ranks} ranks cannot share iter_size {whole_iter_size}")
        param.iter_size = whole_iter_size // config.ranks
        param.layer_wise_reduce = False  # one reduction per update, not one per pass
    if config.weight_decay_rule is not None:
        decay = solver_weight_decay(config.weight_decay_rule, whole_iter_size)
        if not np.isclose(decay, param.weight_decay, rtol=1e-6, atol=0):  # the solver stores a float32
            LOG.info("weight_decay %g -> %g (%s rule, iter_size %d)", param.weight_decay, decay,
                     config.weight_decay_rule, param.iter_size)
        param.weight_decay = decay
    if config.lr_policy == "plateau":
        param.lr_policy = "fixed"
    elif config.lr_policy != "step":
        raise ValueError(f"lr policy must be step or plateau, not {config.lr_policy!r}")
    param.display = 0
    param.solver_mode = (caffe_pb2.SolverParameter.CPU if config.gpu is None
                         else caffe_pb2.SolverParameter.GPU)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    path = config.run_dir / "solver.prototxt"
    path.write_text(str(param))
    if config.ranks > 1:  # the other ranks validate nothing: no test nets
        followers = caffe_pb2.SolverParameter()
        followers.CopyFrom(param)
        del followers.test_net[:]
        del followers.test_iter[:]
        followers.ClearField("test_interval")
        (config.run_dir / FOLLOWERS_SOLVER).write_text(str(followers))
    return path, param


def snapshots(run_dir: Path) -> list[tuple[int, Path]]:
    """(iteration, solverstate) pairs in the run folder, oldest first."""
    found = []
    for p in run_dir.glob("snapshot_iter_*.solverstate"):
        m = re.search(r"_iter_(\d+)\.solverstate$", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def snapshot_problem(path: Path, net: caffe.Net) -> str | None:
    """Why a solverstate (and the caffemodel it names) cannot resume ``net``,
    or None: Caffe aborts the process on each of these, naming no file."""
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(path.read_bytes())
    except Exception as err:  # protobuf's DecodeError
        return f"{path} does not parse ({err})"
    sizes = Counter(blob.data.size for blobs in net.params.values() for blob in blobs)
    history = Counter(len(h.data) for h in state.history)
    # SGD keeps one history blob per learned blob, Adam-like solvers two.
    copies = sum(history.values()) // max(sum(sizes.values()), 1)
    if not copies or history != Counter({size: n * copies for size, n in sizes.items()}):
        return (f"{path} holds {sum(history.values())} history blobs that do not match the net's "
                f"{sum(sizes.values())} learned blobs")
    model = Path(state.learned_net) if state.learned_net else path.with_suffix(".caffemodel")
    if not model.is_file() and path.with_suffix(".caffemodel").is_file():
        # The run folder was moved: the pair's caffemodel is beside it.
        model = path.with_suffix(".caffemodel")
        state.learned_net = str(model.resolve())
        with atomic_path(path) as tmp:
            tmp.write_bytes(state.SerializeToString())
    if not model.is_file():
        return f"{path} names the weights {model}, which are missing"
    weights = caffe_pb2.NetParameter()
    try:
        weights.ParseFromString(model.read_bytes())
    except Exception as err:
        return f"{model} (the weights of {path.name}) does not parse ({err})"
    stored = {layer.name: [len(b.data) for b in layer.blobs] for layer in weights.layer}
    for name, blobs in net.params.items():
        if stored.get(name) != [blob.data.size for blob in blobs]:
            return f"{model} (the weights of {path.name}) lacks layer {name!r} or holds other sizes"
    return None


def intact_snapshot(run_dir: Path, net: caffe.Net) -> tuple[int, Path] | None:
    """The newest snapshot pair that can resume ``net``; damaged newer ones
    (a kill while a snapshot was written before they were atomic, a copy
    cut short) are named and set aside as ``*.damaged``."""
    for iteration, path in reversed(snapshots(run_dir)):
        problem = snapshot_problem(path, net)
        if problem is None:
            return iteration, path
        LOG.warning("snapshot at iteration %d is damaged: %s; set aside as %s.damaged, resuming from the one "
                    "before", iteration, problem, path.name)
        path.rename(path.with_name(path.name + ".damaged"))
    return None


def validate(net: caffe.Net, batches: int) -> dict:
    """mIoU and pixel accuracy of ``net`` over ``batches`` forward passes
    (DeconvNet's scores are ``seg_score``, DeepLab-LargeFOV's ``score``)."""
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    blob = "seg_score" if "seg_score" in net.blobs else "score"
    for _ in range(batches):
        net.forward()
        pred = net.blobs[blob].data.argmax(axis=1)
        cm += confusion(net.blobs["label"].data[:, 0].astype(np.int64), pred)
    s = scores(cm, batches)
    return dict(mean_iou=s.mean_iou, pixel_accuracy=s.pixel_accuracy)


class PassLosses:
    """The loss of every forward pass of a training net: Caffe keeps only the
    last pass's in the blob, and an update of iter_size passes deserves
    their mean."""

    def __init__(self, net: caffe.Net, top: str = "loss") -> None:
        self.layer = next(i for i, name in enumerate(net._layer_names) if top in net.top_names[name])
        self.blob = net.blobs[top]
        self.values: list[float] = []
        net.after_forward(self._after)

    def _after(self, layer: int) -> None:
        if layer == self.layer:
            self.values.append(float(self.blob.data))

    def take(self) -> float:
        """The mean since the last call."""
        mean = float(np.mean(self.values)) if self.values else float(self.blob.data)
        self.values = []
        return mean


class SingleRank:
    """No other ranks to follow rank 0 (data_parallel.Followers has the same methods)."""

    def before_step(self, base_lr: float) -> None:
        pass

    def mean_loss(self, loss: float) -> float:
        return loss

    def finish(self) -> None:
        pass


class Trainer:
    def __init__(self, config: StageConfig,
                 validate_fn: Callable[["Trainer"], dict] | None = None,
                 followers: Any = None) -> None:
        self.config = config.from_solver(read_solver(config.solver))
        self.validate_fn = validate_fn or Trainer.validate_test_net
        self.followers = followers if followers is not None else SingleRank()
        use_device(config.gpu)
        self.solver_path, self.param = prepare_solver(self.config)
        self.followers_solver_path = self.solver_path.with_name(FOLLOWERS_SOLVER)
        self.solver = caffe.get_solver(str(self.solver_path))
        self.pass_losses = PassLosses(self.solver.net)
        self.log_path = config.run_dir / "log.jsonl"
        self.state = dict(lr=self.param.base_lr, best_score=None, best_iter=None, bad_validations=0,
                          cuts=[], metric=self.config.plateau_metric)
        self.resumed_from: Path | None = None
        resumed = self._resume()
        if not resumed and config.weights is not None:
            # Caffe would skip the layers the file lacks and abort on other shapes.
            check_weights(self.solver.net, self.param.train_net or self.param.net, config.weights,
                          config.allow_missing_weights)
            self.solver.net.copy_from(str(config.weights))
        self.snapshot_bytes = 2 * 4 * sum(p.data.size for ps in self.solver.net.params.values() for p in ps)

    def validate_test_net(self) -> dict:
        """The solver's test net on held-out crops, with the current weights:
        Caffe shares them with the test net only inside its own Test()."""
        net = self.solver.test_nets[0]
        net.share_with(self.solver.net)
        return validate(net, self.config.val_batches or 0)

    # --- state ---------------------------------------------------------------

    def _resume(self) -> bool:
        state_path = self.config.run_dir / STATE_FILE
        found = intact_snapshot(self.config.run_dir, self.solver.net)
        if found is None:
            return False
        iteration, path = found
        self.solver.restore(str(path))
        self.resumed_from = path
        if state_path.exists():
            self.state.update(json.loads(state_path.read_text()))
        self.solver.param.base_lr = self.state["lr"]
        LOG.info("resumed %s at iteration %d (lr %g)", path, iteration, self.state["lr"])
        self._log(event="resume", iter=iteration, lr=self.state["lr"])
        return True

    def _save_state(self) -> None:
        with atomic_path(self.config.run_dir / STATE_FILE) as tmp:
            tmp.write_text(json.dumps(self.state, indent=1))

    def _log(self, **record) -> None:
        record["time"] = time.time()
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    # --- snapshots -------------------------------------------------------------

    def snapshot(self) -> Path:
        """Writes caffemodel + solverstate, after checking free disk."""
        need = self.config.min_free_bytes or 2 * self.snapshot_bytes
        free = shutil.disk_usage(self.config.run_dir).free
        if free < need:
            raise DiskFull(f"only {free / 2**30:.2f} GiB free in {self.config.run_dir}, a snapshot needs "
                           f"about {need / 2**30:.2f} GiB; free some space and rerun the same command: it resumes "
                           "from the latest snapshot")
        model = self._snapshot_pair()
        self._save_state()
        self._prune()
        return model

    def _snapshot_pair(self) -> Path:
        """Caffe's snapshot, moved into the run folder as a pair: the
        caffemodel first, then the solverstate that names it (the pair
        exists for a resume only once the solverstate is there)."""
        incoming = self.config.run_dir / INCOMING
        shutil.rmtree(incoming, ignore_errors=True)
        incoming.mkdir(parents=True)
        self.solver.snapshot()
        name = f"snapshot_iter_{self.solver.iter}"
        model = self.config.run_dir / f"{name}.caffemodel"
        state = caffe_pb2.SolverState()
        state.ParseFromString((incoming / f"{name}.solverstate").read_bytes())
        state.learned_net = str(model.resolve())
        os.replace(incoming / f"{name}.caffemodel", model)
        with atomic_path(self.config.run_dir / f"{name}.solverstate") as tmp:
            tmp.write_bytes(state.SerializeToString())
        shutil.rmtree(incoming, ignore_errors=True)
        return model

    def _prune(self) -> None:
        found = snapshots(self.config.run_dir)
        best = self.state.get("best_iter")
        # The latest is always kept: it is what a resume starts from.
        for iteration, state in found[:-max(1, self.config.keep_last)]:
            if iteration == best:
                continue
            state.unlink(missing_ok=True)
            state.with_suffix(".caffemodel").unlink(missing_ok=True)
        # A caffemodel without its solverstate is half a pair (a kill between the two moves).
        for model in self.config.run_dir.glob("snapshot_iter_*.caffemodel"):
            if not model.with_suffix(".solverstate").exists():
                model.unlink(missing_ok=True)

    def _mark_best(self, model: Path) -> None:
        with atomic_path(self.config.run_dir / "best.caffemodel") as tmp:
            shutil.copyfile(model, tmp)

    # --- the loop ----------------------------------------------------------------

    @property
    def lr(self) -> float:
        """The rate the solver applies at its current iteration."""
        return float(self.solver.lr)

    def run_validation(self) -> dict:
        result = self.validate_fn(self)
        it = self.solver.iter
        score = result[self.config.plateau_metric]
        self._log(event="val", iter=it, val_miou=result["mean_iou"],
                  val_pixel_accuracy=result.get("pixel_accuracy"))
        best = self.state.get("best_score")
        improved = best is None or score > best + 1e-6
        if improved:
            self.state.update(best_score=score, best_iter=it, bad_validations=0)
            self._mark_best(self.snapshot())
        else:
            self.state["bad_validations"] += 1
            if (self.config.lr_policy == "plateau"
                    and self.state["bad_validations"] >= self.config.patience):
                self.cut_lr()
        self._save_state()
        return result

    def cut_lr(self, factor: float = 0.1) -> None:
        """The paper's rule: divide the rate by 10. Only the base rate of the
        live solver changes; its momentum history stays as it is."""
        old = self.state["lr"]
        self.state["lr"] = old * factor
        self.solver.param.base_lr = self.state["lr"]
        self.state["bad_validations"] = 0
        self.state["cuts"].append(self.solver.iter)
        self._log(event="lr_cut", iter=self.solver.iter, old_lr=old, lr=self.state["lr"])
        LOG.info("validation %s has not improved: learning rate %g -> %g", self.config.plateau_metric, old,
                 self.state["lr"])

    def train(self) -> Path:
        """Runs to max_iter; returns the final caffemodel."""
        max_iter = self.param.max_iter
        start_iter = self.solver.iter
        bar = tqdm(total=max_iter, initial=start_iter, unit="it", desc=self.config.run_dir.name,
                   disable=not self.config.progress, dynamic_ncols=True)
        started = time.time()
        try:
            while self.solver.iter < max_iter:
                self.followers.before_step(float(self.solver.param.base_lr))
                self.solver.step(1)
                it = self.solver.iter
                loss = self.followers.mean_loss(self.pass_losses.take())
                if not np.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss} at iteration {it}; lower the learning rate")
                rate = (it - start_iter) / max(time.time() - started, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.lr:.2g}", ips=f"{rate:.2f}")
                if it % self.config.log_interval == 0 or it == max_iter:
                    self._log(event="train", iter=it, loss=loss, lr=self.lr)
                if self.config.val_interval and it % self.config.val_interval == 0 and self.solver.test_nets:
                    result = self.run_validation()
                    bar.write(f"iteration {it}: validation mIoU {result['mean_iou']:.3f}")
                if self.config.snapshot_interval and it % self.config.snapshot_interval == 0:
                    self.snapshot()
        finally:
            bar.close()
            self.followers.finish()
        final = self.config.run_dir / f"snapshot_iter_{self.solver.iter}.caffemodel"
        if not final.exists():
            final = self.snapshot()
        self.state["final"] = str(final)
        self._save_state()
        self._log(event="done", iter=self.solver.iter)
        return final


def finished_model(run_dir: Path) -> Path | None:
    """The final caffemodel of a stage that ran to the end, if any."""
    path = run_dir / STATE_FILE
    if path.exists():
        final = json.loads(path.read_text()).get("final")
        if final and Path(final).exists():
            return Path(final)
    return None
