"""Proposal-based inference of one image (docs/PAPER.md, section 4):
proposals -> batched DeconvNet -> paste-back and aggregation -> softmax ->
optionally the FCN-8s ensemble -> optionally the dense CRF.

The work is split into three stages so that deconvnet.infer.pipelined can
run them in different processes with the same arithmetic: ``prepare``
(choosing and cropping the proposals, CPU), ``forward`` (the networks, in
the process that holds them) and ``finish`` (paste-back, aggregation,
softmax, the ensemble, the CRF and the labels, CPU). ``segment`` runs the
three in turn."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from deconvnet.common.constants import TEST_PROPOSALS
from deconvnet.common.recipes import RELEASE
from deconvnet.infer.aggregation import paste_and_aggregate, proposal_batch, select_boxes, softmax
from deconvnet.infer.crf import CRFParams, dense_crf
from deconvnet.infer.models import DeconvNetModel, FCNModel

LOG = logging.getLogger(__name__)


@dataclass
class Timings:
    """Seconds spent in each stage (busy time: with worker processes the
    stages of different images overlap, so their sum exceeds the wall time)."""

    proposals: float = 0.0     # edge boxes (or their cache), choosing and cropping them
    forward: float = 0.0       # DeconvNet on the crops
    aggregation: float = 0.0   # paste-back, aggregation, softmax and the ensemble's arithmetic
    crf: float = 0.0
    fcn: float = 0.0           # FCN-8s on the whole image
    writing: float = 0.0       # the output files

    def add(self, other: "Timings") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Segmentation:
    labels: np.ndarray              # (H, W) uint8
    probs: np.ndarray               # (21, H, W) float32
    boxes: np.ndarray               # the proposals used, x1 y1 x2 y2 (before enlargement)
    timings: Timings = field(default_factory=Timings)


@dataclass
class Prepared:
    """An image's chosen proposals and their crops, ready for the forward pass."""

    boxes: np.ndarray               # the proposals used, x1 y1 x2 y2 (before enlargement)
    enlarged: list                  # the boxes cropped (1.2x), in pixels
    crops: np.ndarray               # (N, 3, S, S) float32, mean subtracted


def ensemble(deconvnet_scores: np.ndarray, fcn_scores: np.ndarray, mode: str = RELEASE.ensemble) -> np.ndarray:
    """Class probabilities of the DeconvNet + FCN-8s ensemble. "mean" is the
    paper's (the average of the two softmaxes); "product" is the authors'
    released code (aggregated scores times max(0, FCN-8s scores), then
    softmax), in which FCN-8s can veto a class it scores negative."""
    if mode == "mean":
        return (softmax(deconvnet_scores) + softmax(fcn_scores)) / 2
    if mode == "product":
        return softmax(deconvnet_scores * np.maximum(fcn_scores, 0))
    raise ValueError(f"ensemble must be 'mean' or 'product', not {mode!r}")


@dataclass
class Pipeline:
    model: DeconvNetModel
    top_k: int = TEST_PROPOSALS
    min_box_side: float = RELEASE.min_box_side
    box_side_of: str = RELEASE.box_side_of  # the box the minimum side is measured on (see select_boxes)
    aggregate: str = "max"
    crf: CRFParams | None = None
    fcn: FCNModel | None = None
    ensemble: str = RELEASE.ensemble  # "mean" (the paper) or "product" (the authors' code)
    proposal_padding: str = RELEASE.proposal_padding  # "black" (the authors' code) or "mean"

    def prepare(self, image: np.ndarray, boxes: np.ndarray, out: np.ndarray | None = None) -> Prepared:
        """Chooses and crops the proposals (boxes in score order, x1 y1 x2
        y2); ``out`` is a buffer of at least (top_k, 3, S, S) for the crops."""
        boxes = select_boxes(boxes, image.shape, self.top_k, self.min_box_side, self.box_side_of)
        crops, enlarged = proposal_batch(image, boxes, self.model.size, padding=self.proposal_padding, out=out)
        return Prepared(boxes, enlarged, crops)

    def forward(self, image: np.ndarray, crops: np.ndarray, timings: Timings,
                out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """DeconvNet's score maps of the crops (into ``out`` when given) and
        FCN-8s's scores of the image (None without the ensemble)."""
        start = time.perf_counter()
        score_maps = self.model.scores(crops, out=out)
        timings.forward += time.perf_counter() - start
        if self.fcn is None:
            return score_maps, None
        start = time.perf_counter()
        fcn_scores = self.fcn.scores(image)
        timings.fcn += time.perf_counter() - start
        return score_maps, fcn_scores

    def finish(self, image: np.ndarray, score_maps: np.ndarray, enlarged: list, fcn_scores: np.ndarray | None,
               timings: Timings) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (C, H, W) and labels (H, W) from the score maps."""
        start = time.perf_counter()
        aggregated = paste_and_aggregate(score_maps, enlarged, image.shape, self.aggregate)
        probs = softmax(aggregated) if fcn_scores is None else ensemble(aggregated, fcn_scores, self.ensemble)
        timings.aggregation += time.perf_counter() - start
        if self.crf is not None:
            start = time.perf_counter()
            probs = dense_crf(image, probs, self.crf)
            timings.crf += time.perf_counter() - start
        return probs, probs.argmax(axis=0).astype(np.uint8)

    def segment(self, image: np.ndarray, boxes: np.ndarray) -> Segmentation:
        """boxes: the image's proposals in score order (x1 y1 x2 y2)."""
        t = Timings()
        start = time.perf_counter()
        prepared = self.prepare(image, boxes)
        t.proposals = time.perf_counter() - start
        score_maps, fcn_scores = self.forward(image, prepared.crops, t)
        probs, labels = self.finish(image, score_maps, prepared.enlarged, fcn_scores, t)
        return Segmentation(labels, probs, prepared.boxes, t)
