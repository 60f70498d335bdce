"""The main job's --quick mode: every step runs and the run folder holds the
report and what it links."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers import ROOT
from helpers import voc_mean_iou_by_hand as voc_mean_iou


@pytest.mark.slow
def test_quick_demo(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--quick", "--with-deeplab",
                             "--with-fcn8s", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report: {out / 'report.md'}" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["mean_iou"] <= 1 and 0 < summary["all_background_mean_iou"] < 1
    report = (out / "report.md").read_text()
    assert "Mean IoU on val" in report and "All-background baseline" in report
    for link in re.findall(r"\]\(([^)]+)\)", report):
        assert (out / link).exists(), f"report.md links a missing {link}"
    assert (out / "figure6.png").exists() and list((out / "overlays").glob("*.png"))
    assert {p.name for p in (out / "plots").glob("*.png")} >= {"loss.png", "lr.png", "val_miou.png"}
    assert (out / "eval.txt").read_text().splitlines()[0].split()[-1] == "mean"
    assert set(summary["crops_validation"]) == {"moving averages (caffe)", "re-estimated"}
    # Inference ran with the folded model; both models were timed on the same crops.
    folding = summary["folding"]
    assert folding["label_agreement"] >= 0.999
    assert all(s > 0 for s in folding["forward_s_per_image"].values())
    assert "## Folded BatchNorm" in report and (out / "models" / "deconvnet_folded.caffemodel").exists()
    # --with-deeplab --with-fcn8s: both peers trained, every ensemble scored with and without the CRF.
    rows = summary["ensembles"]
    assert [r["variant"] for r in rows] == [
        "DeconvNet", "FCN-8s", "DeepLab-LargeFOV", "DeconvNet + FCN-8s (mean)", "DeconvNet + FCN-8s (product)",
        "DeconvNet + DeepLab-LargeFOV (mean)", "FCN-8s + DeepLab-LargeFOV (mean)",
        "DeconvNet + FCN-8s + DeepLab-LargeFOV (mean)"]
    assert all(0 <= r["mean_iou"] <= 1 and 0 <= r["crf_mean_iou"] <= 1 for r in rows)
    # The demo's own DeconvNet labels (with the CRF) are the table's DeconvNet row with the CRF.
    assert rows[0]["crf_mean_iou"] == pytest.approx(summary["mean_iou"], abs=1e-6)
    assert "## DeconvNet and its peers" in report and "| DeepLab-LargeFOV |" in report
    for net in ("deeplab-largefov", "fcn8s"):
        assert (out / "peers" / net / "run" / "log.jsonl").exists()
    # The Zeiler-Fergus section: conv1_1's 8 filters in a row (32 px each, 2 px apart), and the top-9 grid of
    # the 4 strongest conv5_3 units, two blocks a row, each block a label over two 3-wide tiles of 64-px cells.
    inside = summary["inside"]
    assert "## Inside the network" in report and len(inside["units"]) == 4
    filters = cv2.imread(str(out / inside["filters"]))
    assert filters.shape[:2] == (32, 8 * 32 + 7 * 2) and filters.std() > 5
    cells = min(9, inside["images"])
    tile_h, tile_w = -(-cells // 3) * 66 - 2, min(cells, 3) * 66 - 2
    block_h, block_w = 16 + tile_h, 2 * tile_w + 6
    top9 = cv2.imread(str(out / inside["top9"]))
    assert top9.shape[:2] == (2 * block_h + 12, 2 * block_w + 12) and top9.std() > 5


@pytest.mark.slow
def test_the_demo_learns_far_above_the_all_background_baseline(tmp_path):
    """An accuracy floor, so that a regression in training or inference fails
    CI: the quick demo with 200 + 200 iterations on 48 images (about 2
    minutes; 4.5x the baseline when written) must reach twice the mean IoU
    of labelling everything background, both measured here with numpy from
    the label PNGs."""
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--quick", "--images", "48",
                             "--stage1-iters", "200", "--stage2-iters", "200", "--out", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    voc = out / "data" / "synthetic" / "VOCdevkit" / "VOC2012"
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    ours = voc_mean_iou(voc / "SegmentationClass", out / "predictions" / "labels", ids)
    baseline = voc_mean_iou(voc / "SegmentationClass", out / "predictions" / "all_background", ids)
    assert ours == pytest.approx(json.loads((out / "summary.json").read_text())["mean_iou"], abs=1e-6)
    assert ours >= 2 * baseline, f"mean IoU {ours:.3f}, all-background {baseline:.3f}"


def test_the_floor_can_fail(tmp_path):
    """The by-hand measure: all background scores below twice itself."""
    from PIL import Image

    for folder, labels in (("gt", [[0, 0, 15, 15]]), ("bg", [[0, 0, 0, 0]])):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.array(labels, np.uint8)).save(tmp_path / folder / "a.png")
    baseline = voc_mean_iou(tmp_path / "gt", tmp_path / "bg", ["a"])
    assert baseline == pytest.approx(0.25)   # background: 2 of 4; person: 0
    assert not baseline >= 2 * baseline
