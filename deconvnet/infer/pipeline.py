"""Proposal-based inference of one image (docs/PAPER.md, section 4):
proposals -> batched DeconvNet -> paste-back and aggregation -> softmax ->
optionally the ensemble with whole-image nets (FCN-8s, DeepLab-LargeFOV) ->
optionally the dense CRF. Without DeconvNet, the whole-image nets alone.

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
from deconvnet.infer.models import DeconvNetModel, WholeImageModel

LOG = logging.getLogger(__name__)


@dataclass
class Timings:
    """Seconds spent in each stage (busy time: with worker processes the
    stages of different images overlap, so their sum exceeds the wall time)."""

    proposals: float = 0.0     # edge boxes (or their cache), choosing and cropping them
    forward: float = 0.0       # DeconvNet on the crops
    aggregation: float = 0.0   # paste-back, aggregation, softmax and the ensemble's arithmetic
    crf: float = 0.0
    fcn: float = 0.0           # the whole-image nets (FCN-8s, DeepLab-LargeFOV)
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


# The pair the release's product rule is written for.
PRODUCT_PAIR = frozenset({"deconvnet", "fcn8s"})


def combine(scores: dict[str, np.ndarray], mode: str = RELEASE.ensemble) -> np.ndarray:
    """Class probabilities of an ensemble from its members' (C, H, W) scores
    by name (DeconvNet's aggregated over proposals). "mean" is the paper's
    rule, for any members: the average of their softmaxes. "product" is the
    authors' released code, defined for DeconvNet and FCN-8s only:
    DeconvNet's scores times max(0, FCN-8s scores), then softmax, in which
    FCN-8s can veto a class it scores negative."""
    if mode == "mean":
        probs = [softmax(s) for s in scores.values()]
        return sum(probs[1:], probs[0]) / len(probs)
    if mode == "product":
        if set(scores) != PRODUCT_PAIR:
            raise ValueError(f"the product rule is the release's DeconvNet x FCN-8s rule, not defined for "
                             f"{' + '.join(scores)}: use the mean")
        return softmax(scores["deconvnet"] * np.maximum(scores["fcn8s"], 0))
    raise ValueError(f"ensemble must be 'mean' or 'product', not {mode!r}")


def ensemble(deconvnet_scores: np.ndarray, fcn_scores: np.ndarray, mode: str = RELEASE.ensemble) -> np.ndarray:
    """Class probabilities of the DeconvNet + FCN-8s ensemble (``combine``)."""
    return combine({"deconvnet": deconvnet_scores, "fcn8s": fcn_scores}, mode)


MemberScores = list[np.ndarray]  # the whole-image members' scores, in Pipeline.members' order


@dataclass
class Pipeline:
    model: DeconvNetModel | None     # None: the whole-image members alone
    top_k: int = TEST_PROPOSALS
    min_box_side: float = RELEASE.min_box_side
    box_side_of: str = RELEASE.box_side_of  # the box the minimum side is measured on (see select_boxes)
    aggregate: str = "max"
    crf: CRFParams | None = None
    members: tuple[WholeImageModel, ...] = ()  # FCN-8s, DeepLab-LargeFOV
    ensemble: str = RELEASE.ensemble  # "mean" (the paper) or "product" (the authors' code; see combine)
    proposal_padding: str = RELEASE.proposal_padding  # "black" (the authors' code) or "mean"

    def __post_init__(self) -> None:
        if self.model is None and not self.members:
            raise ValueError("a pipeline needs DeconvNet or a whole-image net")

    def prepare(self, image: np.ndarray, boxes: np.ndarray, out: np.ndarray | None = None) -> Prepared:
        """Chooses and crops the proposals (boxes in score order, x1 y1 x2
        y2); ``out`` is a buffer of at least (top_k, 3, S, S) for the crops."""
        if self.model is None:
            return Prepared(np.zeros((0, 4), np.float32), [], np.zeros((0, 3, 1, 1), np.float32))
        boxes = select_boxes(boxes, image.shape, self.top_k, self.min_box_side, self.box_side_of)
        crops, enlarged = proposal_batch(image, boxes, self.model.size, padding=self.proposal_padding, out=out)
        return Prepared(boxes, enlarged, crops)

    def forward(self, image: np.ndarray, crops: np.ndarray, timings: Timings,
                out: np.ndarray | None = None) -> tuple[np.ndarray | None, MemberScores | None]:
        """DeconvNet's score maps of the crops (into ``out`` when given; None
        without DeconvNet) and the whole-image members' scores of the image
        (None without them)."""
        score_maps = None
        if self.model is not None:
            start = time.perf_counter()
            score_maps = self.model.scores(crops, out=out)
            timings.forward += time.perf_counter() - start
        if not self.members:
            return score_maps, None
        start = time.perf_counter()
        member_scores = [member.scores(image) for member in self.members]
        timings.fcn += time.perf_counter() - start
        return score_maps, member_scores

    def finish(self, image: np.ndarray, score_maps: np.ndarray | None, enlarged: list,
               member_scores: MemberScores | None, timings: Timings) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (C, H, W) and labels (H, W) from the score maps."""
        start = time.perf_counter()
        scores = self._by_name(image, score_maps, enlarged, member_scores)
        probs = softmax(next(iter(scores.values()))) if len(scores) == 1 else combine(scores, self.ensemble)
        timings.aggregation += time.perf_counter() - start
        if self.crf is not None:
            start = time.perf_counter()
            probs = dense_crf(image, probs, self.crf)
            timings.crf += time.perf_counter() - start
        return probs, probs.argmax(axis=0).astype(np.uint8)

    def net_scores(self, image: np.ndarray, boxes: np.ndarray) -> dict[str, np.ndarray]:
        """Each net's (C, H, W) scores of the image by name, DeconvNet's
        aggregated over its proposals (what ``finish`` combines)."""
        prepared = self.prepare(image, boxes)
        score_maps, member_scores = self.forward(image, prepared.crops, Timings())
        return self._by_name(image, score_maps, prepared.enlarged, member_scores)

    def _by_name(self, image: np.ndarray, score_maps: np.ndarray | None, enlarged: list,
                 member_scores: MemberScores | None) -> dict[str, np.ndarray]:
        scores: dict[str, np.ndarray] = {}
        if self.model is not None and score_maps is not None:
            scores["deconvnet"] = paste_and_aggregate(score_maps, enlarged, image.shape, self.aggregate)
        for member, member_score in zip(self.members, member_scores or [], strict=True):
            scores[member.name] = member_score
        return scores

    def segment(self, image: np.ndarray, boxes: np.ndarray) -> Segmentation:
        """boxes: the image's proposals in score order (x1 y1 x2 y2)."""
        t = Timings()
        start = time.perf_counter()
        prepared = self.prepare(image, boxes)
        t.proposals = time.perf_counter() - start
        score_maps, member_scores = self.forward(image, prepared.crops, t)
        probs, labels = self.finish(image, score_maps, prepared.enlarged, member_scores, t)
        return Segmentation(labels, probs, prepared.boxes, t)
