"""SegDataLayer: batches against the stored records, with a pattern that
makes any misalignment of image and label, or a wrong flip, visible."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deconvnet.data.crop_db import CropDB, CropDBWriter, encode_record

from helpers import run_python, write

STORED = 64
MEAN = [104.00698793, 116.66876762, 122.67891434]


def make_pattern_db(path, count: int = 5):
    """Record r: blue = 3x, green = 3y (smooth, survives JPEG), red = 40r;
    label = a class per 8x8 cell that differs between neighbours."""
    yy, xx = np.mgrid[:STORED, :STORED]
    writer = CropDBWriter(path, dict(test=True))
    for r in range(count):
        image = np.dstack([3 * xx, 3 * yy, np.full_like(xx, 40 * r)]).astype(np.uint8)
        label = ((xx // 8) + 3 * (yy // 8) + r) % 21
        label[yy % 8 == 7] = 255
        writer.add_image([(encode_record(image, label.astype(np.uint8), dict(cls=1, record=r)), 1)])
    writer.finish(np.arange(count), dict(params=dict(stored_size=STORED), unique_records=count))
    return CropDB(path)


def data_net(tmp_path, caffe, phase, **params):
    text = f"""layer {{ name: "data" type: "Python" top: "data" top: "label"
  python_param {{ module: "python_layers.seg_data" layer: "SegDataLayer"
  param_str: '{json.dumps(params)}' }} }}"""
    return caffe.Net(str(write(tmp_path / "net.prototxt", text)), phase)


def check_batch(db, data, label, crop):
    """Recovers each example's record, offset and flip from the image, then
    requires the label to be exactly the record's label under the same."""
    seen = []
    for img, lab in zip(data, label[:, 0], strict=True):
        bgr = img.transpose(1, 2, 0) + np.array(MEAN, np.float32)
        record = int(round(bgr[:, :, 2].mean() / 40))
        # Averaged over a whole row / column: JPEG moves single pixels by a few.
        blue_row = bgr[crop // 2, :, 0]
        flipped = blue_row[-1] < blue_row[0]
        steps = np.arange(crop)[::-1] if flipped else np.arange(crop)
        x0 = int(round(np.mean(blue_row / 3 - steps)))
        y0 = int(round(np.mean(bgr[:, crop // 2, 1] / 3 - np.arange(crop))))
        stored = db.get(record).label[y0:y0 + crop, x0:x0 + crop]
        if flipped:
            stored = stored[:, ::-1]
        np.testing.assert_array_equal(lab, stored)
        seen.append((record, y0, x0, bool(flipped)))
    return seen


def test_train_batches_are_aligned_and_mirrored(caffe, tmp_path):
    db = make_pattern_db(tmp_path / "db")
    net = data_net(tmp_path, caffe, caffe.TRAIN, source=str(tmp_path / "db"), batch_size=4, crop_size=48,
                   mirror=True, shuffle=True, seed=7, workers=2)
    seen = []
    for _ in range(10):
        net.forward()
        assert net.blobs["data"].data.shape == (4, 3, 48, 48)
        seen += check_batch(db, net.blobs["data"].data, net.blobs["label"].data, 48)
    records = [s[0] for s in seen]
    assert sorted(records[:5]) == [0, 1, 2, 3, 4]  # each epoch visits every index entry once
    assert any(s[3] for s in seen) and not all(s[3] for s in seen)
    assert len({(s[1], s[2]) for s in seen}) > 10    # random crops


def test_test_phase_is_centre_crop_in_order(caffe, tmp_path):
    db = make_pattern_db(tmp_path / "db")
    net = data_net(tmp_path, caffe, caffe.TEST, source=str(tmp_path / "db"), batch_size=5, crop_size=48,
                   mirror=True, shuffle=True, workers=0)
    net.forward()
    seen = check_batch(db, net.blobs["data"].data, net.blobs["label"].data, 48)
    assert seen == [(r, 8, 8, False) for r in range(5)]


def test_batches_do_not_depend_on_workers(caffe, tmp_path):
    make_pattern_db(tmp_path / "db")
    batches = []
    for workers in (0, 1, 2):
        net = data_net(tmp_path, caffe, caffe.TRAIN, source=str(tmp_path / "db"), batch_size=3,
                       crop_size=40, mirror=True, shuffle=True, seed=3, workers=workers)
        out = []
        for _ in range(4):
            net.forward()
            out.append(net.blobs["label"].data.copy())
        batches.append(np.stack(out))
    assert np.array_equal(batches[0], batches[1]) and np.array_equal(batches[0], batches[2])


@pytest.mark.parametrize("params,message", [
    (dict(source="DB", colour=1), "unknown param_str key 'colour'"),
    (dict(batch_size=2), "param_str needs 'source'"),
    (dict(source="DB", crop_size=100), "'crop_size' 100 is larger than the stored crops (64x64)"),
    (dict(source="DB", batch_size=0), "'batch_size' must be a positive integer"),
    (dict(source="nowhere"), "is not a finished crop database"),
])
def test_bad_param_str_fails_at_setup(tmp_path, params, message):
    make_pattern_db(tmp_path / "db")
    if params.get("source") == "DB":
        params["source"] = str(tmp_path / "db")
    text = f"""layer {{ name: "data" type: "Python" top: "data" top: "label"
  python_param {{ module: "python_layers.seg_data" layer: "SegDataLayer" param_str: '{json.dumps(params)}' }} }}"""
    write(tmp_path / "net.prototxt", text)
    result = run_python("import caffe; caffe.Net('net.prototxt', caffe.TRAIN)", cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-1500:]
