"""DeepLab-LargeFOV: the net's geometry and size against hand counts, its
upsampling against numpy interpolation, its receptive field measured
through Caffe, the surgery against a numpy subsampling of a random VGG16,
its whole-image crops, its solver and its CRF settings."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

from helpers import ROOT, synthetic_roots, write

PROTOTXT = ROOT / "prototxt"
VGG_CONVS = [(f"conv{s}_{k}", cin if k == 1 else c, c)
             for s, n, c, cin in ((1, 2, 64, 3), (2, 2, 128, 64), (3, 3, 256, 128), (4, 3, 512, 256),
                                  (5, 3, 512, 512))
             for k in range(1, n + 1)]


def _averaging_weights(net) -> None:
    """Every weight 1 / fan-in, every bias 0: positive, so a bright pixel
    stays positive wherever it reaches."""
    for params in net.params.values():
        params[0].data[...] = 1.0 / int(np.prod(params[0].data.shape[1:]))
        for p in params[1:]:
            p.data[...] = 0


def _reduced_deploy(caffe, folder, divisor: int = 16):
    from deconvnet.net import nets
    from deconvnet.net.architecture import Size
    from deconvnet.net.surgery import bilinear_upsampling

    path = write(folder / f"deeplab_w{divisor}.prototxt", str(nets.deeplab_deploy(Size(321, divisor))))
    net = caffe.Net(str(path), caffe.TEST)
    bilinear_upsampling(net, (nets.DEEPLAB_UPSAMPLE,))
    return net


def _forward(net, image: np.ndarray) -> None:
    net.blobs["data"].reshape(1, *image.shape)
    net.reshape()
    net.blobs["data"].data[0] = image
    net.forward()


# --- the full-size net against hand counts ----------------------------------------------------

def test_full_size_blob_shapes_and_parameter_count(caffe):
    """DeepLab's Table 2 gives LargeFOV 20.5M parameters; by hand: VGG16's 13
    convolutions, fc6 3x3x512x1024, fc7 1024x1024, fc8 1024x21, plus the
    fixed 21x21x15x15 upsampling."""
    net = caffe.Net(str(PROTOTXT / "deeplab_largefov_deploy.prototxt"), caffe.TEST)
    net.blobs["data"].reshape(1, 3, 321, 321)
    net.reshape()
    shapes = {name: blob.data.shape for name, blob in net.blobs.items()}
    # 321 -> 161 -> 81 -> 41 (3x3 pooling, stride 2, padding 1), then stride 1.
    assert shapes["conv1_2"] == (1, 64, 321, 321)
    assert shapes["pool1"] == (1, 64, 161, 161)
    assert shapes["pool2"] == (1, 128, 81, 81)
    assert shapes["pool3"] == (1, 256, 41, 41)
    assert shapes["pool4"] == (1, 512, 41, 41)
    assert shapes["conv5_3"] == (1, 512, 41, 41)
    assert shapes["pool5"] == (1, 512, 41, 41)
    assert shapes["fc6"] == (1, 1024, 41, 41)
    assert shapes["fc7"] == (1, 1024, 41, 41)
    assert shapes["fc8_voc12"] == (1, 21, 41, 41)
    assert shapes["fc8_interp"] == (1, 21, 321, 321)
    assert shapes["score"] == (1, 21, 321, 321)

    by_hand = sum(9 * cin * cout + cout for _, cin, cout in VGG_CONVS)
    assert by_hand == 14_714_688  # VGG16's convolutions, the published figure
    by_hand += 9 * 512 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 21 + 21
    learned = sum(p.data.size for name, params in net.params.items() if name != "fc8_interp" for p in params)
    assert learned == by_hand == 20_505_429
    assert round(learned / 1e6, 1) == 20.5
    assert net.params["fc8_interp"][0].data.shape == (21, 21, 15, 15)
    assert len(net.params["fc8_interp"]) == 1  # no bias
    assert net.params["fc6"][0].data.shape == (1024, 512, 3, 3)


def test_dilations_and_pooling_as_the_release(caffe):
    net = caffe.proto.caffe_pb2.NetParameter()
    text_format.Merge((PROTOTXT / "deeplab_largefov_deploy.prototxt").read_text(), net)
    layers = {layer.name: layer for layer in net.layer}
    for name in ("conv5_1", "conv5_2", "conv5_3"):
        assert list(layers[name].convolution_param.dilation) == [2]
        assert list(layers[name].convolution_param.pad) == [2]
    assert list(layers["fc6"].convolution_param.dilation) == [12]
    assert list(layers["fc6"].convolution_param.pad) == [12]
    assert not layers["conv4_3"].convolution_param.dilation
    for k, stride in ((1, 2), (2, 2), (3, 2), (4, 1), (5, 1)):
        pool = layers[f"pool{k}"].pooling_param
        assert (pool.kernel_size, pool.stride, pool.pad) == (3, stride, 1)
    assert layers["drop6"].dropout_param.dropout_ratio == pytest.approx(0.5)
    assert layers["fc8_interp"].param[0].lr_mult == 0


# --- output stride 8: the upsampling against numpy --------------------------------------------

def _align_corners_upsample(cells: np.ndarray, height: int, width: int, stride: int = 8) -> np.ndarray:
    """Linear interpolation with cell i on pixel stride x i, written with np.interp."""
    c, h, w = cells.shape
    ys, xs = np.arange(height), np.arange(width)
    rows = np.stack([[np.interp(ys, stride * np.arange(h), cells[k, :, j]) for j in range(w)]
                     for k in range(c)])                      # (c, w, height)
    out = np.stack([[np.interp(xs, stride * np.arange(w), rows[k, :, y]) for y in range(height)]
                    for k in range(c)])                       # (c, height, width)
    return out


def _pooled_three_times(side: int) -> int:
    """Caffe's ceil-mode output side of a 3x3, stride-2, pad-1 pooling: ceil((n - 1) / 2) + 1."""
    for _ in range(3):
        side = -(-(side - 1) // 2) + 1
    return side


@pytest.mark.parametrize("height,width", [(97, 97), (75, 100), (64, 57)])
def test_scores_are_the_fc8_cells_interpolated_at_stride_8(caffe, tmp_path, height, width):
    net = _reduced_deploy(caffe, tmp_path)
    _random_weights_except_upsampling(net)
    image = np.random.default_rng(height).normal(0, 50, (3, height, width)).astype(np.float32)
    _forward(net, image)
    cells = net.blobs["fc8_voc12"].data[0]
    assert cells.shape[1:] == (_pooled_three_times(height), _pooled_three_times(width))
    score = net.blobs["score"].data[0]
    assert score.shape == (21, height, width)
    want = _align_corners_upsample(cells, height, width)
    np.testing.assert_allclose(score, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # Negative: half a cell off is not the same interpolation.
    shifted = _align_corners_upsample(cells, height + 4, width + 4)[:, 4:, 4:]
    assert np.abs(score - shifted).max() > 1e-2 * np.abs(want).max()


def _random_weights_except_upsampling(net) -> None:
    rng = np.random.default_rng(0)
    for name, params in net.params.items():
        if name != "fc8_interp":
            for p in params:
                p.data[...] = rng.normal(0, np.sqrt(2.0 / max(1, np.prod(p.data.shape[1:]))), p.data.shape)


def test_receptive_field_is_419_pixels_measured_through_caffe(caffe, tmp_path):
    """By hand: 3x3 convolutions add 2 x jump, 3x3 pools 2 x jump, conv5's
    dilation-2 3x3s 4 x 8, fc6's dilation-12 3x3 24 x 8: 419. Measured: with
    positive averaging weights and a zero image, one bright pixel reaches
    fc8 cell i exactly when it lies within 209 pixels of 8i."""
    net = _reduced_deploy(caffe, tmp_path)
    _averaging_weights(net)
    side, cell = 513, 32                       # cell 32 sits on pixel 256
    centre = 8 * cell

    def reaches(dy: int, dx: int) -> bool:
        image = np.zeros((3, side, side), np.float32)
        image[:, centre + dy, centre + dx] = 1e6
        _forward(net, image)
        return bool(net.blobs["fc8_voc12"].data[0, :, cell, cell].max() > 0)

    for d in (209, -209):
        assert reaches(d, 0) and reaches(0, d)
    for d in (210, -210):
        assert not reaches(d, 0) and not reaches(0, d)


# --- surgery from VGG16 against numpy ---------------------------------------------------------

@pytest.fixture(scope="module")
def surgery(caffe, tmp_path_factory):
    """A width/4 VGG16 (224 input, so fc6 spans 7x7) with random weights and
    the DeepLab-LargeFOV of the same width made from it by the tool."""
    from deconvnet.net import nets
    from deconvnet.net.architecture import Size

    folder = tmp_path_factory.mktemp("deeplab_surgery")
    vgg_proto = write(folder / "vgg.prototxt", str(nets.vgg16_deploy(Size(224, 4))))
    vgg = caffe.Net(str(vgg_proto), caffe.TEST)
    rng = np.random.default_rng(3)
    for params in vgg.params.values():
        for p in params:
            p.data[...] = rng.standard_normal(p.data.shape, dtype=np.float32)
    vgg_model = folder / "vgg.caffemodel"
    vgg.save(str(vgg_model))
    weights = {name: [p.data.copy() for p in params] for name, params in vgg.params.items()}
    target = write(folder / "deeplab.prototxt", str(nets.deeplab_deploy(Size(321, 4))))

    def init(out, *extra):
        return subprocess.run([sys.executable, str(ROOT / "tools" / "init_weights.py"), "deeplab-largefov",
                               "--vgg-model", vgg_model, "--vgg-prototxt", vgg_proto, "--target", target,
                               "--out", out, *extra], capture_output=True, text=True, timeout=600)
    return dict(folder=folder, weights=weights, target=target, init=init, vgg_model=vgg_model)


def test_surgery_subsamples_fc6_and_fc7_as_numpy_does(caffe, surgery):
    out = surgery["folder"] / "init.caffemodel"
    result = surgery["init"](out)
    assert result.returncode == 0, result.stderr[-2000:]
    net = caffe.Net(str(surgery["target"]), str(out), caffe.TEST)
    vgg = surgery["weights"]
    for name, _, _ in VGG_CONVS:
        for got, want in zip(net.params[name], vgg[name], strict=True):
            np.testing.assert_array_equal(got.data, want)
    # fc6: VGG's (1024, 128*7*7) InnerProduct as (1024, 128, 7, 7); filters 0, 4, 8, ...; taps 0, 3, 6.
    w6 = vgg["fc6"][0].reshape(1024, 128, 7, 7)
    filters, taps = np.arange(0, 1024, 4), np.array([0, 3, 6])
    want6 = w6[np.ix_(filters, np.arange(128), taps, taps)]
    np.testing.assert_array_equal(net.params["fc6"][0].data, want6)
    np.testing.assert_array_equal(net.params["fc6"][1].data, vgg["fc6"][1][filters])
    want7 = vgg["fc7"][0][np.ix_(filters, filters)].reshape(256, 256, 1, 1)
    np.testing.assert_array_equal(net.params["fc7"][0].data, want7)
    np.testing.assert_array_equal(net.params["fc7"][1].data, vgg["fc7"][1][filters])
    # Negative: the first 256 filters (no stride) are not what was taken.
    assert not np.array_equal(net.params["fc7"][1].data, vgg["fc7"][1][:256])
    # fc8 as the DeepLab authors: Gaussian, std 0.01, zero biases.
    fc8 = net.params["fc8_voc12"]
    assert fc8[0].data.shape == (21, 256, 1, 1)
    assert 0.008 < fc8[0].data.std() < 0.012 and abs(fc8[0].data.mean()) < 0.002
    assert not fc8[1].data.any()
    # The fixed upsampling: per class, the 15x15 outer product of 1/8, 2/8, ..., 1, ..., 1/8.
    ramp = np.array([1, 2, 3, 4, 5, 6, 7, 8, 7, 6, 5, 4, 3, 2, 1]) / 8
    up = net.params["fc8_interp"][0].data
    for k in range(21):
        np.testing.assert_allclose(up[k, k], np.outer(ramp, ramp), rtol=1e-6)
    assert not up[0, 1].any()


def test_surgery_refuses_a_vgg16_whose_fc6_is_not_7x7(caffe, surgery):
    from deconvnet.net import nets
    from deconvnet.net.architecture import Size

    folder = surgery["folder"]
    small = write(folder / "vgg64.prototxt", str(nets.vgg16_deploy(Size(64, 4))))
    vgg = caffe.Net(str(small), caffe.TEST)
    model = folder / "vgg64.caffemodel"
    vgg.save(str(model))
    out = folder / "refused.caffemodel"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "init_weights.py"), "deeplab-largefov",
                             "--vgg-model", model, "--vgg-prototxt", small, "--target", surgery["target"],
                             "--out", out], capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    assert "fc6" in result.stderr and "wrong shapes" in result.stderr
    assert not out.exists()


# --- whole-image crops --------------------------------------------------------------------------

def test_small_images_are_padded_with_the_mean_and_void():
    from deconvnet.data.image_crops import pad_and_crop

    image = np.full((5, 7, 3), 200, np.uint8)
    label = np.arange(35, dtype=np.uint8).reshape(5, 7) % 21
    mean = np.array([100.0, 110.0, 120.0], np.float32)
    data, lab = pad_and_crop(image, label, 9, mean)
    assert data.shape == (3, 9, 9) and lab.shape == (9, 9)
    np.testing.assert_array_equal(data[:, :5, :7], (200 - mean)[:, None, None] * np.ones((3, 5, 7)))
    assert not data[:, 5:].any() and not data[:, :, 7:].any()
    np.testing.assert_array_equal(lab[:5, :7], label)
    assert (lab[5:] == 255).all() and (lab[:, 7:] == 255).all()
    with pytest.raises(ValueError, match="differ in size"):
        pad_and_crop(image, label[:4], 9, mean)


def test_random_crops_stay_in_the_image_and_flip_image_and_label_together():
    from deconvnet.data.image_crops import pad_and_crop

    rng = np.random.default_rng(0)
    h, w = 40, 60
    ys, xs = np.mgrid[:h, :w]
    image = np.stack([ys, xs, np.zeros_like(ys)], axis=2).astype(np.uint8)
    label = (xs % 21).astype(np.uint8)
    seen_x, flips = set(), 0
    for _ in range(200):
        data, lab = pad_and_crop(image, label, 32, np.zeros(3, np.float32), rng, mirror=True)
        rows, cols = data[0], data[1]
        assert (np.diff(rows[:, 0]) == 1).all()          # whole rows, top to bottom
        step = np.diff(cols[0])
        assert (step == 1).all() or (step == -1).all()   # whole columns, maybe mirrored
        flips += int(step[0] == -1)
        np.testing.assert_array_equal(lab, cols % 21)    # the label followed the image
        seen_x.add(int(cols[0].min()))
        assert 0 <= rows.min() and rows.max() < h and cols.max() < w
    assert 60 < flips < 140
    assert seen_x == set(range(w - 32 + 1))


def test_the_data_layer_reads_train_aug_in_batches(caffe, tmp_path):
    from dataclasses import replace

    from deconvnet.common.recipes import DEEPLAB_LARGEFOV
    from deconvnet.data.image_sets import ImageSource
    from deconvnet.net import nets
    from deconvnet.net.architecture import Size

    voc, sbd = synthetic_roots(tmp_path / "data", num_images=12, seed=4)
    recipe = replace(DEEPLAB_LARGEFOV, crop_size=65, batch_per_pass=4, batch_size=8)
    proto = write(tmp_path / "train.prototxt",
                  str(nets.deeplab_train_val(True, str(voc), str(sbd), recipe, size=Size(65, 16))))
    net = caffe.Net(str(proto), caffe.TRAIN)
    assert net.blobs["data"].data.shape == (4, 3, 65, 65)
    assert net.blobs["score"].data.shape == (4, 21, 65, 65)
    train_aug = ImageSource(voc, sbd).resolve("union-minus-voc-val")
    assert len(train_aug) > 4
    labels = set()
    for _ in range(3):
        net.forward()
        labels |= set(np.unique(net.blobs["label"].data).tolist())
        assert np.isfinite(net.blobs["loss"].data).all()
    assert labels <= set(range(21)) | {255.0} and len(labels) > 2


# --- the recipe in the committed files ----------------------------------------------------------

def test_committed_solver_and_train_net_follow_the_release(caffe):
    solver = caffe.proto.caffe_pb2.SolverParameter()
    text_format.Merge((PROTOTXT / "deeplab_largefov_solver.prototxt").read_text(), solver)
    assert (solver.base_lr, solver.lr_policy, solver.gamma, solver.stepsize, solver.max_iter) == \
        (pytest.approx(0.001), "step", pytest.approx(0.1), 2000, 6000)
    assert (solver.momentum, solver.weight_decay) == (pytest.approx(0.9), pytest.approx(0.0005))
    train = caffe.proto.caffe_pb2.NetParameter()
    text_format.Merge((PROTOTXT / "deeplab_largefov_train.prototxt").read_text(), train)
    layers = {layer.name: layer for layer in train.layer}
    data = json.loads(layers["data"].python_param.param_str)
    # 20 images per update: the batch per pass times iter_size.
    assert data["batch_size"] * solver.iter_size == 20
    assert (data["crop_size"], data["random_crop"], data["mirror"]) == (321, True, True)
    assert data["image_set"] == "union-minus-voc-val"
    assert [(p.lr_mult, p.decay_mult) for p in layers["fc8_voc12"].param] == [(10, 1), (20, 0)]
    assert [(p.lr_mult, p.decay_mult) for p in layers["fc6"].param] == [(1, 1), (2, 0)]
    assert layers["loss"].loss_param.ignore_label == 255


def test_deeplab_crf_settings_are_the_authors():
    from deconvnet.infer.crf import DECONVNET_CRF, DEEPLAB_LARGEFOV_CRF, MODEL_CRF

    p = DEEPLAB_LARGEFOV_CRF
    assert (p.bilateral_compat, p.bilateral_sxy, p.bilateral_srgb) == (4, 121, 5)
    assert (p.gaussian_compat, p.gaussian_sxy, p.iterations) == (3, 3, 10)
    assert MODEL_CRF["deeplab-largefov"] is p and MODEL_CRF["deconvnet"] is DECONVNET_CRF
    assert DECONVNET_CRF != p


# --- training with tools/train_deeplab.py ---------------------------------------------------------

def test_train_deeplab_trains_validates_and_snapshots(caffe, tmp_path):
    """The tool over DeconvNet's trainer (its resume is tested in test_training.py)."""
    from dataclasses import replace

    from deconvnet.common.recipes import DEEPLAB_LARGEFOV
    from deconvnet.net import nets
    from deconvnet.net.architecture import Size
    from deconvnet.net.prototxt import write_reduced_peer

    voc, sbd = synthetic_roots(tmp_path / "data", num_images=12, seed=5)
    size = Size(65, 16)
    recipe = replace(DEEPLAB_LARGEFOV, batch_size=4, batch_per_pass=2, max_iter=4, stepsize=2, base_lr=1e-3)
    solver = write_reduced_peer(tmp_path / "nets", "deeplab-largefov", voc, sbd, size, test_size=257, recipe=recipe)
    vgg_proto = write(tmp_path / "vgg.prototxt", str(nets.vgg16_deploy(Size(224, 16))))
    vgg = caffe.Net(str(vgg_proto), caffe.TEST)
    rng = np.random.default_rng(0)
    for params in vgg.params.values():
        params[0].data[...] = rng.normal(0, np.sqrt(2 / np.prod(params[0].data.shape[1:])), params[0].data.shape)
    vgg.save(str(tmp_path / "vgg.caffemodel"))
    target = write(tmp_path / "deploy.prototxt", str(nets.deeplab_deploy(size)))
    init = tmp_path / "init.caffemodel"
    made = subprocess.run([sys.executable, str(ROOT / "tools" / "init_weights.py"), "deeplab-largefov",
                           "--vgg-model", tmp_path / "vgg.caffemodel", "--vgg-prototxt", vgg_proto,
                           "--target", target, "--out", init], capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-2000:]
    tool = [sys.executable, str(ROOT / "tools" / "train_deeplab.py"), "--solver", solver, "--weights", init,
            "--run-dir", tmp_path / "run", "--val-interval", "2", "--val-batches", "2"]
    first = subprocess.run([*tool, "--max-iter", "2"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    val = [r for r in records if r["event"] == "val"]
    assert [r["iter"] for r in val] == [2]
    # Whole val images (up to 256 pixels, padded to 257) hold objects: an untrained net misses them.
    assert 0 < val[0]["val_miou"] < 0.9
    assert (tmp_path / "run" / "snapshot_iter_2.caffemodel").is_file()
    # The solver's iter_size (2 passes of 2) reached the run's solver unchanged.
    run_solver = (tmp_path / "run" / "solver.prototxt").read_text()
    assert "iter_size: 2" in run_solver and "lr_policy: \"step\"" in run_solver
    final = first.stdout.strip().splitlines()[-1]
    assert final.endswith("snapshot_iter_2.caffemodel")
    again = subprocess.run(tool, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already finished" in again.stderr
    assert again.stdout.strip() == final
    # A GPU count that does not divide iter_size 2 is refused before anything starts.
    refused = subprocess.run([*tool, "--gpus", "0,1,2", "--run-dir", tmp_path / "run3"], capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode == 2 and "iter_size" in refused.stderr
    assert not (tmp_path / "run3").exists()
