"""tools/eval_voc.py on hand-computed cases, and its error cases."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from deconvnet.data.voc import write_indexed_png

from helpers import ROOT, write

TOOL = ROOT / "tools" / "eval_voc.py"


def run(gt_dir, pred_dir, *extra):
    return subprocess.run([sys.executable, str(TOOL), "--gt-dir", str(gt_dir), "--pred-dir", str(pred_dir),
                           *map(str, extra)], capture_output=True, text=True, timeout=120)


def make_pair(tmp_path, gts: dict, preds: dict):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    for name, arr in gts.items():
        write_indexed_png(gt_dir / f"{name}.png", np.asarray(arr, np.uint8))
    for name, arr in preds.items():
        write_indexed_png(pred_dir / f"{name}.png", np.asarray(arr, np.uint8))
    return gt_dir, pred_dir


def test_hand_computed_with_void_and_absent_classes(tmp_path):
    # Image a: gt   [0 0 1 1]   pred [0 1 1 1]
    #               [255 1 1 0]      [15 1 0 0]   (255 is void: ignored)
    # Image b: gt   [15 15]     pred [15 0]
    gt_dir, pred_dir = make_pair(tmp_path, {"a": [[0, 0, 1, 1], [255, 1, 1, 0]], "b": [[15, 15]]},
                                 {"a": [[0, 1, 1, 1], [15, 1, 0, 0]], "b": [[15, 0]]})
    result = run(gt_dir, pred_dir, "--json", tmp_path / "s.json")
    assert result.returncode == 0, result.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    # Confusion (gt rows): bkg: 0->0 x2, 0->1 x1; class 1: 1->1 x3, 1->0 x1;
    # class 15: 15->15 x1, 15->0 x1.
    # bkg: TP 2, FP 2 (1->0, 15->0), FN 1 -> 2/5. aero: TP 3, FP 1, FN 1 -> 3/5.
    # person: TP 1, FP 0, FN 1 -> 1/2.
    assert s["per_class_iou"]["background"] == pytest.approx(2 / 5)
    assert s["per_class_iou"]["aeroplane"] == pytest.approx(3 / 5)
    assert s["per_class_iou"]["person"] == pytest.approx(1 / 2)
    assert s["per_class_iou"]["cat"] is None          # absent from both: left out
    assert s["mean_iou"] == pytest.approx((2 / 5 + 3 / 5 + 1 / 2) / 3)
    assert s["pixel_accuracy"] == pytest.approx(6 / 9)
    assert s["num_images"] == 2
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["bkg", "aero", "bike", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
                                "cow", "table", "dog", "horse", "mbike", "person", "plant", "sheep", "sofa",
                                "train", "tv", "mean"]
    row = lines[1].split()
    assert row[1:4] == ["40.0", "60.0", "n/a"] and row[-1] == "50.0"


def test_perfect_and_empty_predictions(tmp_path):
    gt = np.array([[0, 3, 3], [0, 0, 255]])
    gt_dir, pred_dir = make_pair(tmp_path, {"x": gt}, {"x": np.where(gt == 255, 7, gt)})
    perfect = run(gt_dir, pred_dir, "--json", tmp_path / "p.json")
    assert perfect.returncode == 0
    s = json.loads((tmp_path / "p.json").read_text())
    assert s["mean_iou"] == 1.0 and s["pixel_accuracy"] == 1.0
    # Predicting background everywhere: class 3 gets IoU 0, background 3/5.
    write_indexed_png(pred_dir / "x.png", np.zeros_like(gt, np.uint8))
    empty = run(gt_dir, pred_dir, "--json", tmp_path / "e.json")
    assert empty.returncode == 0
    s = json.loads((tmp_path / "e.json").read_text())
    assert s["per_class_iou"]["bird"] == 0.0
    assert s["per_class_iou"]["background"] == pytest.approx(3 / 5)
    assert s["mean_iou"] == pytest.approx(0.3)


def test_compare_paper_rows(tmp_path):
    gt_dir, pred_dir = make_pair(tmp_path, {"x": [[0, 1]]}, {"x": [[0, 1]]})
    result = run(gt_dir, pred_dir, "--compare-paper")
    assert "paper EDeconvNet+CRF" in result.stdout and "72.5" in result.stdout and "62.2" in result.stdout


def test_missing_predictions_are_listed(tmp_path):
    gt_dir, pred_dir = make_pair(tmp_path, {"a": [[0]], "b": [[0]], "c": [[1]]}, {"b": [[0]]})
    result = run(gt_dir, pred_dir)
    assert result.returncode == 1
    assert "2 prediction(s) missing" in result.stderr and "a, c" in result.stderr


def test_value_outside_classes_names_the_file(tmp_path):
    gt_dir, pred_dir = make_pair(tmp_path, {"a": [[0, 1]]}, {"a": [[0, 21]]})
    result = run(gt_dir, pred_dir)
    assert result.returncode == 1
    assert "a.png holds values outside 0..20: [21]" in result.stderr


def test_size_mismatch_names_both_files(tmp_path):
    gt_dir, pred_dir = make_pair(tmp_path, {"a": [[0, 1, 1]]}, {"a": [[0, 1]]})
    result = run(gt_dir, pred_dir)
    assert result.returncode == 1
    assert "pred/a.png is 2x1" in result.stderr and "gt/a.png is 3x1" in result.stderr


def test_list_selects_ids(tmp_path):
    gt_dir, pred_dir = make_pair(tmp_path, {"a": [[1]], "b": [[1]]}, {"a": [[1]]})
    ids = write(tmp_path / "ids.txt", "a\n")
    result = run(gt_dir, pred_dir, "--list", ids, "--json", tmp_path / "s.json")
    assert result.returncode == 0
    assert json.loads((tmp_path / "s.json").read_text())["num_images"] == 1
