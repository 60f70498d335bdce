"""VOC and SBD readers, and the FCN-8s whole-image data layer, on a tiny
hand-made dataset in both layouts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
from PIL import Image

from deconvnet.data.voc import DatasetError, SBDReader, VOCReader, voc_palette, write_indexed_png

from helpers import write


def make_tiny_voc(root):
    """Two images: a cat (8) and a person (15) with a void border; a bus (6)."""
    voc = root / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    cls = np.zeros((20, 30), np.uint8)
    obj = np.zeros((20, 30), np.uint8)
    cls[2:8, 3:10], obj[2:8, 3:10] = 8, 1
    cls[10:18, 12:25], obj[10:18, 12:25] = 15, 2
    cls[9, 12:25] = obj[9, 12:25] = 255
    cls2 = np.zeros((16, 16), np.uint8)
    cls2[4:12, 4:12] = 6
    for image_id, c, o in (("2007_000001", cls, obj), ("2007_000002", cls2, (cls2 > 0).astype(np.uint8))):
        rgb = np.dstack([c * 10, c * 5, 255 - c]).astype(np.uint8)
        Image.fromarray(rgb).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        write_indexed_png(voc / "SegmentationClass" / f"{image_id}.png", c)
        write_indexed_png(voc / "SegmentationObject" / f"{image_id}.png", o)
    write(voc / "ImageSets/Segmentation/train.txt", "2007_000001\n2007_000002\n")
    return voc, cls, obj


def test_voc_reader(tmp_path):
    voc, cls, _ = make_tiny_voc(tmp_path)
    reader = VOCReader(voc)
    assert reader.ids("train") == ["2007_000001", "2007_000002"]
    np.testing.assert_array_equal(reader.class_map("2007_000001"), cls)
    image = reader.image("2007_000001")
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    instances = reader.instances("2007_000001")
    assert [i.cls for i in instances] == [8, 15]
    assert instances[0].mask.sum() == 6 * 7 and instances[1].mask.sum() == 8 * 13
    # The palette is VOC's: class 1 is (128, 0, 0), 15 is (192, 128, 128).
    assert tuple(voc_palette()[1]) == (128, 0, 0) and tuple(voc_palette()[15]) == (192, 128, 128)


def test_sbd_reader_and_bad_mat(tmp_path):
    root = tmp_path / "dataset"
    (root / "img").mkdir(parents=True)
    (root / "cls").mkdir()
    (root / "inst").mkdir()
    seg = np.zeros((10, 12), np.uint8)
    seg[1:4, 1:5] = 3
    inst = (seg > 0).astype(np.uint8)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(root / "img" / "a.jpg")
    scipy.io.savemat(root / "cls" / "a.mat", {"GTcls": {"Segmentation": seg, "Boundaries": []}})
    scipy.io.savemat(root / "inst" / "a.mat", {"GTinst": {"Segmentation": inst, "Categories": [3]}})
    write(root / "train.txt", "a\n")
    reader = SBDReader(root)
    np.testing.assert_array_equal(reader.class_map("a"), seg)
    [instance] = reader.instances("a")
    assert instance.cls == 3 and instance.mask.sum() == 12
    scipy.io.savemat(root / "cls" / "b.mat", {"other": 1})
    with pytest.raises(DatasetError, match=r"b\.mat: expected a struct 'GTcls'"):
        reader.class_map("b")


def test_fcn_data_layer(caffe, tmp_path):
    voc, cls, _ = make_tiny_voc(tmp_path)
    param = json.dumps(dict(dataset="voc", root=str(voc), split="train", shuffle=False))
    net_path = write(tmp_path / "net.prototxt", f"""
layer {{ name: "data" type: "Python" top: "data" top: "label"
  python_param {{ module: "python_layers.fcn_data" layer: "WholeImageDataLayer" param_str: '{param}' }} }}
""")
    net = caffe.Net(str(net_path), caffe.TRAIN)
    net.forward()
    assert net.blobs["data"].data.shape == (1, 3, 20, 30)
    np.testing.assert_array_equal(net.blobs["label"].data[0, 0], cls)
    image = VOCReader(voc).image("2007_000001").astype(np.float32)
    np.testing.assert_allclose(net.blobs["data"].data[0, 0], image[:, :, 0] - 104.00698793, atol=1e-3)
    net.forward()
    assert net.blobs["label"].data.shape == (1, 1, 16, 16)


def test_fcn_data_layer_rejects_unknown_key(tmp_path):
    from helpers import run_python

    param = json.dumps(dict(dataset="voc", root="x", split="train", bogus=1))
    write(tmp_path / "net.prototxt", f"""
layer {{ name: "data" type: "Python" top: "data" top: "label"
  python_param {{ module: "python_layers.fcn_data" layer: "WholeImageDataLayer" param_str: '{param}' }} }}
""")
    result = run_python("import caffe; caffe.Net('net.prototxt', caffe.TRAIN)", cwd=tmp_path)
    assert result.returncode != 0
    assert "unknown param_str key 'bogus'" in result.stderr
