"""docs/REPRODUCE.md rehearsed: experiments/reproduce.sh --rehearsal runs
steps 2 to 9 of the guide on stand-ins of the real inputs, with the full
network on the CPU. Every file the guide's commands write must exist, and
the scores and the submission are checked against numpy and the VOC
formats, not against our own readers."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import tarfile

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT
from helpers import voc_mean_iou_by_hand as mean_iou

SCRIPT = ROOT / "experiments" / "reproduce.sh"
GUIDE = ROOT / "docs" / "REPRODUCE.md"
# Flags whose value is a file or folder the command writes.
OUTPUT_FLAGS = ("--out", "--json", "--plot", "--sheet", "--out-model", "--out-weights", "--run-dir")


def voc_palette() -> list[int]:
    """VOC's colour map, from its devkit's bit-spreading rule."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def guide_outputs() -> list[str]:
    """The paths the guide's steps 2 to 9 write (their output flags)."""
    text = GUIDE.read_text()
    outputs = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S):
        words = shlex.split(block.replace("\\\n", " "), comments=True)
        outputs += [words[i + 1] for i, w in enumerate(words[:-1]) if w in OUTPUT_FLAGS]
    return outputs


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rehearsal")
    done = subprocess.run(["bash", str(SCRIPT), "--rehearsal", str(folder)], capture_output=True, text=True,
                          timeout=3600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder, done.stdout + done.stderr


@pytest.mark.slow
def test_the_rehearsal_logs_its_overrides_and_runs_every_step(rehearsal):
    folder, output = rehearsal
    logs = list((folder / "runs" / "reproduce").glob("*.log"))
    assert len(logs) == 1
    log = logs[0].read_text()
    for override in ("--batch-per-pass 2 --iter-size 1", "--max-iter 2", "--batches 2", "--top-k 3",
                     "no --gpu", f"--edge-model {folder}/models/sed_model.yml.gz"):
        assert override in log, override
    assert [int(n) for n in re.findall(r"== step (\d+):", log)] == list(range(2, 10))
    assert "done: steps 2 to 9" in log
    # The full network: stage 2's snapshot has every Table 2 layer at full width.
    header = (folder / "models" / "deconvnet_deploy_folded.prototxt").read_text()
    assert "deconv1_1" in header and "num_output: 4096" in header


@pytest.mark.slow
def test_every_file_the_guide_writes_exists(rehearsal):
    folder, _ = rehearsal
    outputs = guide_outputs()
    assert len(outputs) >= 15
    for path in outputs:
        assert (folder / path).exists(), f"the guide writes {path}; the rehearsal has no {folder / path}"
    for stage in (1, 2):
        for split in ("train", "test"):
            assert (folder / "data" / "lmdb" / f"stage{stage}_{split}" / "manifest.json").is_file()
    assert (folder / "runs" / "train" / "stage2" / "snapshot_iter_2.caffemodel").is_file()
    # Stage 2's proposals came from the stand-in structured-edge model, as step 1's would.
    manifest = json.loads((folder / "data" / "lmdb" / "stage2_train" / "manifest.json").read_text())
    assert "sed_model.yml.gz" in json.dumps(manifest["edges"]), manifest["edges"]


@pytest.mark.slow
def test_step_1s_archives_are_what_step_2_reads(rehearsal):
    """The stand-in archives are rooted as the real ones, and what the
    download tool's extraction left is exactly their content."""
    folder, _ = rehearsal
    data = folder / "data"
    for archive, root in (("VOCtrainval_11-May-2012.tar", "VOCdevkit/VOC2012"),
                          ("benchmark.tgz", "benchmark_RELEASE/dataset")):
        with tarfile.open(data / "downloads" / archive) as tar:
            files = [m.name for m in tar.getmembers() if m.isfile()]
        assert files and all(name.startswith(root + "/") for name in files)
        assert all((data / name).is_file() for name in files)
    voc = data / "VOCdevkit" / "VOC2012"
    ids = (voc / "ImageSets" / "Segmentation" / "trainval.txt").read_text().split()
    assert len(ids) == 18 and all(re.fullmatch(r"20(0[7-9]|1[01])_\d{6}", i) for i in ids)
    sizes = {Image.open(voc / "JPEGImages" / f"{i}.jpg").size for i in ids}
    assert (500, 375) in sizes and (375, 500) in sizes
    label = Image.open(voc / "SegmentationClass" / f"{ids[0]}.png")
    assert label.mode == "P" and label.getpalette()[:63] == voc_palette()[:63]


@pytest.mark.slow
def test_the_scores_are_voc_scores_of_the_labels(rehearsal):
    folder, _ = rehearsal
    voc = folder / "data" / "VOCdevkit" / "VOC2012"
    ids = (folder / "rehearsal_val.txt").read_text().split()
    assert len(ids) == 2
    for name in ("deconvnet", "deconvnet_crf", "edeconvnet_crf"):
        out = folder / "output" / f"val_{name}"
        scores = json.loads((out / "scores.json").read_text())
        assert scores["num_images"] == 2
        assert scores["mean_iou"] == pytest.approx(mean_iou(voc / "SegmentationClass", out / "labels", ids),
                                                   abs=1e-9)
        assert json.loads((out / "run.json").read_text())


@pytest.mark.slow
def test_the_submission_archive_is_what_the_server_takes(rehearsal):
    folder, _ = rehearsal
    images = sorted((folder / "data" / "VOC2012_test" / "JPEGImages").glob("*.jpg"))
    assert len(images) == 2
    with tarfile.open(folder / "output" / "test" / "results.tgz") as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
        assert names == [f"results/VOC2012/Segmentation/comp6_test_cls/{p.stem}.png" for p in images]
        for name, image in zip(names, images, strict=True):
            png = Image.open(tar.extractfile(name))
            assert png.mode == "P" and png.size == Image.open(image).size
            assert png.getpalette()[:63] == voc_palette()[:63]
            assert np.array(png).max() <= 20


def test_the_palette_check_can_fail():
    """voc_palette is VOC's: class 1 is (128, 0, 0), 15 (person) (192, 128, 128)."""
    palette = voc_palette()
    assert palette[3:6] == [128, 0, 0] and palette[45:48] == [192, 128, 128]
    assert palette[3:6] != [0, 128, 0]


def test_mean_iou_by_hand_can_fail(tmp_path):
    gt = np.zeros((4, 4), np.uint8)
    gt[:2] = 15
    gt[3, 3] = 255
    pred = np.zeros((4, 4), np.uint8)
    pred[:1] = 15
    for folder, labels in (("gt", gt), ("pred", pred)):
        (tmp_path / folder).mkdir()
        Image.fromarray(labels).save(tmp_path / folder / "a.png")
    # background: tp 7 of union 11 (7 + 4 predicted wrongly); person: 4 of 8.
    assert mean_iou(tmp_path / "gt", tmp_path / "pred", ["a"]) == pytest.approx((7 / 11 + 4 / 8) / 2)
