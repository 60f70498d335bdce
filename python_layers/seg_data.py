"""SegDataLayer: feeds a crop database (deconvnet/data/crop_db.py) to Caffe.

``param_str`` is the JSON of ``deconvnet.data.layer_params.SegDataParams``
(keys and defaults there; docs/DATASETS.md lists them): ``source`` (the
database folder, required), ``batch_size``, ``crop_size`` (random crop in
TRAIN, centre crop in TEST), ``mirror`` and ``shuffle`` (TRAIN only),
``mean`` (BGR), ``seed`` and ``workers`` (prefetching processes; 0 loads in
the layer).

Tops: ``data`` (N, 3, crop, crop) float32, BGR, mean subtracted; ``label``
(N, 1, crop, crop) with 255 void. Image and label always get the same crop
and flip. The batches depend only on the seed, not on the number of workers.

Under data-parallel training (deconvnet/train/data_parallel.py, which sets
Caffe's solver count and rank), a TRAIN layer reads its rank's share: the
ranks draw the same stream of batches (same seed, same balanced epochs)
and rank r keeps batches r, r + count, r + 2 count, ... Their parts of an
epoch are disjoint and together the whole epoch, and one update of N ranks
with iter_size k reads exactly the passes of one process with iter_size
N k. TEST layers read everything (validation runs on rank 0 alone).
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import queue
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, cast

import numpy as np

from deconvnet.common.processes import die_with_parent, how_it_ended
from deconvnet.data.crop_db import CropSource, open_crop_db
from deconvnet.data.layer_params import SegDataParams

import caffe


@dataclass
class BatchPlan:
    """What one batch holds: record numbers, crop corners and flips."""

    seq: int
    records: np.ndarray
    offsets: np.ndarray   # (N, 2) y, x
    flips: np.ndarray     # (N,) bool


class BatchPlanner:
    """The sequence of batches: deterministic for a seed. With ``ranks`` > 1
    it is this ``rank``'s share of the stream every rank draws alike."""

    def __init__(self, index: np.ndarray, stored: int, params: SegDataParams, train: bool,
                 rank: int = 0, ranks: int = 1) -> None:
        if not 0 <= rank < ranks:
            raise ValueError(f"SegDataLayer: rank {rank} of {ranks} ranks")
        self.index = index
        self.stored = stored
        self.params = params
        self.train = train
        self.rank = rank
        self.ranks = ranks
        self.rng = np.random.default_rng(params.seed)
        self.order = np.zeros(0, np.int64)
        self.seq = 0

    def _take(self, n: int) -> np.ndarray:
        taken = []
        while n > 0:
            if len(self.order) == 0:
                train_shuffle = self.train and self.params.shuffle
                self.order = self.rng.permutation(self.index) if train_shuffle else self.index.copy()
            taken.append(self.order[:n])
            n -= len(taken[-1])
            self.order = self.order[len(taken[-1]):]
        return np.concatenate(taken)

    def _draw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The stream's next batch: records, crop corners, flips."""
        n, crop = self.params.batch_size, self.params.crop_size
        records = self._take(n)
        if self.train:
            offsets = self.rng.integers(0, self.stored - crop + 1, size=(n, 2))
            flips = (self.rng.random(n) < 0.5) if self.params.mirror else np.zeros(n, bool)
        else:
            offsets = np.full((n, 2), (self.stored - crop) // 2)
            flips = np.zeros(n, bool)
        return records, offsets, flips

    def next(self) -> BatchPlan:
        """This rank's next batch; the other ranks' batches are drawn too, so
        that every rank's stream stays the same."""
        drawn = [self._draw() for _ in range(self.ranks)]
        plan = BatchPlan(self.seq, *drawn[self.rank])
        self.seq += 1
        return plan


def load_batch(db: CropSource, plan: BatchPlan, crop: int, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(plan.records)
    data = np.empty((n, 3, crop, crop), np.float32)
    label = np.empty((n, 1, crop, crop), np.float32)
    for i, (number, (y, x), flip) in enumerate(zip(plan.records, plan.offsets, plan.flips, strict=True)):
        record = db.get(int(number))
        img = record.image[y:y + crop, x:x + crop]
        lab = record.label[y:y + crop, x:x + crop]
        if flip:
            img, lab = img[:, ::-1], lab[:, ::-1]
        data[i] = (img.astype(np.float32) - mean).transpose(2, 0, 1)
        label[i, 0] = lab
    return data, label


def _worker(source: str, crop: int, mean: np.ndarray, tasks: mp.Queue, results: Connection,
            parent: int) -> None:
    import cv2

    die_with_parent(parent)
    cv2.setNumThreads(0)
    db = open_crop_db(Path(source))
    while True:
        try:
            plan = tasks.get(timeout=5)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if plan is None:
            return
        try:
            results.send((plan.seq, load_batch(db, plan, crop, mean), None))
        except Exception as err:  # reported by the layer, in the Caffe process
            results.send((plan.seq, None, f"{type(err).__name__}: {err}"))


class Prefetcher:
    """Worker processes loading planned batches; results come back in order.

    Each worker sends its batches through its own pipe, whose write end only
    it holds: a worker killed in the middle of a batch (SIGKILL, the OOM
    killer) is then an end of file here, not a read that waits forever for
    the rest of the batch, as with one queue shared by all."""

    def __init__(self, source: str, planner: BatchPlanner, crop: int, mean: np.ndarray, workers: int) -> None:
        ctx = mp.get_context("fork")
        self.source = source
        self.planner = planner
        self.tasks: mp.Queue = ctx.Queue()
        self.procs: list[Any] = []
        self.readers: dict[Connection, Any] = {}
        for _ in range(workers):
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(source, crop, mean, self.tasks, writer, os.getpid()),
                               daemon=True)
            proc.start()
            writer.close()
            self.procs.append(proc)
            self.readers[reader] = proc
        self.waiting: dict[int, Any] = {}
        self.next_seq = 0
        for _ in range(2 * workers):  # batches in flight
            self.tasks.put(planner.next())
        atexit.register(self.close)

    def _died(self, proc) -> RuntimeError:
        proc.join(timeout=5)
        return RuntimeError(f"SegDataLayer: prefetch worker {proc.pid} reading {self.source} died "
                            f"({how_it_ended(proc.exitcode)})")

    def _check_workers(self) -> None:
        """A worker that died (a crash, SIGBUS on a damaged file, the OOM
        killer) is reported at once, with how it ended."""
        for p in self.procs:
            if not p.is_alive() and p.exitcode not in (0, None):
                raise self._died(p)

    def get(self) -> tuple[np.ndarray, np.ndarray]:
        waited = 0.0
        while self.next_seq not in self.waiting:
            ready = wait(list(self.readers), timeout=1)
            if not ready:
                self._check_workers()
                waited += 1
                if waited >= 120:
                    raise RuntimeError(f"SegDataLayer: no batch from {self.source} for 120 s") from None
                continue
            for ready_reader in ready:
                reader = cast(Connection, ready_reader)  # wait() returns what it was given
                try:
                    seq, batch, error = reader.recv()
                except (EOFError, OSError):
                    raise self._died(self.readers[reader]) from None
                if error:
                    raise RuntimeError(f"SegDataLayer worker failed: {error}")
                self.waiting[seq] = batch
        batch = self.waiting.pop(self.next_seq)
        self.next_seq += 1
        self.tasks.put(self.planner.next())
        return batch

    def close(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for reader in self.readers:
            reader.close()


class SegDataLayer(caffe.Layer):
    def setup(self, bottom, top) -> None:
        if bottom or len(top) != 2:
            raise ValueError("SegDataLayer: no bottoms and two tops (data, label)")
        self.params = SegDataParams.from_param_str(self.param_str)
        self.db = open_crop_db(Path(self.params.source))
        crop, stored = self.params.crop_size, self.db.stored_size
        if crop > stored:
            raise ValueError(f"SegDataLayer: 'crop_size' {crop} is larger than the stored crops "
                             f"({stored}x{stored}) of {self.params.source}")
        if len(self.db.index) == 0:
            raise ValueError(f"SegDataLayer: {self.params.source} holds no examples")
        self.mean = np.asarray(self.params.mean, np.float32)
        train = self.phase == caffe.TRAIN
        # Caffe's solver count and rank: set by data-parallel training, 1 and 0 otherwise.
        ranks, rank = (caffe.solver_count(), caffe.solver_rank()) if train else (1, 0)
        planner = BatchPlanner(self.db.index, stored, self.params, train, rank, ranks)
        workers = self.params.workers
        self.prefetcher = (Prefetcher(self.params.source, planner, crop, self.mean, workers)
                           if workers else None)
        self.planner = planner
        n = self.params.batch_size
        top[0].reshape(n, 3, crop, crop)
        top[1].reshape(n, 1, crop, crop)

    def reshape(self, bottom, top) -> None:
        pass

    def forward(self, bottom, top) -> None:
        if self.prefetcher is not None:
            data, label = self.prefetcher.get()
        else:
            data, label = load_batch(self.db, self.planner.next(), self.params.crop_size, self.mean)
        top[0].data[...] = data
        top[1].data[...] = label

    def backward(self, top, propagate_down, bottom) -> None:
        pass
