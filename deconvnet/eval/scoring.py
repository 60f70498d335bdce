"""PASCAL VOC segmentation scoring, comp6 protocol (docs/PAPER.md, section 5): one
21x21 confusion matrix over the whole set, ground-truth void (255) ignored,
IoU = TP / (TP + FP + FN) per class, mean over the classes present."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deconvnet.common.constants import CLASSES, NUM_CLASSES, VOID
from deconvnet.data.voc import read_indexed_png

# Table 1 of the paper: column headers in order.
SHORT_NAMES = ("bkg", "aero", "bike", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "table", "dog", "horse", "mbike", "person", "plant", "sheep", "sofa", "train", "tv")

# docs/PAPER.md, section 6: the paper's VOC 2012 test results (mean IoU %), and the
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
        """Valid JSON: an undefined value is null, never NaN."""
        def value(v: float) -> float | None:
            return None if np.isnan(v) else float(v)
        return dict(mean_iou=value(self.mean_iou),
                    per_class_iou={CLASSES[c]: value(v) for c, v in enumerate(self.per_class_iou)},
                    pixel_accuracy=value(self.pixel_accuracy), num_images=self.num_images)


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


def score_table(result: Scores, name: str = "ours", compare_paper: bool = False) -> str:
    """The table tools/eval_voc.py prints: our row, then (with
    compare_paper) the paper's VOC 2012 test rows, then pixel accuracy."""
    rows = [(name, result.per_class_iou * 100, result.mean_iou * 100)]
    if compare_paper:
        rows.append(("paper EDeconvNet+CRF", np.array(PAPER_EDECONVNET_CRF), PAPER_MEANS["EDeconvNet+CRF"]))
        for method, mean in PAPER_MEANS.items():
            if method != "EDeconvNet+CRF":
                rows.append((f"paper {method}", np.full(NUM_CLASSES, np.nan), mean))
    return (format_table(rows) + "\n"
            + f"pixel accuracy {result.pixel_accuracy * 100:.1f}%, {result.num_images} images")


def evaluate_dirs(gt_dir: Path, pred_dir: Path, ids: list[str] | None) -> tuple[Scores, np.ndarray]:
    """Scores <pred_dir>/<id>.png against <gt_dir>/<id>.png over ids (default:
    every ground-truth PNG); raises EvaluationError naming what is wrong."""
    if not gt_dir.is_dir():
        raise EvaluationError(f"--gt-dir {gt_dir} is not a folder")
    if not pred_dir.is_dir():
        raise EvaluationError(f"--pred-dir {pred_dir} is not a folder")
    if ids is None:
        ids = sorted(p.stem for p in gt_dir.glob("*.png"))
        if not ids:
            raise EvaluationError(f"no ground-truth PNGs in {gt_dir}")
    if not ids:
        raise EvaluationError("the image list is empty: nothing to score")
    repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) < len(ids) else []
    if repeated:
        shown = ", ".join(repeated[:20]) + (f" and {len(repeated) - 20} more" if len(repeated) > 20 else "")
        raise EvaluationError(f"the image list names {len(repeated)} id(s) more than once ({shown}); each "
                              "would be counted again: remove the repeats")
    missing = [i for i in ids if not (pred_dir / f"{i}.png").is_file()]
    if missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise EvaluationError(f"{len(missing)} prediction(s) missing in {pred_dir}: {shown}")
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for image_id in ids:
        gt_path, pred_path = gt_dir / f"{image_id}.png", pred_dir / f"{image_id}.png"
        gt = read_indexed_png(gt_path)
        pred = read_indexed_png(pred_path)
        bad_gt = sorted(set(np.unique(gt).tolist()) - set(range(NUM_CLASSES)) - {VOID})
        if bad_gt:
            raise EvaluationError(f"{gt_path} holds values outside 0..20 and 255: {bad_gt}; is --gt-dir "
                                  "SegmentationClass (not SegmentationObject)?")
        if gt.shape != pred.shape:
            raise EvaluationError(f"size mismatch: {pred_path} is {pred.shape[1]}x{pred.shape[0]}, "
                                  f"{gt_path} is {gt.shape[1]}x{gt.shape[0]}")
        if pred.max() >= NUM_CLASSES:
            bad = sorted(set(np.unique(pred).tolist()) - set(range(NUM_CLASSES)))
            raise EvaluationError(f"{pred_path} holds values outside 0..20: {bad}")
        cm += confusion(gt, pred)
    return scores(cm, len(ids)), cm
