"""The main job's --quick mode: every step runs and the run folder holds the
report and what it links."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.slow
def test_quick_demo(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
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
