"""Segmenting a list of images: serially (``workers=0``) or pipelined.

Pipelined, worker processes do the CPU stages of deconvnet.infer.pipeline
while the main process, which holds the networks, runs the forward passes:

  workers, ahead:  read the image, its proposals (edge boxes or their cache),
                   choose and crop them (into a shared crop buffer)
  main:            DeconvNet on the crops (into a shared score buffer),
                   FCN-8s on the image
  workers, behind: paste-back, aggregation, softmax, the ensemble, the CRF,
                   the labels and the output files

Every worker takes either kind of task, the ones behind first, so the cores
go where the work is. The buffers are anonymous shared memory (not
/dev/shm, which Docker limits to 64 MiB), ``workers + 1`` of each kind:
that bounds the images in flight, and so the memory, whatever the image
count. Each worker has its own pipe: a worker that dies is seen at once,
with the image it held. The arithmetic is the serial path's own functions,
so the outputs are the same bytes.

A failure in a worker names the image and stops the run: the workers are
stopped, the temporary files they leave are removed, and images already
written stay done (a later run skips them). Ctrl-C and SIGTERM do the same.
"""
from __future__ import annotations

import logging
import mmap
import os
import signal
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, cast

import numpy as np

from deconvnet.common.atomic import remove_stale_parts
from deconvnet.common.processes import die_with_parent, how_it_ended
from deconvnet.data.proposals import ProposalCache
from deconvnet.data.voc import DatasetError, read_image
from deconvnet.infer.outputs import OutputOptions, write_outputs
from deconvnet.infer.pipeline import MemberScores, Pipeline, Prepared, Timings

LOG = logging.getLogger(__name__)
FLOAT_BYTES = 4


class WorkerFailed(RuntimeError):
    """A worker raised, or died, on an image; the message names it."""


@dataclass
class RunReport:
    """What a run did: images segmented, skipped (done before) and failed
    (unreadable), the busy seconds of each stage and the wall seconds."""

    done: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    busy: Timings = field(default_factory=Timings)
    wall: float = 0.0
    workers: int = 0

    def record(self) -> dict[str, Any]:
        """Per-image figures for run.json and --timings."""
        per = {k: v / self.done for k, v in vars(self.busy).items()} if self.done else {}
        return dict(images=self.done, workers=self.workers, wall_seconds=round(self.wall, 3),
                    wall_seconds_per_image=round(self.wall / self.done, 4) if self.done else None,
                    busy_seconds_per_image={k: round(v, 4) for k, v in per.items()})


def prepare_image(pipeline: Pipeline, proposals: ProposalCache, image_id: str, path: Path,
                  out: np.ndarray | None = None) -> tuple[np.ndarray, Prepared, Timings]:
    """Stage 1: the image, its chosen proposals and their crops."""
    image = read_image(path)
    timings = Timings()
    start = time.perf_counter()
    # Only DeconvNet segments proposals: without it none are computed.
    boxes = proposals.get(image_id, image)[0] if pipeline.model is not None else np.zeros((0, 4), np.float32)
    prepared = pipeline.prepare(image, boxes, out)
    timings.proposals = time.perf_counter() - start
    return image, prepared, timings


def finish_image(pipeline: Pipeline, outputs: OutputOptions, image_id: str, image: np.ndarray,
                 score_maps: np.ndarray | None, boxes: np.ndarray, enlarged: list,
                 fcn_scores: MemberScores | None, timings: Timings) -> None:
    """Stage 3: probabilities, labels and the output files."""
    probs, labels = pipeline.finish(image, score_maps, enlarged, fcn_scores, timings)
    start = time.perf_counter()
    write_outputs(outputs, image_id, image, labels, probs, boxes)
    timings.writing += time.perf_counter() - start


Progress = Callable[[int], None]


def run_serial(pipeline: Pipeline, proposals: ProposalCache, items: list[tuple[str, Path]],
               outputs: OutputOptions, overwrite: bool = False, progress: Progress = lambda n: None) -> RunReport:
    """One image after another, every stage in this process."""
    report = RunReport()
    started = time.perf_counter()
    for image_id, path in items:
        if outputs.label_path(image_id).exists() and not overwrite:
            report.skipped += 1
        else:
            try:
                image, prepared, timings = prepare_image(pipeline, proposals, image_id, path)
            except DatasetError as err:
                LOG.warning("skipping %s: %s", path, err)
                report.failures.append(f"{image_id}: {err}")
            else:
                score_maps, fcn_scores = pipeline.forward(image, prepared.crops, timings)
                finish_image(pipeline, outputs, image_id, image, score_maps, prepared.boxes, prepared.enlarged,
                             fcn_scores, timings)
                report.busy.add(timings)
                report.done += 1
        progress(1)
    report.wall = time.perf_counter() - started
    return report


class SharedBuffers:
    """``count`` float32 arrays of one shape in anonymous shared memory,
    made before the workers are forked so that they share it."""

    def __init__(self, count: int, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.nbytes = int(np.prod(shape)) * FLOAT_BYTES
        self.memory = mmap.mmap(-1, max(count * self.nbytes, 1))
        self.arrays = [np.ndarray(shape, np.float32, buffer=self.memory, offset=i * self.nbytes)
                       for i in range(count)]
        self.free = list(range(count))[::-1]


def queue_bytes(workers: int, top_k: int, size: int, classes: int) -> tuple[int, int, int]:
    """(buffers of each kind, bytes of a crop buffer, bytes of a score buffer)."""
    return workers + 1, top_k * 3 * size * size * FLOAT_BYTES, top_k * classes * size * size * FLOAT_BYTES


def describe_bound(workers: int, top_k: int, size: int, classes: int) -> str:
    """The memory bound of the queues, for the log and --help."""
    count, crop, score = queue_bytes(workers, top_k, size, classes)
    return (f"at most {count} images prepared ahead (crops, {count} x {crop / 2**20:.0f} MiB) and {count} "
            f"behind (score maps, {count} x {score / 2**20:.0f} MiB): {count * (crop + score) / 2**20:.0f} MiB")


def _worker(conn: Connection, crops: SharedBuffers, scores: SharedBuffers, pipeline: Pipeline,
            proposals: ProposalCache, outputs: OutputOptions, parent: int) -> None:
    """A worker's loop: one task at a time from the main process."""
    import cv2

    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle

    def stop(signum, frame):  # unwinds, so that atomic writes remove their temporary files
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    cv2.setNumThreads(1)  # one core per worker: the workers are the parallelism
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        kind, seq = task[0], task[1]
        try:
            if kind == "prepare":
                _, _, image_id, path, slot = task
                try:
                    image, prepared, timings = prepare_image(pipeline, proposals, image_id, path,
                                                             crops.arrays[slot])
                except DatasetError as err:
                    conn.send(("unreadable", seq, str(err)))
                    continue
                conn.send(("prepared", seq, image, prepared.boxes, prepared.enlarged, timings))
            else:
                _, _, image_id, image, boxes, enlarged, slot, fcn_scores, timings = task
                finish_image(pipeline, outputs, image_id, image, scores.arrays[slot][:len(boxes)], boxes,
                             enlarged, fcn_scores, timings)
                conn.send(("finished", seq, timings))
        except Exception:
            conn.send(("error", seq, traceback.format_exc()))


@dataclass
class _Image:
    seq: int
    image_id: str
    path: Path
    stage: str = "waiting"
    crop_slot: int = -1
    score_slot: int = -1
    image: np.ndarray | None = None
    boxes: np.ndarray | None = None
    enlarged: list | None = None
    fcn_scores: MemberScores | None = None
    timings: Timings | None = None


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    task: _Image | None = None


class PipelinedRun:
    """The pipelined run of a list of images (see the module's text)."""

    def __init__(self, pipeline: Pipeline, proposals: ProposalCache, outputs: OutputOptions, workers: int) -> None:
        if workers < 1:
            raise ValueError("a pipelined run needs at least one worker (0 is run_serial)")
        if pipeline.model is None:
            raise ValueError("a pipelined run overlaps DeconvNet's proposals with its forward pass: without "
                             "DeconvNet use run_serial")
        self.pipeline, self.proposals, self.outputs = pipeline, proposals, outputs
        size, classes = pipeline.model.size, pipeline.model.classes
        count, _, _ = queue_bytes(workers, pipeline.top_k, size, classes)
        self.crops = SharedBuffers(count, (pipeline.top_k, 3, size, size))
        self.scores = SharedBuffers(count, (pipeline.top_k, classes, size, size))
        self.workers: list[_Worker] = []
        self.count = workers

    def start(self) -> None:
        """Forks the workers (after the nets are loaded: they inherit, and
        never touch, the nets; Caffe's data layer forks the same way)."""
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        for _ in range(self.count):
            mine, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_worker, args=(theirs, self.crops, self.scores, self.pipeline,
                                                     self.proposals, self.outputs, os.getpid()), daemon=True)
            proc.start()
            theirs.close()  # the worker's end is its alone: its death is an end of file here
            self.workers.append(_Worker(proc, mine))
        LOG.info("%d workers (pids %s)", self.count, " ".join(str(w.proc.pid) for w in self.workers))

    def stop(self, clean: bool) -> None:
        """Ends the workers: asked to finish (``clean``) or terminated; then
        removes the temporary files the stopped ones left."""
        for worker in self.workers:
            try:
                if clean:
                    worker.conn.send(None)
                elif worker.proc.is_alive():
                    worker.proc.terminate()
            except OSError:
                pass
        deadline = time.monotonic() + 15
        for worker in self.workers:
            worker.proc.join(timeout=max(deadline - time.monotonic(), 0.1))
            if worker.proc.is_alive():
                worker.proc.kill()
                worker.proc.join()
            worker.conn.close()
        self.workers = []
        for folder in [*self.outputs.folders(), self.proposals.folder]:
            for part in remove_stale_parts(folder, again=True):
                LOG.info("removed %s, left by a stopped worker", part)

    def run(self, items: list[tuple[str, Path]], overwrite: bool = False,
            progress: Progress = lambda n: None) -> RunReport:
        report = RunReport(workers=self.count)
        started = time.perf_counter()
        self.start()
        clean = False
        try:
            self._loop(items, overwrite, progress, report)
            clean = True
        finally:
            self.stop(clean)
        report.wall = time.perf_counter() - started
        return report

    def _loop(self, items: list[tuple[str, Path]], overwrite: bool, progress: Progress, report: RunReport) -> None:
        waiting: deque[_Image] = deque()
        for seq, (image_id, path) in enumerate(items):
            if self.outputs.label_path(image_id).exists() and not overwrite:
                report.skipped += 1
                progress(1)
            else:
                waiting.append(_Image(seq, image_id, path))
        ready: deque[_Image] = deque()        # prepared, waiting for the forward pass
        behind: deque[_Image] = deque()       # forwarded, waiting for a worker
        while waiting or ready or behind or any(w.task for w in self.workers):
            self._dispatch(waiting, behind)
            if ready and self.scores.free:
                self._forward(ready.popleft(), behind)
                self._receive(ready, report, progress, timeout=0)
                continue
            self._receive(ready, report, progress, timeout=1.0)

    def _dispatch(self, waiting: deque[_Image], behind: deque[_Image]) -> None:
        for worker in self.workers:
            if worker.task is not None:
                continue
            if behind:
                item = behind.popleft()
                item.stage = "finishing"
                worker.conn.send(("finish", item.seq, item.image_id, item.image, item.boxes, item.enlarged,
                                  item.score_slot, item.fcn_scores, item.timings))
            elif waiting and self.crops.free:
                item = waiting.popleft()
                item.stage, item.crop_slot = "preparing", self.crops.free.pop()
                worker.conn.send(("prepare", item.seq, item.image_id, item.path, item.crop_slot))
            else:
                return
            worker.task = item

    def _forward(self, item: _Image, behind: deque[_Image]) -> None:
        assert item.boxes is not None and item.image is not None and item.timings is not None
        item.stage, item.score_slot = "forward", self.scores.free.pop()
        n = len(item.boxes)
        _, item.fcn_scores = self.pipeline.forward(item.image, self.crops.arrays[item.crop_slot][:n], item.timings,
                                                   out=self.scores.arrays[item.score_slot])
        self.crops.free.append(item.crop_slot)
        behind.append(item)

    def _receive(self, ready: deque[_Image], report: RunReport, progress: Progress, timeout: float) -> None:
        busy = {w.conn: w for w in self.workers if w.task is not None}
        if not busy:
            return
        for conn in wait(list(busy), timeout=timeout):
            worker = busy[cast(Connection, conn)]
            item = worker.task
            assert item is not None
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                worker.proc.join(timeout=5)
                raise WorkerFailed(f"worker {worker.proc.pid} died ({how_it_ended(worker.proc.exitcode)}) while "
                                   f"{item.stage} image {item.image_id} ({item.path})") from None
            kind = message[0]
            worker.task = None
            if kind == "error":
                raise WorkerFailed(f"{item.stage} image {item.image_id} ({item.path}) failed in worker "
                                   f"{worker.proc.pid}:\n{message[2].rstrip()}")
            if kind == "unreadable":
                self.crops.free.append(item.crop_slot)
                LOG.warning("skipping %s: %s", item.path, message[2])
                report.failures.append(f"{item.image_id}: {message[2]}")
                progress(1)
            elif kind == "prepared":
                _, _, item.image, item.boxes, item.enlarged, item.timings = message
                item.stage = "ready"
                ready.append(item)
            else:  # finished
                self.scores.free.append(item.score_slot)
                report.busy.add(message[2])
                report.done += 1
                progress(1)
