"""From proposals to an image's score map (docs/PAPER.md, section 4, steps
1-5): choosing and cropping the proposals, pasting each score map back into
its box and aggregating them by max (Eq. 1) or sum (Eq. 2), and softmax."""
from __future__ import annotations

import cv2
import numpy as np

from deconvnet.common.constants import MEAN_BGR, TEST_PROPOSALS
from deconvnet.common.recipes import RELEASE
from deconvnet.data.crops import ENLARGE, crop_padded, enlarge

MEAN = np.asarray(MEAN_BGR, np.float32)


def select_boxes(boxes: np.ndarray, image_shape: tuple[int, int], top_k: int = TEST_PROPOSALS,
                 min_side: float = RELEASE.min_box_side, side_of: str = RELEASE.box_side_of) -> np.ndarray:
    """The top_k boxes (already in score order) whose shorter side is at least
    min_side, measured on the box cropped ("enlarged" 1.2x, as the authors'
    release does) or on the "proposal" itself; the whole image when none is
    left."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if side_of not in ("enlarged", "proposal"):
        raise ValueError(f"side_of must be enlarged or proposal, not {side_of!r}")
    if min_side > 0 and len(boxes):
        measured = np.array([crop_box(b) for b in boxes], np.float32) if side_of == "enlarged" else boxes
        sides = np.minimum(measured[:, 2] - measured[:, 0], measured[:, 3] - measured[:, 1])
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


def proposal_batch(image: np.ndarray, boxes: np.ndarray, size: int, mean: np.ndarray = MEAN,
                   padding: str = RELEASE.proposal_padding, out: np.ndarray | None = None) -> tuple[np.ndarray, list]:
    """Mean-subtracted (N, 3, size, size) crops of the enlarged boxes (in
    the first N of ``out`` when given), and those enlarged boxes. Where a box
    leaves the image, ``padding`` "black" fills zero pixels (the release's
    zero-padded image) and "mean" the mean colour."""
    if padding not in ("black", "mean"):
        raise ValueError(f"padding must be black or mean, not {padding!r}")
    fill = np.zeros(3, np.uint8) if padding == "black" else np.asarray(mean).round().astype(np.uint8)
    shape = (len(boxes), 3, size, size)
    if out is not None and (len(out) < len(boxes) or out.shape[1:] != shape[1:] or out.dtype != np.float32):
        raise ValueError(f"proposal_batch: out {out.shape} {out.dtype} cannot hold float32 crops {shape}")
    crops = np.empty(shape, np.float32) if out is None else out[:len(boxes)]
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
    for scores, (x1, y1, x2, y2) in zip(score_maps, boxes, strict=True):
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


def progressive_aggregation(score_maps: np.ndarray, boxes: list, image_shape, counts, mode: str = "max"):
    """Figure 6: aggregates of the first n proposals, taken in decreasing
    size, for each n in counts."""
    areas = np.array([(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in boxes])
    order = np.argsort(-areas, kind="stable")
    return {n: paste_and_aggregate(score_maps[order[:n]], [boxes[i] for i in order[:n]], image_shape, mode)
            for n in counts if n <= len(boxes)}
