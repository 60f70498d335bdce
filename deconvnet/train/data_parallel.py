"""Data-parallel training on the GPUs of one node: one process per GPU, the
gradients averaged by NCCL after every update, as BVLC Caffe's
python/train.py does it (its `caffe train -gpu 0,1` cannot run our Python
data layer).

- Every rank sets Caffe's solver count and rank before its solver exists,
  so that the crop data layer reads its own share of every epoch
  (python_layers/seg_data.py).
- The effective batch stays that of the solver file: each rank runs
  ``iter_size / ranks`` passes per update (``rank_iter_size`` refuses a
  count that does not divide it), and Caffe divides the averaged gradient
  by the rank's iter_size, so an update of N ranks is the update of one
  process with the whole iter_size (weight decay included: it is computed
  from the whole iter_size, deconvnet/train/trainer.py).
- Rank 0 runs the stage's Trainer (validation, logging, snapshots, the
  plateau rule); before every update it sends the other ranks the base
  learning rate to use, and after it collects their mean training loss.
  The others only step (``follow``). A resume restores the same snapshot
  on every rank; NCCL then broadcasts rank 0's weights.
- The launcher (``train_stage``) watches the ranks: the first one to fail
  stops all of them, and its error is raised.
- ``sync="pipes"`` replaces NCCL by averaging through pipes, on the CPU:
  the same code, testable on a machine without GPUs.

BatchNorm's running statistics are per rank (each rank's forward passes
update its own, as in Caffe's multi-GPU training); the population
statistics inference uses are computed after training (deconvnet.net.bn_stats).

May import: deconvnet.common, deconvnet.data, deconvnet.train.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import signal
import sys
import traceback
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from deconvnet.common.cli import setup_logging
from deconvnet.common.machine import gpu_count, gpu_problem, loaded_libraries
from deconvnet.common.processes import die_with_parent, how_it_ended

LOG = logging.getLogger(__name__)
SYNCS = ("nccl", "pipes")
STOP_GRACE_S = 10  # what a rank gets to end after SIGTERM before SIGKILL


class RankCountError(ValueError):
    """A GPU count that cannot keep the solver's batch."""


class RankFailed(RuntimeError):
    """One rank failed; the others were stopped."""


def parse_gpus(spec: str, count: int | None = None) -> list[int]:
    """GPU ids from ``0,1,2,3`` or ``all`` (every GPU the driver shows,
    CUDA_VISIBLE_DEVICES applied); ValueError names what is wrong."""
    if spec.strip() == "all":
        found = gpu_count() if count is None else count
        if found == 0:
            problem = gpu_problem(0, loaded_libraries()) or "the driver shows no GPU"
            raise ValueError(f"--gpus all: no GPU to train on: {problem}")
        return list(range(found))
    try:
        gpus = [int(part) for part in spec.split(",")]
    except ValueError:
        raise ValueError(f"--gpus {spec!r}: give GPU ids separated by commas (0,1,2,3) or all") from None
    if any(g < 0 for g in gpus):
        raise ValueError(f"--gpus {spec!r}: GPU ids are 0 or more")
    if len(set(gpus)) != len(gpus):
        raise ValueError(f"--gpus {spec!r} names a GPU twice: one process per GPU")
    return gpus


def check_devices(gpus: list[int]) -> None:
    """ValueError when this Caffe or machine cannot train on ``gpus`` with
    NCCL, before any process starts: each would abort in Caffe."""
    import caffe

    if not caffe.has_nccl():
        raise ValueError("this Caffe was built without NCCL (a CPU build): --gpus needs the CUDA build, "
                         "scripts/setup.sh --use-cuda")
    for gpu in gpus:
        problem = gpu_problem(gpu, loaded_libraries())
        if problem:
            raise ValueError(f"--gpus: cannot use GPU {gpu}: {problem}")


def batch_choices(effective: int, ranks: int) -> list[tuple[int, int]]:
    """(batch per pass, iter_size per rank) pairs that make ``effective``
    examples per update on ``ranks`` ranks, largest batch first."""
    if effective % ranks:
        return []
    per_rank = effective // ranks
    return [(per_rank // k, k) for k in range(1, per_rank + 1) if per_rank % k == 0]


def rank_iter_size(iter_size: int, ranks: int, batch: int | None, solver: Path) -> int:
    """The iter_size of each of ``ranks`` ranks that keeps the solver's
    effective batch; RankCountError says which counts and batches would."""
    iter_size = max(iter_size, 1)
    if iter_size % ranks == 0:
        return iter_size // ranks
    if batch is None:
        raise RankCountError(f"{ranks} GPUs cannot share the iter_size {iter_size} of {solver}: use a GPU count "
                             f"that divides it")
    effective = batch * iter_size
    counts = [n for n in range(1, iter_size + 1) if iter_size % n == 0]
    choices = batch_choices(effective, ranks)
    if choices:
        listed = ", ".join(f"batch {b} x iter_size {k}" for b, k in choices)
        other = (f"or keep the batch with {ranks} GPUs by writing nets whose batch per pass x iter_size x {ranks} "
                 f"is {effective} ({listed}): tools/make_prototxt.py --batch-per-pass B --iter-size "
                 f"{ranks}xK --out DIR, then --solver1/--solver2 DIR/...")
    else:
        other = f"no batch keeps {effective} examples per update on {ranks} GPUs"
    raise RankCountError(
        f"{ranks} GPUs cannot share the iter_size {iter_size} of {solver}: an update is {batch} examples per pass x "
        f"{iter_size} passes = {effective}, and each GPU would run {iter_size}/{ranks} passes. Use "
        f"{', '.join(map(str, counts))} GPUs; {other}")


# --- gradient synchronisation --------------------------------------------------


class GradientSync(Protocol):
    def broadcast_weights(self) -> None: ...

    def attach(self) -> None: ...


class NcclSync:
    """NCCL through pycaffe: one communicator per rank, gradients summed and
    scaled by 1 / ranks once per update (layer_wise_reduce is off: with
    iter_size passes per update, per-layer reduction would run every pass)."""

    def __init__(self, solver: Any, uid: bytes) -> None:
        import caffe

        self.solver = solver
        self.nccl = caffe.NCCL(solver, uid)

    def broadcast_weights(self) -> None:
        self.nccl.bcast()

    def attach(self) -> None:
        self.solver.add_callback(self.nccl)


class PipeSync:
    """NCCL's arithmetic on the CPU, through pipes to rank 0: weights
    broadcast from rank 0; after the passes of an update, the gradients
    summed in rank order and scaled by 1 / ranks, on every rank."""

    def __init__(self, solver: Any, rank: int, peers: list[Connection]) -> None:
        self.solver = solver
        self.rank = rank
        self.peers = peers  # rank 0: one per other rank; others: rank 0's
        self.blobs = [blob for blobs in solver.net.params.values() for blob in blobs]

    def _flat(self, what: str) -> np.ndarray:
        return np.concatenate([getattr(blob, what).ravel() for blob in self.blobs])

    def _set(self, what: str, flat: np.ndarray) -> None:
        start = 0
        for blob in self.blobs:
            target = getattr(blob, what)
            target[...] = flat[start:start + target.size].reshape(target.shape)
            start += target.size

    def broadcast_weights(self) -> None:
        if self.rank == 0:
            data = self._flat("data")
            for peer in self.peers:
                peer.send_bytes(data.tobytes())
        else:
            self._set("data", np.frombuffer(self.peers[0].recv_bytes(), np.float32))

    def _average(self) -> None:
        diff = self._flat("diff")
        if self.rank == 0:
            total = diff.copy()
            for peer in self.peers:
                total += np.frombuffer(peer.recv_bytes(), np.float32)
            total *= np.float32(1.0 / (len(self.peers) + 1))
            for peer in self.peers:
                peer.send_bytes(total.tobytes())
        else:
            self.peers[0].send_bytes(diff.tobytes())
            total = np.frombuffer(self.peers[0].recv_bytes(), np.float32)
        self._set("diff", total)

    def attach(self) -> None:
        self.solver.add_callback(lambda: None, self._average)


# --- rank 0's side of the control channel ------------------------------------


class Followers:
    """What rank 0's Trainer tells the other ranks: before each update the
    base rate, after it their mean losses; at the end, stop."""

    def __init__(self, conns: list[Connection]) -> None:
        self.conns = conns

    def start(self, solver_file: Path, snapshot: Path | None) -> None:
        for conn in self.conns:
            conn.send(dict(solver=str(solver_file), snapshot=str(snapshot) if snapshot else None))

    def before_step(self, base_lr: float) -> None:
        for conn in self.conns:
            conn.send(base_lr)

    def mean_loss(self, loss: float) -> float:
        losses = [loss] + [float(conn.recv()) for conn in self.conns]
        return float(np.mean(losses))

    def finish(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass


def follow(conn: Connection, solver: Any, losses: Any) -> None:
    """A rank other than 0: one update per message from rank 0, its rate
    applied first; None ends the stage."""
    while True:
        base_lr = conn.recv()
        if base_lr is None:
            return
        solver.param.base_lr = base_lr
        solver.step(1)
        conn.send(losses.take())


# --- the rank processes ----------------------------------------------------------


@dataclass(frozen=True)
class RankJob:
    rank: int
    devices: tuple[int | None, ...]  # a GPU id per rank, None for the CPU (pipes only)
    sync: str
    uid: bytes | None
    parent: int


def _make_sync(job: RankJob, solver: Any, peers: list[Connection]) -> GradientSync:
    if job.sync == "nccl":
        assert job.uid is not None
        return NcclSync(solver, job.uid)
    return PipeSync(solver, job.rank, peers)


def _set_up_caffe(job: RankJob) -> None:
    from deconvnet.common.machine import use_device

    import caffe

    use_device(job.devices[job.rank])
    caffe.set_solver_count(len(job.devices))
    caffe.set_solver_rank(job.rank)
    caffe.set_multiprocess(True)  # Python layers run in every rank's own interpreter


def _lead(job: RankJob, config: Any, control: list[Connection], peers: list[Connection]) -> Path:
    from deconvnet.train.trainer import Trainer

    followers = Followers(control)
    trainer = Trainer(replace(config, gpu=job.devices[0]), followers=followers)
    followers.start(trainer.followers_solver_path, trainer.resumed_from)
    sync = _make_sync(job, trainer.solver, peers)
    sync.broadcast_weights()
    sync.attach()
    return trainer.train()


def _follow(job: RankJob, control: Connection, peers: list[Connection]) -> None:
    from deconvnet.train.trainer import PassLosses

    import caffe

    start = control.recv()
    if start is None:  # rank 0 stopped before training
        return
    solver = caffe.get_solver(start["solver"])
    if start["snapshot"]:
        solver.restore(start["snapshot"])  # the iteration and momentum; the weights come from rank 0
    losses = PassLosses(solver.net)
    sync = _make_sync(job, solver, peers)
    sync.broadcast_weights()
    sync.attach()
    follow(control, solver, losses)


def _rank_main(job: RankJob, config: Any, control: list[Connection], peers: list[Connection],
               report: Connection) -> None:
    """One rank's process: reports ("ok", final model) or ("error", the
    exception or its text) to the launcher."""
    die_with_parent(job.parent)
    # The launcher stops ranks with SIGTERM: exit through Python, so the data layer's workers and queues are closed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    setup_logging()
    try:
        _set_up_caffe(job)
        if job.rank == 0:
            report.send(("ok", _lead(job, config, control, peers)))
        else:
            _follow(job, control[0], peers)
            report.send(("ok", None))
    except BaseException as err:  # noqa: BLE001 - every failure goes to the launcher
        text = "".join(traceback.format_exception_only(type(err), err)).strip()
        LOG.debug("rank %d failed:\n%s", job.rank, traceback.format_exc())
        try:
            pickle.dumps(err)
            report.send(("error", err, text))
        except Exception:  # an exception that does not pickle: its text
            report.send(("error", None, text))
        raise SystemExit(1) from None


def _device_name(device: int | None) -> str:
    return "CPU" if device is None else f"GPU {device}"


def _stop(procs: list[Any]) -> None:
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(STOP_GRACE_S)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _report(reader: Connection) -> tuple | None:
    """What a rank that has ended reported, or None (killed before it could)."""
    try:
        return reader.recv() if reader.poll() else None
    except (EOFError, OSError):
        return None


def _supervise(procs: list[Any], reports: list[Connection], devices: tuple[int | None, ...],
               pid_file: Path) -> Path:
    """Waits for every rank; the first failure stops the others and is raised."""
    result: Path | None = None
    pending = set(range(len(procs)))
    while pending:
        wait([procs[r].sentinel for r in pending], timeout=5)
        for r in sorted(pending):
            proc = procs[r]
            if proc.exitcode is None:
                continue
            pending.discard(r)
            message = _report(reports[r])
            if proc.exitcode == 0 and message and message[0] == "ok":
                result = message[1] if r == 0 else result
                continue
            _stop(procs)
            pid_file.unlink(missing_ok=True)
            where = f"rank {r} ({_device_name(devices[r])}, pid {proc.pid})"
            if message and message[0] == "error":
                if message[1] is not None and r == 0 and not isinstance(message[1], (SystemExit,
                                                                                      KeyboardInterrupt)):
                    raise message[1]  # rank 0's own errors read as on one GPU
                raise RankFailed(f"{where} failed: {message[2]}; the other ranks were stopped")
            raise RankFailed(f"{where} ended ({how_it_ended(proc.exitcode)}) without a report; the other ranks "
                             "were stopped")
    pid_file.unlink(missing_ok=True)
    assert result is not None
    return result


def train_stage(config: Any, devices: list[int | None], sync: str = "nccl") -> Path:
    """Trains one stage (a deconvnet.train.trainer.StageConfig) on one rank
    per device; returns rank 0's final caffemodel. The ranks' pids are in
    ``<run_dir>/ranks.json`` while they run."""
    import json

    if sync not in SYNCS:
        raise ValueError(f"sync must be one of {SYNCS}, not {sync!r}")
    if sync == "nccl" and any(d is None for d in devices):
        raise ValueError("NCCL needs a GPU per rank")
    ranks = len(devices)
    uid = None
    if sync == "nccl":
        import caffe

        check_devices([d for d in devices if d is not None])
        uid = bytes(caffe.NCCL.new_uid())
    ctx = mp.get_context("spawn")  # no CUDA state inherited; each rank imports Caffe afresh
    control = [ctx.Pipe() for _ in range(ranks - 1)]
    peers = [ctx.Pipe() for _ in range(ranks - 1)] if sync == "pipes" else []
    reports = [ctx.Pipe(duplex=False) for _ in range(ranks)]
    config = replace(config, ranks=ranks)
    procs = []
    for r in range(ranks):
        job = RankJob(r, tuple(devices), sync, uid, os.getpid())
        mine = [end for end, _ in control] if r == 0 else [control[r - 1][1]]
        my_peers = ([end for end, _ in peers] if r == 0 else [peers[r - 1][1]]) if peers else []
        procs.append(ctx.Process(target=_rank_main, args=(job, config, mine, my_peers, reports[r][1]),
                                 name=f"rank{r}"))
    config.run_dir.mkdir(parents=True, exist_ok=True)
    pid_file = config.run_dir / "ranks.json"
    try:
        for proc in procs:
            proc.start()
        # The children hold their own ends now; the launcher keeps only the reports' read ends.
        for a, b in control + peers:
            a.close()
            b.close()
        for _, writer in reports:
            writer.close()
        pid_file.write_text(json.dumps({str(r): p.pid for r, p in enumerate(procs)}))
        LOG.info("training %s on %d rank(s) (%s), pids %s", config.run_dir.name, ranks,
                 ", ".join(_device_name(d) for d in devices), [p.pid for p in procs])
        return _supervise(procs, [reader for reader, _ in reports], tuple(devices), pid_file)
    finally:
        _stop(procs)
