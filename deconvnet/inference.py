"""Proposal-based inference (SPEC section 4): proposals -> batched DeconvNet
-> paste-back and aggregation -> softmax -> optional dense CRF, and FCN-8s
whole-image inference for the ensemble."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from deconvnet.architecture import MEAN_BGR
from deconvnet.crops import ENLARGE, crop_padded, enlarge

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class CRFParams:
    """Fully connected CRF (Kraehenbuehl and Koltun 2011) with Potts
    potentials; the defaults are the authors' released settings."""

    gaussian_sxy: float = 3
    gaussian_compat: float = 3
    bilateral_sxy: float = 20
    bilateral_srgb: float = 3
    bilateral_compat: float = 5
    iterations: int = 10


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


def select_boxes(boxes: np.ndarray, image_shape: tuple[int, int], top_k: int = 50,
                 min_side: float = 0) -> np.ndarray:
    """The top_k boxes (already in score order) whose shorter side is at least
    min_side; the whole image when none is left."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if min_side > 0 and len(boxes):
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        boxes = boxes[sides >= min_side]
    boxes = boxes[:top_k]
    if len(boxes) == 0:
        h, w = image_shape[:2]
        boxes = np.array([[0, 0, w, h]], np.float32)
    return boxes


def crop_box(box, factor: float = ENLARGE) -> tuple[int, int, int, int]:
    """The enlarged box a proposal is cropped from, at least one pixel wide."""
    x1, y1, x2, y2 = enlarge(box, factor)
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def proposal_batch(image: np.ndarray, boxes: np.ndarray, size: int,
                   mean: np.ndarray = np.asarray(MEAN_BGR, np.float32)) -> tuple[np.ndarray, list]:
    """Mean-subtracted (N, 3, size, size) crops of the enlarged boxes, and
    those enlarged boxes."""
    fill = np.asarray(mean).round().astype(np.uint8)
    crops = np.empty((len(boxes), 3, size, size), np.float32)
    enlarged = []
    for i, box in enumerate(boxes):
        cb = crop_box(box)
        patch = cv2.resize(crop_padded(image, cb, fill), (size, size), interpolation=cv2.INTER_LINEAR)
        crops[i] = (patch.astype(np.float32) - mean).transpose(2, 0, 1)
        enlarged.append(cb)
    return crops, enlarged


def _resize_channels(maps: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of (C, S, S) maps to (C, height, width). OpenCV's
    single-channel path is the fastest there is (a 21-channel resize needs a
    channels-last copy that costs more than the resize), so it is used per
    channel into one buffer; the merge into the canvas is one array op."""
    out = np.empty((len(maps), height, width), np.float32)
    for ch, plane in enumerate(maps):
        cv2.resize(plane, (width, height), dst=out[ch], interpolation=cv2.INTER_LINEAR)
    return out


def paste_and_aggregate(score_maps: np.ndarray, boxes: list, image_shape: tuple[int, int],
                        mode: str = "max") -> np.ndarray:
    """Eq. 1 (max) or Eq. 2 (sum) over G_i: each (C, S, S) score map resized
    to its box and placed on an image-sized canvas that is zero outside the
    box. Returns (C, H, W) float32."""
    if mode not in ("max", "sum"):
        raise ValueError(f"aggregation must be 'max' or 'sum', not {mode!r}")
    h, w = image_shape[:2]
    c = score_maps.shape[1]
    canvas = np.full((c, h, w), -np.inf if mode == "max" else 0.0, np.float32)
    covered = np.zeros((h, w), np.int32)
    for scores, (x1, y1, x2, y2) in zip(score_maps, boxes):
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 <= sx1 or sy2 <= sy1:
            continue  # the box lies outside the image
        part = _resize_channels(scores, x2 - x1, y2 - y1)[:, sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1]
        region = canvas[:, sy1:sy2, sx1:sx2]
        if mode == "max":
            np.maximum(region, part, out=region)
        else:
            region += part
        covered[sy1:sy2, sx1:sx2] += 1
    if mode == "max":
        # Where some G_i is zero (its box does not cover the pixel), 0 competes.
        uncovered = np.broadcast_to(covered < len(score_maps), canvas.shape)
        np.maximum(canvas, 0, out=canvas, where=uncovered)
    return canvas


def softmax(scores: np.ndarray, axis: int = 0) -> np.ndarray:
    shifted = scores - scores.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """Mean-field inference with -log p unaries; returns (C, H, W) marginals."""
    import pydensecrf.densecrf as dcrf

    c, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    unary = -np.log(np.clip(probs, 1e-8, 1.0)).reshape(c, -1)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    rgb = np.ascontiguousarray(image[:, :, ::-1], dtype=np.uint8)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb, rgbim=rgb,
                             compat=params.bilateral_compat)
    q = crf.inference(params.iterations)
    return np.asarray(q, np.float32).reshape(c, h, w)


class DeconvNetModel:
    """The deploy net, run on proposal crops in batches."""

    def __init__(self, prototxt: str, weights: str, batch: int = 50) -> None:
        import caffe

        self.net = caffe.Net(prototxt, weights, caffe.TEST)
        self.size = self.net.blobs["data"].data.shape[2]
        self.batch = batch

    def scores(self, crops: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(crops), self.batch):
            chunk = crops[start:start + self.batch]
            if self.net.blobs["data"].data.shape[0] != len(chunk):
                self.net.blobs["data"].reshape(len(chunk), 3, self.size, self.size)
                self.net.reshape()
            self.net.blobs["data"].data[...] = chunk
            out.append(self.net.forward()["seg_score"].copy())
        return np.concatenate(out)


class FCNModel:
    """FCN-8s on the whole image (any size)."""

    def __init__(self, prototxt: str, weights: str) -> None:
        import caffe

        self.net = caffe.Net(prototxt, weights, caffe.TEST)

    def scores(self, image: np.ndarray) -> np.ndarray:
        data = (image.astype(np.float32) - np.asarray(MEAN_BGR, np.float32)).transpose(2, 0, 1)
        self.net.blobs["data"].reshape(1, *data.shape)
        self.net.reshape()
        self.net.blobs["data"].data[0] = data
        return self.net.forward()["score"][0].copy()


@dataclass
class Pipeline:
    model: DeconvNetModel
    top_k: int = 50
    min_box_side: float = 0
    aggregate: str = "max"
    crf: CRFParams | None = None
    fcn: FCNModel | None = None
    ensemble: str = "mean"        # "mean" (the paper) or "product" (the authors' code)

    def segment(self, image: np.ndarray, boxes: np.ndarray) -> Segmentation:
        """boxes: the image's proposals in score order (x1 y1 x2 y2)."""
        t = Timings()
        start = time.perf_counter()
        boxes = select_boxes(boxes, image.shape, self.top_k, self.min_box_side)
        crops, enlarged = proposal_batch(image, boxes, self.model.size)
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
            if self.ensemble == "mean":
                probs = (softmax(aggregated) + softmax(fcn_scores)) / 2
            elif self.ensemble == "product":
                probs = softmax(aggregated * np.maximum(fcn_scores, 0))
            else:
                raise ValueError(f"ensemble must be 'mean' or 'product', not {self.ensemble!r}")
        if self.crf is not None:
            start = time.perf_counter()
            probs = dense_crf(image, probs, self.crf)
            t.crf = time.perf_counter() - start
        labels = probs.argmax(axis=0).astype(np.uint8)
        return Segmentation(labels, probs, boxes, t)


def progressive_aggregation(score_maps: np.ndarray, boxes: list, image_shape, counts, mode: str = "max"):
    """Figure 6: aggregates of the first n proposals, taken in decreasing
    size, for each n in counts."""
    areas = np.array([(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in boxes])
    order = np.argsort(-areas, kind="stable")
    return {n: paste_and_aggregate(score_maps[order[:n]], [boxes[i] for i in order[:n]], image_shape, mode)
            for n in counts if n <= len(boxes)}

