"""PASCAL VOC segmentation scoring, comp6 protocol (SPEC section 5): one
21x21 confusion matrix over the whole set, ground-truth void (255) ignored,
IoU = TP / (TP + FP + FN) per class, mean over the classes present."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deconvnet.architecture import NUM_CLASSES
from deconvnet.voc import CLASSES, VOID

# Table 1 of the paper: column headers in order.
SHORT_NAMES = ("bkg", "aero", "bike", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "table", "dog", "horse", "mbike", "person", "plant", "sheep", "sofa", "train", "tv")

# SPEC section 6: the paper's VOC 2012 test results (mean IoU %), and the
# per-class row of EDeconvNet + CRF.
PAPER_MEANS = {"FCN-8s": 62.2, "DeconvNet": 69.6, "DeconvNet+CRF": 70.5, "EDeconvNet": 71.7,
               "EDeconvNet+CRF": 72.5}
PAPER_EDECONVNET_CRF = (93.1, 89.9, 39.3, 79.7, 63.9, 68.2, 87.4, 81.2, 86.1, 28.5, 77.0, 62.0, 79.0,
                        80.3, 83.6, 80.2, 58.8, 83.4, 54.3, 80.7, 65.0)


class EvaluationError(Exception):
    pass


def confusion(gt: np.ndarray, pred: np.ndarray, n: int = NUM_CLASSES) -> np.ndarray:
    """Rows: ground truth; columns: prediction. Void ground truth is ignored."""
    keep = gt != VOID
    return np.bincount(n * gt[keep].astype(np.int64) + pred[keep].astype(np.int64),
                       minlength=n * n).reshape(n, n)


@dataclass
class Scores:
    per_class_iou: np.ndarray   # NaN where a class is in neither gt nor prediction
    mean_iou: float
    pixel_accuracy: float
    num_images: int

    def as_json(self) -> dict:
        return dict(mean_iou=self.mean_iou,
                    per_class_iou={CLASSES[c]: (None if np.isnan(v) else float(v))
                                   for c, v in enumerate(self.per_class_iou)},
                    pixel_accuracy=self.pixel_accuracy, num_images=self.num_images)


def scores(cm: np.ndarray, num_images: int) -> Scores:
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / denom, np.nan)
    mean = float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")
    total = cm.sum()
    return Scores(iou, mean, float(tp.sum() / total) if total else float("nan"), num_images)


def format_table(rows: list[tuple[str, np.ndarray, float]]) -> str:
    """rows: (name, per-class IoU fractions or percents, mean); printed in
    percent with one decimal, in Table 1's column order."""
    width = max(8, max(len(name) for name, _, _ in rows) + 1)
    head = f"{'':<{width}}" + "".join(f"{n:>7}" for n in SHORT_NAMES) + f"{'mean':>7}"
    lines = [head]
    for name, values, mean in rows:
        cells = "".join("    n/a" if v is None or np.isnan(v) else f"{v:7.1f}" for v in values)
        mean_cell = "    n/a" if mean is None or np.isnan(mean) else f"{mean:7.1f}"
        lines.append(f"{name:<{width}}" + cells + mean_cell)
    return "\n".join(lines)
