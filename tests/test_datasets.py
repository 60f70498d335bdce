"""Crop datasets on the synthetic dataset: stage-1 records against an
independent computation, stage-2 selection against hand-placed boxes,
balancing, shared storage, resumption after a kill, and bad input."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from deconvnet.data.balance import balanced_index
from deconvnet.data.build_crops import BuildConfig, build
from deconvnet.data.crop_db import CropDB
from deconvnet.data.crops import select_proposals
from deconvnet.data.voc import Instance, SBDReader, VOCReader

from helpers import ROOT, synthetic_roots

MEAN = np.array([104, 117, 123], np.uint8)  # MEAN_BGR rounded


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_roots(tmp_path_factory.mktemp("synthetic"), num_images=16, seed=3)


def expected_stage1(image, class_map, mask, cls):
    """Independent of deconvnet.data.crops: the 1.2x box by hand, padding by hand."""
    ys, xs = np.nonzero(mask)
    x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * 1.2, (y2 - y1) * 1.2
    bx1, by1 = int(round(cx - w / 2)), int(round(cy - h / 2))
    bx2, by2 = int(round(cx + w / 2)), int(round(cy + h / 2))
    H, W = class_map.shape
    pad = max(0, -bx1, -by1, bx2 - W, by2 - H)
    big_img = np.empty((H + 2 * pad, W + 2 * pad, 3), np.uint8)
    big_img[:] = MEAN
    big_img[pad:pad + H, pad:pad + W] = image
    label = np.zeros((H, W), np.uint8)
    label[class_map == 255] = 255
    label[mask] = cls
    big_lab = np.full((H + 2 * pad, W + 2 * pad), 255, np.uint8)
    big_lab[pad:pad + H, pad:pad + W] = label
    crop_img = big_img[by1 + pad:by2 + pad, bx1 + pad:bx2 + pad]
    crop_lab = big_lab[by1 + pad:by2 + pad, bx1 + pad:bx2 + pad]
    return ((bx1, by1, bx2, by2), cv2.resize(crop_img, (250, 250), interpolation=cv2.INTER_LINEAR),
            cv2.resize(crop_lab, (250, 250), interpolation=cv2.INTER_NEAREST))


@pytest.fixture(scope="module")
def stage1(synthetic, tmp_path_factory):
    voc, sbd = synthetic
    out = tmp_path_factory.mktemp("lmdb") / "stage1"
    manifest = build(BuildConfig(stage=1, out=out, voc_root=voc, sbd_root=sbd, workers=2))
    return CropDB(out), manifest


def test_stage1_records_match_independent_crops(synthetic, stage1):
    voc, sbd = synthetic
    db, manifest = stage1
    readers = {"voc": VOCReader(voc), "sbd": SBDReader(sbd)}
    checked = 0
    padded = 0
    for number in range(db.num_records):
        record = db.get(number)
        reader = readers[record.meta["source"]]
        iid = record.meta["image_id"]
        image = reader.image(iid)
        class_map = reader.class_map(iid)
        candidates = [i for i in reader.instances(iid) if i.cls == record.meta["cls"]]
        matches = []
        for inst in candidates:
            box, img, lab = expected_stage1(image, class_map, inst.mask, inst.cls)
            if list(box) == record.meta["box"]:
                matches.append((img, lab, box))
        assert matches, f"record {number}: no instance gives box {record.meta['box']}"
        img, lab, box = matches[0]
        np.testing.assert_array_equal(record.label, lab)
        # JPEG at quality 95: small differences only.
        assert np.abs(record.image.astype(int) - img.astype(int)).mean() < 3
        assert set(np.unique(record.label)) <= {0, record.meta["cls"], 255}
        if box[0] < 0 or box[1] < 0 or box[2] > image.shape[1] or box[3] > image.shape[0]:
            padded += 1
        checked += 1
    assert checked == manifest["unique_records"] > 20
    assert padded > 0, "no example reached the border: the padding was not exercised"
    # The union covers every synthetic image once (VOC preferred where both).
    assert manifest["images"] == 16


def test_balancing_counts_and_shared_storage(stage1):
    db, manifest = stage1
    before, after = manifest["class_counts_before"], manifest["class_counts_after"]
    assert set(after.values()) == {max(before.values())}
    assert sum(after.values()) == len(db.index) > db.num_records
    # Repeats refer to stored records: the database holds each crop once.
    assert db.index.max() < db.num_records and len(set(db.index.tolist())) == db.num_records
    with db.env.begin() as txn:
        assert txn.stat()["entries"] == db.num_records


def test_balanced_index_by_hand():
    classes = np.array([1] * 6 + [2] * 2 + [3] * 3)
    index = balanced_index(classes, seed=1)
    counts = np.bincount(classes[index])
    assert counts[1:].tolist() == [6, 6, 6]
    # Class 2's two examples are each repeated exactly 3 times.
    assert sorted(np.bincount(index, minlength=11)[6:8].tolist()) == [3, 3]
    capped = balanced_index(classes, max_repeat=2, seed=1)
    assert np.bincount(classes[capped])[1:].tolist() == [6, 4, 6]
    assert np.array_equal(index, balanced_index(classes, seed=1))


def test_stage2_selection_against_hand_placed_boxes():
    mask_a = np.zeros((100, 100), bool)
    mask_a[10:30, 10:50] = True     # box (10, 10, 50, 30), area 800
    mask_b = np.zeros((100, 100), bool)
    mask_b[60:90, 60:90] = True     # box (60, 60, 90, 90), area 900
    instances = [Instance(mask_a, 3), Instance(mask_b, 15)]
    boxes = np.array([
        [10, 10, 50, 30],   # identical to a: IoU 1
        [10, 10, 42, 30],   # inside a, 640/800 = 0.8
        [10, 10, 30, 30],   # 400/800 = 0.5 exactly: kept
        [10, 10, 29, 30],   # 380/800 = 0.475: dropped
        [60, 60, 90, 100],  # b extended: 900/1200 = 0.75
        [0, 0, 100, 100],   # everything: 900/10000 for b
        [40, 40, 70, 70],   # touches both a little
    ], dtype=np.float32)
    selected = select_proposals(boxes, instances, 0.5)
    assert [(b.tolist(), c) for b, c in selected] == [
        ([10, 10, 50, 30], 3), ([10, 10, 42, 30], 3), ([10, 10, 30, 30], 3), ([60, 60, 90, 100], 15)]
    assert len(select_proposals(boxes, instances, 0.8)) == 2


def test_stage2_database(synthetic, tmp_path):
    voc, sbd = synthetic
    out = tmp_path / "stage2"
    manifest = build(BuildConfig(stage=2, out=out, voc_root=voc, sbd_root=sbd, workers=2, limit=6,
                                 proposal_cache=tmp_path / "proposals"))
    db = CropDB(out)
    assert manifest["unique_records"] > 6
    assert len(list((tmp_path / "proposals").rglob("*.npz"))) == 6
    record = db.get(0)
    assert record.image.shape == (250, 250, 3) and record.label.shape == (250, 250)
    # The label keeps every class the crop shows, not only the example's.
    classes_seen = set()
    for number in range(db.num_records):
        classes_seen |= set(np.unique(db.get(number).label).tolist()) - {0, 255}
    assert len(classes_seen) >= 3


BUILD = ("import sys, logging; logging.basicConfig(level=logging.INFO)\n"
         "from pathlib import Path\n"
         "from deconvnet.data.build_crops import BuildConfig, build\n"
         "build(BuildConfig(stage=2, out=Path(sys.argv[1]), voc_root=Path(sys.argv[2]),"
         " sbd_root=Path(sys.argv[3]), workers=1, proposal_cache=Path(sys.argv[4]), commit_every=1))\n")


def test_resume_after_kill(synthetic, tmp_path):
    voc, sbd = synthetic
    out = tmp_path / "stage2"
    args = [sys.executable, "-c", BUILD, str(out), str(voc), str(sbd), str(tmp_path / "proposals")]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "stage2.partial"
    deadline = time.time() + 120
    # Kill it once it has committed a few images, well before it finishes.
    while time.time() < deadline and proc.poll() is None:
        if (partial / "data.mdb").exists():
            state = subprocess.run([sys.executable, "-c",
                                    "import lmdb, sys; e = lmdb.open(sys.argv[1], readonly=True, lock=False);"
                                    "print((e.begin().get(b'__state__') or b'{}').decode())", str(partial)],
                                   capture_output=True, text=True).stdout
            if json.loads(state or "{}").get("images_done", 0) >= 2:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the build finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed build must not look complete"
    assert partial.exists()
    # The rerun finishes, resuming, and gives the same database as a clean build.
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming" in result.stderr
    assert out.exists() and not partial.exists()
    clean = tmp_path / "clean"
    build(BuildConfig(stage=2, out=clean, voc_root=voc, sbd_root=sbd, workers=2,
                      proposal_cache=tmp_path / "proposals"))
    a, b = CropDB(out), CropDB(clean)
    assert a.num_records == b.num_records
    assert np.array_equal(a.index, b.index)
    for number in (0, a.num_records // 2, a.num_records - 1):
        assert a.raw(number) == b.raw(number)


def test_bad_inputs_are_skipped_or_reported(synthetic, tmp_path):
    import shutil

    voc_src, _ = synthetic
    voc = tmp_path / "VOC2012"
    shutil.copytree(voc_src, voc)
    ids = VOCReader(voc).ids("trainval")
    (voc / "JPEGImages" / f"{ids[0]}.jpg").unlink()                       # missing
    data = (voc / "JPEGImages" / f"{ids[1]}.jpg").read_bytes()
    (voc / "JPEGImages" / f"{ids[1]}.jpg").write_bytes(data[:len(data) // 3])  # truncated
    gray = Image.open(voc / "JPEGImages" / f"{ids[2]}.jpg").convert("L")
    gray.save(voc / "JPEGImages" / f"{ids[2]}.jpg")                          # grayscale
    cmyk = Image.open(voc / "JPEGImages" / f"{ids[3]}.jpg").convert("CMYK")
    cmyk.save(voc / "JPEGImages" / f"{ids[3]}.jpg")                          # CMYK
    label = np.array(Image.open(voc / "SegmentationClass" / f"{ids[4]}.png"))
    label[0, 0] = 42
    from deconvnet.data.voc import write_indexed_png
    write_indexed_png(voc / "SegmentationClass" / f"{ids[4]}.png", label)    # bad label value
    manifest = build(BuildConfig(stage=1, out=tmp_path / "s1", voc_root=voc, image_set="voc:trainval"))
    reasons = {item["image"]: item["reason"] for item in manifest["skipped"]}
    assert set(reasons) == {f"voc/{ids[0]}", f"voc/{ids[1]}", f"voc/{ids[4]}"}
    assert "not found" in reasons[f"voc/{ids[0]}"]
    assert "unreadable" in reasons[f"voc/{ids[1]}"]
    assert "outside 0..20/255: [42]" in reasons[f"voc/{ids[4]}"]
    db = CropDB(tmp_path / "s1")
    converted = {db.get(n).meta["image_id"] for n in range(db.num_records)}
    assert {ids[2], ids[3]} <= converted
    # --strict turns a skip into a failure.
    result = subprocess.run([sys.executable, str(ROOT / "data_prep" / "build_dataset.py"), "--stage", "1",
                             "--out", str(tmp_path / "strict"), "--voc", str(voc), "--image-set",
                             "voc:trainval", "--strict", "--workers", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "not found" in result.stderr
    assert not (tmp_path / "strict").exists()


def test_mat_without_fields_names_the_file(synthetic, tmp_path):
    import shutil

    import scipy.io

    _, sbd_src = synthetic
    sbd = tmp_path / "dataset"
    shutil.copytree(sbd_src, sbd)
    first = SBDReader(sbd).ids("train")[0]
    scipy.io.savemat(sbd / "inst" / f"{first}.mat", {"GTinst": {"Boundaries": []}})
    result = subprocess.run([sys.executable, str(ROOT / "data_prep" / "build_dataset.py"), "--stage", "1",
                             "--out", str(tmp_path / "s1"), "--sbd", str(sbd), "--image-set", "sbd:train",
                             "--workers", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"inst/{first}.mat: expected a struct 'GTinst' with field 'Segmentation'" in result.stderr


def test_zero_area_instances_are_ignored():
    from deconvnet.data.crops import stage1_examples

    image = np.zeros((50, 50, 3), np.uint8)
    class_map = np.zeros((50, 50), np.uint8)
    mask = np.zeros((50, 50), bool)
    mask[5:10, 5:10] = True
    examples = stage1_examples(image, class_map, [Instance(np.zeros((50, 50), bool), 3), Instance(mask, 4)])
    assert [e.cls for e in examples] == [4]
