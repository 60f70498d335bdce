"""The built-in synthetic dataset and the dataset statistics tool."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np

from deconvnet.data.synthetic import SyntheticSpec, write_dataset
from deconvnet.data.voc import SBDReader, VOCReader

from helpers import ROOT


def test_deterministic_and_voc_like(tmp_path):
    spec = SyntheticSpec(num_images=8, seed=5)
    write_dataset(tmp_path / "a", spec)
    write_dataset(tmp_path / "b", spec)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 20
    for rel in files:
        if rel.suffix != ".mat":  # .mat headers carry a timestamp
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    voc = VOCReader(tmp_path / "a" / "VOCdevkit" / "VOC2012")
    ids = voc.ids("trainval")
    assert len(ids) == 6 and set(voc.ids("train")) | set(voc.ids("val")) == set(ids)
    widths = []
    for image_id in ids:
        cls = voc.class_map(image_id)
        assert set(np.unique(cls)) <= {0, 1, 6, 8, 15, 20, 255}
        instances = voc.instances(image_id)
        assert 1 <= len(instances) <= 4
        # The void band: pixels between an object and the background are 255.
        void = cls == 255
        assert void.any()
        # Its width: distance across the band, measured by erosion steps.
        band = void.astype(np.uint8)
        steps = 0
        while band.any():
            band = cv2.erode(band, np.ones((3, 3), np.uint8))
            steps += 1
        widths.append(2 * steps - 1)
    assert 3 <= np.median(widths) <= 5
    sbd = SBDReader(tmp_path / "a" / "benchmark_RELEASE" / "dataset")
    for image_id in sbd.ids("train"):
        assert 255 not in sbd.class_map(image_id)  # SBD has no void


def test_dataset_stats_tool(tmp_path):
    from deconvnet.data.build_crops import BuildConfig, build

    write_dataset(tmp_path / "syn", SyntheticSpec(num_images=6))
    build(BuildConfig(stage=1, out=tmp_path / "db", voc_root=tmp_path / "syn/VOCdevkit/VOC2012",
                      sbd_root=tmp_path / "syn/benchmark_RELEASE/dataset"))
    result = subprocess.run([sys.executable, str(ROOT / "data_prep" / "dataset_stats.py"), str(tmp_path / "db"),
                             "--sheet", str(tmp_path / "sheet.png"), "--plot", str(tmp_path / "hist.png"),
                             "--count", "4"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "unique crops" in result.stdout
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet.shape == (320, 320, 3)
    assert cv2.imread(str(tmp_path / "hist.png")) is not None
