"""tools/proposal_recall.py: recall and mean best overlap on hand-placed
boxes against a plain-loop IoU, and the tool on the synthetic dataset."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from deconvnet.data.synthetic import SyntheticSpec, write_dataset
from deconvnet.eval.proposal_recall import RecallReport

from helpers import ROOT


def plain_iou(a, b) -> float:
    """Boxes x1 y1 x2 y2, end exclusive, by pixel counting."""
    ax = set(range(int(a[0]), int(a[2])))
    ay = set(range(int(a[1]), int(a[3])))
    bx = set(range(int(b[0]), int(b[2])))
    by = set(range(int(b[1]), int(b[3])))
    inter = len(ax & bx) * len(ay & by)
    union = len(ax) * len(ay) + len(bx) * len(by) - inter
    return inter / union


IMAGES = [
    # (ground-truth boxes, proposals in score order)
    ([[0, 0, 10, 10], [20, 20, 40, 30]],
     [[0, 0, 10, 12], [50, 50, 60, 60], [20, 20, 40, 30], [0, 0, 5, 5]]),
    ([[5, 5, 25, 25]],
     [[100, 100, 110, 110], [5, 5, 15, 25], [6, 6, 24, 24]]),
    ([[0, 0, 8, 8]], []),  # no proposals at all
]


def expected(top: int):
    best = [max([plain_iou(g, p) for p in props[:top]], default=0.0) for gts, props in IMAGES for g in gts]
    return np.array(best)


@pytest.mark.parametrize("top", [1, 2, 3, 50])
def test_recall_and_mean_best_overlap_by_hand(top):
    report = RecallReport(tops=(top,), thresholds=(0.5, 0.7))
    for gts, props in IMAGES:
        report.add(np.array(gts), np.array(props, np.float32).reshape(-1, 4))
    best = expected(top)
    assert report.instances == 4 and report.images == 3
    assert report.recall(top, 0.5) == pytest.approx((best >= 0.5).mean())
    assert report.recall(top, 0.7) == pytest.approx((best >= 0.7).mean())
    assert report.mean_best_overlap(top) == pytest.approx(best.mean())


def test_the_hand_case_distinguishes_the_tops():
    # Top 1 finds only the first instance (IoU 10/12); top 3 finds three of four.
    assert expected(1).tolist() == pytest.approx([100 / 120, 0, 0, 0])
    assert (expected(3) >= 0.7).sum() == 3


def test_tool_on_the_synthetic_dataset(tmp_path):
    write_dataset(tmp_path, SyntheticSpec(num_images=4, seed=1, voc_fraction=1.0))
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "proposal_recall.py"), "--voc", str(voc),
                             "--split", "trainval", "--edges", "gradient", "--json", str(tmp_path / "r.json")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["edges"] == "gradient" and report["images"] == 4 and report["instances"] >= 4
    for top in ("50", "2000"):
        assert 0 <= report["recall"][top]["0.7"] <= report["recall"][top]["0.5"] <= 1
    assert report["mean_best_overlap"]["50"] <= report["mean_best_overlap"]["2000"]
    assert "| top 50 |" in result.stdout
