"""Crop geometry and the stage-1 / stage-2 examples (docs/PAPER.md, section 2).

A box is ``x1, y1, x2, y2`` in pixels with the end exclusive. An example is
its box enlarged 1.2x about the centre, cropped (parts outside the image are
filled with the mean colour, and void 255 in the label) and resized to
250x250: bilinear for the image, nearest for the label.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deconvnet.common.constants import MEAN_BGR, STORED_SIZE, VOID
from deconvnet.data.proposals import box_iou
from deconvnet.data.voc import Instance

ENLARGE = 1.2


@dataclass
class Example:
    image: np.ndarray   # (S, S, 3) uint8 BGR
    label: np.ndarray   # (S, S) uint8, 0..20 and 255
    box: tuple[int, int, int, int]  # the enlarged crop box in the source image
    cls: int            # the example's class, for balancing


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def enlarge(box, factor: float = ENLARGE) -> tuple[int, int, int, int]:
    """The box scaled about its centre, rounded to whole pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w, half_h = (x2 - x1) * factor / 2, (y2 - y1) * factor / 2
    return (int(round(cx - half_w)), int(round(cy - half_h)),
            int(round(cx + half_w)), int(round(cy + half_h)))


def crop_padded(array: np.ndarray, box, fill) -> np.ndarray:
    """array[y1:y2, x1:x2], with ``fill`` where the box leaves the array."""
    x1, y1, x2, y2 = box
    h, w = array.shape[:2]
    out = np.empty((y2 - y1, x2 - x1) + array.shape[2:], dtype=array.dtype)
    out[...] = fill
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = array[sy1:sy2, sx1:sx2]
    return out


def crop_example(image: np.ndarray, label: np.ndarray, box, size: int = STORED_SIZE):
    """The enlarged box's crop of image and label, resized to size x size."""
    mean = np.array(MEAN_BGR).round().astype(np.uint8)
    img = crop_padded(image, box, mean)
    lab = crop_padded(label, box, VOID)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    lab = cv2.resize(lab, (size, size), interpolation=cv2.INTER_NEAREST)
    return img, lab


def stage1_examples(image: np.ndarray, class_map: np.ndarray, instances: list[Instance],
                    size: int = STORED_SIZE, void: str = "ignore") -> list[Example]:
    """One example per instance: its pixels keep its class, other objects
    become background; VOC's void pixels stay void ("ignore", the release's)
    or become background too ("background", the paper's text). Padding
    beyond the image is void either way: there is no pixel to label."""
    if void not in ("ignore", "background"):
        raise ValueError(f"stage-1 void must be ignore or background, not {void!r}")
    examples = []
    for inst in instances:
        if not inst.mask.any():
            continue
        box = enlarge(tight_box(inst.mask))
        others = np.where(class_map == VOID, VOID, 0) if void == "ignore" else 0
        label = np.where(inst.mask, inst.cls, others).astype(np.uint8)
        img, lab = crop_example(image, label, box, size)
        examples.append(Example(img, lab, box, inst.cls))
    return examples


def select_proposals(boxes: np.ndarray, instances: list[Instance], min_iou: float = 0.5):
    """Proposals whose box overlaps an instance's tight box with IoU >= min_iou,
    each with the class of its best-overlapping instance."""
    instances = [inst for inst in instances if inst.mask.any()]
    if not instances or len(boxes) == 0:
        return []
    gt = np.array([tight_box(inst.mask) for inst in instances], dtype=np.float64)
    iou = box_iou(boxes, gt)
    best = iou.argmax(axis=1)
    keep = np.nonzero(iou[np.arange(len(boxes)), best] >= min_iou)[0]
    return [(boxes[i], instances[best[i]].cls) for i in keep]


def stage2_examples(image: np.ndarray, class_map: np.ndarray, instances: list[Instance],
                    boxes: np.ndarray, min_iou: float = 0.5, size: int = STORED_SIZE) -> list[Example]:
    """One example per selected proposal; the label keeps every class."""
    examples = []
    for box, cls in select_proposals(boxes, instances, min_iou):
        crop_box = enlarge(box)
        if crop_box[2] <= crop_box[0] or crop_box[3] <= crop_box[1]:
            continue
        img, lab = crop_example(image, class_map, crop_box, size)
        examples.append(Example(img, lab, crop_box, cls))
    return examples
