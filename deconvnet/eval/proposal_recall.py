"""Proposal quality (docs/REPRODUCE.md, "Paper and release"): how many
ground-truth instances the top-k proposals find at an IoU threshold
(recall), and the mean over instances of each one's best IoU (mean best
overlap), for several k at once."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from deconvnet.common.constants import STAGE2_PROPOSALS, TEST_PROPOSALS
from deconvnet.data.proposals import box_iou

TOPS = (TEST_PROPOSALS, STAGE2_PROPOSALS)
THRESHOLDS = (0.5, 0.7)


def best_overlaps(gt_boxes: np.ndarray, proposals: np.ndarray, top: int) -> np.ndarray:
    """Each ground-truth box's best IoU with the first ``top`` proposals
    (0 when there are none)."""
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    chosen = np.asarray(proposals, np.float64).reshape(-1, 4)[:top]
    if len(gt_boxes) == 0 or len(chosen) == 0:
        return np.zeros(len(gt_boxes))
    return box_iou(gt_boxes, chosen).max(axis=1)


@dataclass
class RecallReport:
    tops: tuple[int, ...] = TOPS
    thresholds: tuple[float, ...] = THRESHOLDS
    images: int = 0
    seconds: float = 0.0
    overlaps: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def add(self, gt_boxes: np.ndarray, proposals: np.ndarray, seconds: float = 0.0) -> None:
        """One image: its instances' tight boxes and its proposals in score order."""
        for top in self.tops:
            self.overlaps.setdefault(top, []).append(best_overlaps(gt_boxes, proposals, top))
        self.images += 1
        self.seconds += seconds

    def _best(self, top: int) -> np.ndarray:
        parts = self.overlaps.get(top, [])
        return np.concatenate(parts) if parts else np.zeros(0)

    @property
    def instances(self) -> int:
        return len(self._best(self.tops[0]))

    def recall(self, top: int, threshold: float) -> float:
        best = self._best(top)
        return float((best >= threshold).mean()) if len(best) else float("nan")

    def mean_best_overlap(self, top: int) -> float:
        best = self._best(top)
        return float(best.mean()) if len(best) else float("nan")

    def as_json(self) -> dict:
        return dict(images=self.images, instances=self.instances,
                    seconds_per_image=self.seconds / max(self.images, 1),
                    recall={str(top): {f"{t:g}": self.recall(top, t) for t in self.thresholds} for top in self.tops},
                    mean_best_overlap={str(top): self.mean_best_overlap(top) for top in self.tops})

    def table(self) -> str:
        head = "| proposals | " + " | ".join(f"recall @ IoU {t:g}" for t in self.thresholds) + " | mean best overlap |"
        lines = [head, "|---" * (len(self.thresholds) + 2) + "|"]
        for top in self.tops:
            cells = " | ".join(f"{self.recall(top, t) * 100:.1f}%" for t in self.thresholds)
            lines.append(f"| top {top} | {cells} | {self.mean_best_overlap(top):.3f} |")
        lines.append(f"\n{self.images} images, {self.instances} instances, "
                     f"{self.seconds / max(self.images, 1):.2f} s of proposals per image")
        return "\n".join(lines)


def report(items: Iterable[tuple[np.ndarray, np.ndarray]], tops: tuple[int, ...] = TOPS,
           thresholds: tuple[float, ...] = THRESHOLDS) -> RecallReport:
    """A report over (gt_boxes, proposals) pairs."""
    result = RecallReport(tops, thresholds)
    for gt_boxes, proposals in items:
        result.add(gt_boxes, proposals)
    return result
