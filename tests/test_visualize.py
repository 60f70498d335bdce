"""Zeiler and Fergus's projections (deconvnet/net/projection.py,
deconvnet/visualize, tools/visualize.py) against an independent numpy
deconvnet of a tiny two-block net, the top-9 search against brute force,
and the tool's four figures."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from deconvnet.common.constants import MEAN_BGR
from deconvnet.net import nets
from deconvnet.net.architecture import Size
from deconvnet.net.projection import ProjectionError, descent, projection_net, receptive_field
from deconvnet.visualize.projector import Projector, to_input
from deconvnet.visualize.top9 import parse_units, peaks

from helpers import ROOT

SIDE, CHANNELS = 12, (3, 4, 4)

# --- an independent numpy deconvnet (ECCV 2014, section 2.1) ------------------------------------------------------


def np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    """Caffe's convolution (cross-correlation) of one (C, H, W) input."""
    c, h, wd = x.shape
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((w.shape[0], h + 2 * pad - k + 1, wd + 2 * pad - k + 1))
    for i in range(k):
        for j in range(k):
            out += np.einsum("oc,chw->ohw", w[:, :, i, j], xp[:, i:i + out.shape[1], j:j + out.shape[2]])
    return out + b[:, None, None]


def np_pool(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 stride-2 max pooling and its switches (the first maximum of each
    window in raster order), as (row, col) pairs."""
    c, h, w = x.shape
    windows = x.reshape(c, h // 2, 2, w // 2, 2).transpose(0, 1, 3, 2, 4).reshape(c, h // 2, w // 2, 4)
    first = windows.argmax(axis=3)
    return windows.max(axis=3), first


def np_unpool(values: np.ndarray, switches: np.ndarray) -> np.ndarray:
    c, h, w = values.shape
    out = np.zeros((c, 2 * h, 2 * w))
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                dy, dx = divmod(switches[ch, y, x], 2)
                out[ch, 2 * y + dy, 2 * x + dx] = values[ch, y, x]
    return out


def np_transposed(signal: np.ndarray, w: np.ndarray, pad: int, mistake: str = "") -> np.ndarray:
    """The convolution's transpose, written as a scatter: every output
    value spreads back over the input positions it was computed from.
    ``mistake`` "unflipped" gathers with the kernel as it is (a plain
    correlation), "untransposed" swaps the roles of the channel axes."""
    o, h, wd = signal.shape
    k = w.shape[2]
    if mistake == "unflipped":
        sp = np.pad(signal, ((0, 0), (k - 1 - pad,) * 2, (k - 1 - pad,) * 2))
        out = np.zeros((w.shape[1], h, wd))
        for i in range(k):
            for j in range(k):
                out += np.einsum("oc,ohw->chw", w[:, :, i, j], sp[:, i:i + h, j:j + wd])
        return out
    if mistake == "untransposed":
        w = w.transpose(1, 0, 2, 3)
    out = np.zeros((w.shape[1], h + 2 * pad, wd + 2 * pad))
    for i in range(k):
        for j in range(k):
            out[:, i:i + h, j:j + wd] += np.einsum("oc,ohw->chw", w[:, :, i, j], signal)
    return out[:, pad:pad + h, pad:pad + wd]


def np_project(image: np.ndarray, params: dict, unit: int, keep: str, start: str = "conv2",
               mistake: str = "") -> np.ndarray:
    """ZF's projection of one unit of conv2 (after its ReLU) or pool2."""
    a1 = np.maximum(np_conv(image, *params["conv1"], pad=1), 0)
    p1, s1 = np_pool(a1)
    a2 = np.maximum(np_conv(p1, *params["conv2"], pad=1), 0)
    p2, s2 = np_pool(a2)
    top = a2 if start == "conv2" else p2
    selected = np.zeros_like(top)
    if keep == "map":
        selected[unit] = top[unit]
    else:
        y, x = np.unravel_index(top[unit].argmax(), top[unit].shape)
        selected[unit, y, x] = top[unit, y, x]
    signal = selected if start == "conv2" else np.maximum(np_unpool(selected, s2), 0)
    signal = np_transposed(np.maximum(signal, 0), params["conv2"][0], 1, mistake)
    signal = np.maximum(np_unpool(signal, s1), 0)
    return np_transposed(signal, params["conv1"][0], 1)


# --- the tiny net in Caffe ------------------------------------------------------------------------------------------


def tiny_net(batch: int = 2):
    import caffe
    from caffe import layers as L
    from caffe import params as P

    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, CHANNELS[0], SIDE, SIDE]))
    bottom = n.data
    for k in (1, 2):
        conv = L.Convolution(bottom, convolution_param=dict(num_output=CHANNELS[k], kernel_size=3, pad=1))
        setattr(n, f"conv{k}", conv)
        setattr(n, f"relu{k}", L.ReLU(conv, in_place=True))
        pool, mask = L.Pooling(conv, ntop=2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        setattr(n, f"pool{k}", pool)
        setattr(n, f"pool{k}_mask", mask)
        bottom = pool
    return n.to_proto()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(prototxt, caffemodel, params) of the tiny net with random weights."""
    import caffe

    folder = tmp_path_factory.mktemp("tiny")
    model = folder / "tiny.prototxt"
    model.write_text(str(tiny_net()))
    net = caffe.Net(str(model), caffe.TEST)
    rng = np.random.default_rng(3)
    params = {}
    for name in ("conv1", "conv2"):
        w, b = (rng.normal(0, 1, blob.data.shape).astype(np.float32) for blob in net.params[name])
        net.params[name][0].data[...], net.params[name][1].data[...] = w, b * 0.3
        params[name] = (w.astype(np.float64), (b * 0.3).astype(np.float64))
    weights = folder / "tiny.caffemodel"
    net.save(str(weights))
    return model, weights, params


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, SIDE, SIDE, 3), dtype=np.uint8)


def _scale(reference: np.ndarray) -> float:
    return float(reference.max() - reference.min())


@pytest.mark.parametrize("start,keep", [("conv2", "max"), ("conv2", "map"), ("pool2", "max")])
def test_projection_matches_numpy(caffe, tiny, start, keep):
    model, weights, params = tiny
    projector = Projector(model, weights, start, keep)
    images = _images(2, seed=1)
    got = projector.project(to_input(images), [1, 3])
    for k, unit in enumerate((1, 3)):
        image = (images[k].astype(np.float64) - MEAN_BGR).transpose(2, 0, 1)
        want = np_project(image, params, unit, keep, start)
        assert np.abs(want).max() > 0
        assert np.abs(got[k] - want).max() <= 1e-5 * _scale(want)


@pytest.mark.parametrize("mistake", ["unflipped", "untransposed"])
def test_projection_test_catches_a_wrong_filter(caffe, tiny, mistake):
    """Negative: the same comparison rejects a projection through conv2's
    filter unflipped or untransposed."""
    model, weights, params = tiny
    got = Projector(model, weights, "conv2", "map").project(to_input(_images(1, seed=2)), [2])[0]
    image = (_images(1, seed=2)[0].astype(np.float64) - MEAN_BGR).transpose(2, 0, 1)
    right = np_project(image, params, 2, "map")
    wrong = np_project(image, params, 2, "map", mistake=mistake)
    assert np.abs(got - right).max() <= 1e-5 * _scale(right)
    assert np.abs(got - wrong).max() > 1e-2 * _scale(right)


def test_top9_matches_brute_force(caffe, tiny):
    """Every (image, position) value of conv2 from the numpy forward pass,
    sorted; walked greedily, one per image, the first 9 are the search's."""
    model, weights, params = tiny
    images = _images(14, seed=4)
    found = peaks(Projector(model, weights, "conv2"), images, batch=4).top(range(CHANNELS[2]))
    repeats = 0
    for unit in range(CHANNELS[2]):
        entries = []
        for i, image in enumerate(images):
            x = (image.astype(np.float64) - MEAN_BGR).transpose(2, 0, 1)
            p1, _ = np_pool(np.maximum(np_conv(x, *params["conv1"], pad=1), 0))
            a2 = np.maximum(np_conv(p1, *params["conv2"], pad=1), 0)[unit]
            entries += [(-a2[y, xx], i, y, xx) for y in range(a2.shape[0]) for xx in range(a2.shape[1])]
        entries.sort()
        brute, taken = [], set()
        for value, i, y, x in entries:
            if i not in taken:
                taken.add(i)
                brute.append((i, y, x, -value))
        brute = brute[:9]
        repeats += len({i for _, i, _, _ in entries[:9]}) < 9
        got = [(a.image, a.y, a.x, a.value) for a in found[unit]]
        assert [g[:3] for g in got] == [b[:3] for b in brute], unit
        np.testing.assert_allclose([g[3] for g in got], [b[3] for b in brute], rtol=1e-5)
    # The one-per-image rule is put to the test: for some unit the 9 largest values overall repeat an image.
    assert repeats


def test_projection_stays_in_the_receptive_field(caffe, tiny):
    model, weights, _ = tiny
    projector = Projector(model, weights, "pool2")
    images = _images(1, seed=5)
    features = projector.features(to_input(images))
    y, x = np.unravel_index(features[0, 0].argmax(), features.shape[2:])
    y0, x0, y1, x1 = projector.receptive_field(int(y), int(x))
    assert (y1 - y0, x1 - x0) == (10, 10)  # by hand, downwards: pool2 2, conv2 +2 = 4, pool1 x2 = 8, conv1 +2 = 10
    support = np.argwhere(np.abs(projector.project(to_input(images), [0])[0]).sum(axis=0) > 0)
    assert support.size
    assert support[:, 0].min() >= y0 and support[:, 0].max() < y1
    assert support[:, 1].min() >= x0 and support[:, 1].max() < x1


def test_vgg16_receptive_fields_by_hand():
    """VGG16's well-known receptive fields: conv5_3 196 px, pool5 212 px,
    conv1_1 3 px; position (1, 1) of conv5_3 is 16 px (its stride) on."""
    deploy = nets.deconvnet_deploy()
    for layer, side in (("conv1_1", 3), ("pool1", 6), ("conv5_3", 196), ("pool5", 212)):
        y0, x0, y1, x1 = receptive_field(descent(deploy, layer), 0, 0)
        assert (y1 - y0, x1 - x0) == (side, side), layer
    assert receptive_field(descent(deploy, "conv5_3"), 1, 1)[0] - receptive_field(descent(deploy, "conv5_3"), 0, 0)[0] \
        == 16


@pytest.mark.parametrize("folded,layer,named", [(False, "deconv5_1", "Deconvolution layer 'deconv5_1'"),
                                                (False, "seg_score", "Deconvolution layer 'deconv1_2'"),
                                                (True, "seg_score", "Unpooling layer 'unpool1'"),
                                                (True, "fc7", "InnerProduct layer 'fc7'")])
def test_layers_above_the_encoder_are_refused(folded, layer, named):
    with pytest.raises(ProjectionError, match=named):
        projection_net(nets.deconvnet_deploy(size=Size(64, 8), folded=folded), layer)


def test_projection_nets_of_fcn8s_and_deeplab_run(caffe, tmp_path):
    """Any of our forward nets: FCN-8s (pad 100, ceil-mode pools without
    switch tops) and DeepLab-LargeFOV (overlapping pools, dilation) give a
    projection of the input's shape, inside the unit's receptive field."""
    for name, forward, layer in (("fcn8s", nets.fcn8s_deploy(Size(64, 8)), "conv4_3"),
                                 ("deeplab", nets.deeplab_deploy(Size(65, 8)), "conv5_3")):
        path = tmp_path / f"{name}.prototxt"
        path.write_text(str(projection_net(forward, layer)))
        net = caffe.Net(str(path), caffe.TEST)
        rng = np.random.default_rng(0)
        for blobs in net.params.values():
            for blob in blobs:
                blob.data[...] = rng.normal(0, 0.1, blob.data.shape)
        net.blobs["data"].data[...] = rng.normal(0, 50, net.blobs["data"].data.shape)
        net.blobs["units"].data[...] = 0
        out = net.forward()["projection"][0]
        assert out.shape == net.blobs["data"].data.shape[1:], name
        support = np.argwhere(np.abs(out).sum(axis=0) > 0)
        assert support.size, name
        features = net.blobs[layer].data[0, 0]
        y, x = np.unravel_index(features.argmax(), features.shape)
        y0, x0, y1, x1 = receptive_field(descent(forward, layer), int(y), int(x))
        assert y0 <= support[:, 0].min() and support[:, 0].max() < y1, name
        assert x0 <= support[:, 1].min() and support[:, 1].max() < x1, name


def test_units_are_parsed():
    assert parse_units("0,3-5,3", None, 8) == [0, 3, 4, 5]
    assert parse_units("all", None, 3) == [0, 1, 2]
    for bad in ("9", "a", "1-x"):
        with pytest.raises(ValueError):
            parse_units(bad, None, 8)


# --- the tool ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reduced(tmp_path_factory, caffe):
    """A reduced DeconvNet deploy (BatchNorm included) with random weights
    and usable statistics, and a demo-like run folder of synthetic images."""
    from helpers import synthetic_roots

    folder = tmp_path_factory.mktemp("reduced")
    model = folder / "deploy.prototxt"
    model.write_text(str(nets.deconvnet_deploy(batch=1, size=Size(64, 8))))
    net = caffe.Net(str(model), caffe.TEST)
    rng = np.random.default_rng(0)
    snapshots = folder / "snapshots"
    snapshots.mkdir()
    for iteration in (20, 100, 5):
        for name, blobs in net.params.items():
            if name.endswith("_bn"):
                blobs[0].data[...], blobs[1].data[...], blobs[2].data[...] = 0, 1, 1
            elif name.endswith("_scale"):
                blobs[0].data[...], blobs[1].data[...] = 1, 0
            else:
                blobs[0].data[...] = rng.normal(0, np.sqrt(2 / np.prod(blobs[0].data.shape[1:])), blobs[0].data.shape)
        net.save(str(snapshots / f"deconvnet_iter_{iteration}.caffemodel"))
    synthetic_roots(folder / "run" / "data" / "synthetic", 40, seed=0)
    return model, snapshots / "deconvnet_iter_100.caffemodel", folder


def _tool(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "visualize.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def _picture(path, min_side: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    picture = cv2.imread(str(path))
    assert picture is not None, path
    assert min(picture.shape[:2]) >= min_side, picture.shape
    assert shape is None or picture.shape[:2] == shape
    assert picture.std() > 5, f"{path} is blank"
    return picture


def test_tool_top9_filters_occlusion_evolution(reduced, tmp_path):
    model, weights, folder = reduced
    run = folder / "run"
    done = _tool("top9", "--model", model, "--weights", weights, "--images", f"demo:{run}", "--units", "0,2",
                 "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "top9_conv5_3.json").read_text())
    val = (run / "data/synthetic/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text().split()
    assert sorted(record["units"]) == ["0", "2"] and record["image_count"] == len(val)
    for entries in record["units"].values():
        assert len(entries) == min(9, len(val)) and {e["image"] for e in entries} <= set(val)
        assert [e["value"] for e in entries] == sorted((e["value"] for e in entries), reverse=True)
    # One row of two units, each a label over 3 x 3 projections and 3 x 3 patches of 64 px, 2 px apart.
    grid = 3 * 64 + 2 * 2
    _picture(tmp_path / "top9_conv5_3.png", grid, (16 + grid, 2 * (2 * grid + 6) + 12))

    done = _tool("filters", "--model", model, "--weights", weights, "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "filters_conv1_1.json").read_text())["shape"] == [8, 3, 3, 3]
    _picture(tmp_path / "filters_conv1_1.png", 32)

    image = run / "data/synthetic/VOCdevkit/VOC2012/JPEGImages" / f"{val[0]}.jpg"
    done = _tool("occlusion", "--model", model, "--weights", weights, "--image", image, "--class", "1",
                 "--square", "32", "--stride", "32", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / f"occlusion_{val[0]}_aeroplane.json").read_text())
    h, w = cv2.imread(str(image)).shape[:2]
    assert np.array(record["class_score"]).shape == (len(range(16, h, 32)), len(range(16, w, 32)))
    assert np.isfinite(record["activity"]).all()
    _picture(tmp_path / f"occlusion_{val[0]}_aeroplane.png", 100)

    done = _tool("evolution", "--model", model, "--snapshots", weights.parent, "--images", f"demo:{run}",
                 "--units", "0-1", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "evolution_conv5_3.json").read_text())
    assert [s["iteration"] for s in record["snapshots"]] == [5, 20, 100]
    _picture(tmp_path / "evolution_conv5_3.png", 2 * 64)


def test_occlusion_heat_maps_by_hand(reduced, tmp_path):
    """The class score at each square position equals a forward pass of the
    image with the square painted by hand, through a plain caffe.Net."""
    from deconvnet.infer.aggregation import softmax
    from deconvnet.visualize.occlusion import OcclusionProbe, occlusion

    import caffe as caffe_module

    model, weights, _ = reduced
    image = np.random.default_rng(7).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    result = occlusion(OcclusionProbe(model, weights, "conv4_3"), image, cls=3, square=20, stride=40)
    assert result.centres_y == [20, 60] and result.centres_x == [20, 60]
    net = caffe_module.Net(str(model), str(weights), caffe_module.TEST)
    for i, cy in enumerate(result.centres_y):
        for j, cx in enumerate(result.centres_x):
            painted = image.copy()
            painted[cy - 10:cy + 10, cx - 10:cx + 10] = np.round(MEAN_BGR).astype(np.uint8)
            net.blobs["data"].data[0] = to_input(cv2.resize(painted, (64, 64))[None])[0]
            net.forward()
            want = softmax(net.blobs["seg_score"].data[0])[3].mean()
            assert abs(result.class_score[i, j] - want) < 1e-5
            assert abs(result.activity[i, j] - net.blobs["conv4_3"].data[0, result.unit].sum()) \
                <= 1e-4 * max(1.0, abs(result.activity[i, j]))


def test_tool_refuses_a_decoder_layer(reduced, tmp_path):
    model, weights, _ = reduced
    done = _tool("filters", "--model", model, "--weights", weights, "--layer", "deconv2_1", "--out", tmp_path)
    assert done.returncode == 2
    assert "Deconvolution layer 'deconv2_1'" in done.stderr and "conv5_3" in done.stderr
    done = _tool("filters", "--model", model, "--weights", weights, "--layer", "conv2_1", "--out", tmp_path)
    assert done.returncode == 2 and "reads 8 channels" in done.stderr
