"""Proposal-based inference of one image (docs/PAPER.md, section 4):
proposals -> batched DeconvNet -> paste-back and aggregation -> softmax ->
optionally the FCN-8s ensemble -> optionally the dense CRF."""
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
    proposals: float = 0.0
    forward: float = 0.0
    aggregation: float = 0.0
    crf: float = 0.0
    fcn: float = 0.0

    def add(self, other: "Timings") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Segmentation:
    labels: np.ndarray              # (H, W) uint8
    probs: np.ndarray               # (21, H, W) float32
    boxes: np.ndarray               # the proposals used, x1 y1 x2 y2 (before enlargement)
    timings: Timings = field(default_factory=Timings)


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

    def segment(self, image: np.ndarray, boxes: np.ndarray) -> Segmentation:
        """boxes: the image's proposals in score order (x1 y1 x2 y2)."""
        t = Timings()
        start = time.perf_counter()
        boxes = select_boxes(boxes, image.shape, self.top_k, self.min_box_side, self.box_side_of)
        crops, enlarged = proposal_batch(image, boxes, self.model.size, padding=self.proposal_padding)
        t.proposals = time.perf_counter() - start
        start = time.perf_counter()
        score_maps = self.model.scores(crops)
        t.forward = time.perf_counter() - start
        start = time.perf_counter()
        aggregated = paste_and_aggregate(score_maps, enlarged, image.shape, self.aggregate)
        t.aggregation = time.perf_counter() - start
        if self.fcn is None:
            probs = softmax(aggregated)
        else:
            start = time.perf_counter()
            fcn_scores = self.fcn.scores(image)
            t.fcn = time.perf_counter() - start
            probs = ensemble(aggregated, fcn_scores, self.ensemble)
        if self.crf is not None:
            start = time.perf_counter()
            probs = dense_crf(image, probs, self.crf)
            t.crf = time.perf_counter() - start
        labels = probs.argmax(axis=0).astype(np.uint8)
        return Segmentation(labels, probs, boxes, t)
