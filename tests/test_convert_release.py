"""tools/convert_release.py: the authors' released DeconvNet weights (their
fork's V1 format, BN and UNPOOLING layers) and the 2014 FCN-8s (CROP layers)
into our nets.

The released files are stand-ins written by deconvnet.net.stand_in_weights
straight from the formats' field numbers. The reference is a numpy forward
pass of the fork's semantics written here, reading the stand-in through
protobuf's own parser (caffe_pb2), not through the converter's reader:
convolution, BN as scale * x + shift, ReLU, 2x2 max pooling whose switch
is the first maximum in scan order, unpooling by those switches, and
deconvolution by its definition (each input value scatters its kernel)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from helpers import ROOT, write

SIZE = (64, 8)          # input side, channel divisor of the reduced nets
TOLERANCE = 1e-4        # of the reference scores' range


def convert_tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "convert_release.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def files(caffe, tmp_path_factory):
    """Reduced deploy nets (unfolded, folded), the release's two DeconvNet
    files as stand-ins, and both conversions of the inference model."""
    from deconvnet.net import nets
    from deconvnet.net.architecture import Size
    from deconvnet.net.stand_in_weights import deconvnet_release_layers, write_v1_caffemodel

    root = tmp_path_factory.mktemp("release")
    size = Size(*SIZE)
    paths = dict(
        deploy=write(root / "deploy.prototxt", str(nets.deconvnet_deploy(size=size))),
        folded=write(root / "folded.prototxt", str(nets.deconvnet_deploy(size=size, folded=True))),
        inference=write_v1_caffemodel(root / "DeconvNet_trainval_inference.caffemodel", "DeconvNet",
                                      deconvnet_release_layers(size), seed=3),
        snapshot=write_v1_caffemodel(root / "stage_2_train_result.caffemodel", "stage_2_train",
                                     deconvnet_release_layers(size, snapshot=True), seed=4),
    )
    paths["unfolded_out"] = root / "converted.caffemodel"
    paths["folded_out"] = root / "converted_folded.caffemodel"
    done = convert_tool("deconvnet", paths["inference"], paths["unfolded_out"], "--model", paths["deploy"])
    assert done.returncode == 0, done.stderr
    done = convert_tool("deconvnet", paths["inference"], paths["folded_out"], "--model", paths["deploy"],
                        "--folded", "--folded-model", paths["folded"])
    assert done.returncode == 0, done.stderr
    return paths


# --- the fork's semantics in numpy --------------------------------------------------------------

def release_arrays(path: Path) -> dict[str, list[np.ndarray]]:
    """Layer -> blobs as (num, channels, height, width) float64 arrays, by
    protobuf's parser."""
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    net.ParseFromString(Path(path).read_bytes())
    return {layer.name: [np.array(b.data, np.float64).reshape(b.num, b.channels, b.height, b.width)
                         for b in layer.blobs] for layer in net.layers if len(layer.blobs)}


def conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, pad: int) -> np.ndarray:
    """x (C, H, W), weight (O, C, k, k): cross-correlation, stride 1."""
    k = weight.shape[-1]
    windows = sliding_window_view(np.pad(x, ((0, 0), (pad, pad), (pad, pad))), (k, k), axis=(1, 2))
    return np.einsum("chwij,ocij->ohw", windows, weight) + bias.reshape(-1, 1, 1)


def deconv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, pad: int) -> np.ndarray:
    """x (C_in, H, W), weight (C_in, C_out, k, k), stride 1: every input
    value adds its kernel, scaled, to the output around it."""
    c_in, c_out, k, _ = weight.shape
    h, w = x.shape[1:]
    out = np.zeros((c_out, h + k - 1, w + k - 1))
    for a in range(k):
        for b in range(k):
            out[:, a:a + h, b:b + w] += np.einsum("chw,co->ohw", x, weight[:, :, a, b])
    return out[:, pad:out.shape[1] - pad, pad:out.shape[2] - pad] + bias.reshape(-1, 1, 1)


def max_pool(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2, stride 2: the maxima and each window's switch (0..3 in scan
    order, the first of equal maxima)."""
    c, h, w = x.shape
    windows = x.reshape(c, h // 2, 2, w // 2, 2).transpose(0, 1, 3, 2, 4).reshape(c, h // 2, w // 2, 4)
    switch = windows.argmax(axis=-1)
    return np.take_along_axis(windows, switch[..., None], -1)[..., 0], switch


def unpool(x: np.ndarray, switch: np.ndarray) -> np.ndarray:
    c, h, w = x.shape
    out = np.zeros((c, h, 2, w, 2))
    ci, hi, wi = np.indices(x.shape)
    out[ci, hi, switch // 2, wi, switch % 2] = x
    return out.reshape(c, 2 * h, 2 * w)


def fork_forward(blobs: dict[str, list[np.ndarray]], image: np.ndarray) -> np.ndarray:
    """The release's DeconvNet on one (3, S, S) image: seg-score."""
    def conv_bn_relu(x, name, bn, deconvolve=False, pad=1):
        weight, bias = blobs[name]
        x = (deconv if deconvolve else conv)(x, weight, bias.ravel(), pad)
        scale, shift = (b.reshape(-1, 1, 1) for b in blobs[bn])
        return np.maximum(scale * x + shift, 0)

    x, switches = image.astype(np.float64), {}
    for stage, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
        for k in range(1, convs + 1):
            x = conv_bn_relu(x, f"conv{stage}_{k}", f"bn{stage}_{k}")
        x, switches[stage] = max_pool(x)
    x = conv_bn_relu(x, "fc6", "bnfc6", pad=0)
    x = conv_bn_relu(x, "fc7", "bnfc7", pad=0)
    x = conv_bn_relu(x, "fc6-deconv", "fc6-deconv-bn", deconvolve=True, pad=0)
    for stage, convs in ((5, 3), (4, 3), (3, 3), (2, 2), (1, 2)):
        x = unpool(x, switches[stage])
        for k in range(1, convs + 1):
            x = conv_bn_relu(x, f"deconv{stage}_{k}", f"debn{stage}_{k}", deconvolve=True)
    weight, bias = blobs["seg-score-voc"]
    return conv(x, weight, bias.ravel(), 0)


def caffe_scores(net, image: np.ndarray) -> np.ndarray:
    net.blobs["data"].data[...] = image
    net.forward()
    return net.blobs["seg_score"].data[0].astype(np.float64)


def disagreement(scores: np.ndarray, reference: np.ndarray) -> float:
    """Largest difference as a fraction of the reference's range."""
    return float(np.abs(scores - reference).max() / np.ptp(reference))


@pytest.fixture(scope="module")
def reference(files):
    image = np.random.default_rng(0).normal(0, 60, (3, SIZE[0], SIZE[0])).astype(np.float32)
    scores = fork_forward(release_arrays(files["inference"]), image)
    assert np.ptp(scores) > 1 and np.isfinite(scores).all()
    return image, scores


# --- agreement with the fork, and the test's power ----------------------------------------------

@pytest.mark.parametrize("which", ["unfolded", "folded"])
def test_converted_nets_compute_the_forks_scores(caffe, files, reference, which):
    image, expected = reference
    model = files["deploy"] if which == "unfolded" else files["folded"]
    net = caffe.Net(str(model), str(files[f"{which}_out"]), caffe.TEST)
    assert disagreement(caffe_scores(net, image), expected) < TOLERANCE


def test_the_reference_catches_swapped_deconvolution_axes(caffe, files, reference):
    """A converter that read the deconvolution weights as (out, in) would be
    caught: the square decoder layers transposed are far off."""
    image, expected = reference
    net = caffe.Net(str(files["deploy"]), str(files["unfolded_out"]), caffe.TEST)
    kinds = dict(zip(net._layer_names, (layer.type for layer in net.layers), strict=True))
    swapped = 0
    for name, blobs in net.params.items():
        weight = blobs[0].data
        if kinds[name] == "Deconvolution" and weight.shape[0] == weight.shape[1]:
            weight[...] = weight.transpose(1, 0, 2, 3).copy()
            swapped += 1
    assert swapped >= 4
    assert disagreement(caffe_scores(net, image), expected) > 100 * TOLERANCE


def test_the_reference_catches_swapped_scale_and_shift(caffe, files, reference):
    image, expected = reference
    net = caffe.Net(str(files["deploy"]), str(files["unfolded_out"]), caffe.TEST)
    for name, blobs in net.params.items():
        if name.endswith("_scale"):
            scale = blobs[0].data.copy()
            blobs[0].data[...] = blobs[1].data
            blobs[1].data[...] = scale
    assert disagreement(caffe_scores(net, image), expected) > 100 * TOLERANCE


def test_the_unfolded_batchnorm_is_an_exact_identity(caffe, files):
    """Mean 0, factor 1, and variance + eps exactly 1 in float32; the Scale
    holds the release's scale and shift as they are."""
    net = caffe.Net(str(files["deploy"]), str(files["unfolded_out"]), caffe.TEST)
    release = release_arrays(files["inference"])
    mean, variance, factor = (b.data for b in net.params["deconv3_2_bn"])
    assert not mean.any() and (factor == 1).all()
    assert (np.float32(variance) + np.float32(1e-5) == np.float32(1)).all()
    np.testing.assert_array_equal(net.params["deconv3_2_scale"][0].data, release["debn3_2"][0].ravel())
    np.testing.assert_array_equal(net.params["deconv3_2_scale"][1].data, release["debn3_2"][1].ravel())
    np.testing.assert_array_equal(net.params["fc6_deconv"][0].data, release["fc6-deconv"][0])


def test_inference_bn_mode_is_accepted(caffe, files, tmp_path):
    """A BN with bn_mode INFERENCE (one top) is an inference model too."""
    from deconvnet.net.architecture import Size
    from deconvnet.net.stand_in_weights import deconvnet_release_layers, write_v1_caffemodel

    source = write_v1_caffemodel(tmp_path / "inference_mode.caffemodel", "DeconvNet",
                                 deconvnet_release_layers(Size(*SIZE), snapshot=True, bn_mode=1))
    done = convert_tool("deconvnet", source, tmp_path / "out.caffemodel", "--model", files["deploy"])
    assert done.returncode == 0, done.stderr


# --- the training snapshot ---------------------------------------------------------------------

def test_the_snapshot_loads_into_the_stage2_training_net(caffe, files, tmp_path):
    """Scale and shift into the Scale layers, no statistics (factor 0), so
    that fold_bn refuses the weights until bn_stats has run."""
    from deconvnet.net import nets
    from deconvnet.net.architecture import Size
    from deconvnet.net.weights import load_net

    size = Size(*SIZE)
    out = tmp_path / "stage2_init.caffemodel"
    done = convert_tool("deconvnet-train", files["snapshot"], out, "--model", files["deploy"])
    assert done.returncode == 0, done.stderr
    train = write(tmp_path / "train.prototxt", str(nets.deconvnet_train_test(
        True, "unused", batch_size=2, size=size, data=nets.dummy_data(2, size))))
    net = load_net(train, out, caffe.TRAIN)
    release = release_arrays(files["snapshot"])
    np.testing.assert_array_equal(net.params["conv4_1_scale"][0].data, release["bn4_1"][0].ravel())
    np.testing.assert_array_equal(net.params["fc7_scale"][1].data, release["bnfc7"][1].ravel())
    assert (net.params["conv4_1_bn"][2].data == 0).all()
    loss = net.forward()["loss"]
    assert np.isfinite(loss)
    fold = subprocess.run([sys.executable, str(ROOT / "tools" / "fold_bn.py"), "--model", str(files["deploy"]),
                           "--weights", str(out), "--out-model", str(tmp_path / "f.prototxt"),
                           "--out-weights", str(tmp_path / "f.caffemodel")], capture_output=True, text=True)
    assert fold.returncode == 1 and "bn_stats" in fold.stderr
    assert not (tmp_path / "f.caffemodel").exists()


# --- refusals, each leaving nothing ------------------------------------------------------------

def _refused(done: subprocess.CompletedProcess, out: Path, *phrases: str) -> None:
    assert done.returncode != 0, done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.stem}")], "a temporary file stayed"


def test_a_truncated_file_is_refused(files, tmp_path):
    data = files["inference"].read_bytes()
    cut = write_bytes(tmp_path / "cut.caffemodel", data[: len(data) * 2 // 3])
    out = tmp_path / "out" / "converted.caffemodel"
    out.parent.mkdir()
    _refused(convert_tool("deconvnet", cut, out, "--model", files["deploy"]), out, "truncated", str(cut))


def test_a_v2_file_is_refused_and_pointed_to_infer(files, tmp_path):
    out = tmp_path / "converted.caffemodel"
    _refused(convert_tool("deconvnet", files["unfolded_out"], out, "--model", files["deploy"]), out,
             "V2", "tools/infer.py")


def test_the_snapshot_as_inference_model_and_the_reverse_are_refused(files, tmp_path):
    out = tmp_path / "converted.caffemodel"
    _refused(convert_tool("deconvnet", files["snapshot"], out, "--model", files["deploy"]), out,
             "LEARN-mode training snapshot", "deconvnet-train")
    _refused(convert_tool("deconvnet-train", files["inference"], out, "--model", files["deploy"]), out,
             "inference model")


@pytest.mark.parametrize("change", ["missing", "extra", "other size"])
def test_layers_missing_extra_or_of_other_shapes_are_refused(files, tmp_path, change):
    from deconvnet.net.architecture import Size
    from deconvnet.net.stand_in_weights import CONVOLUTION, Layer, deconvnet_release_layers, write_v1_caffemodel

    layers = deconvnet_release_layers(Size(SIZE[0], 4 if change == "other size" else SIZE[1]))
    if change == "missing":
        layers = tuple(layer for layer in layers if layer.name != "debn2_1")
    elif change == "extra":
        layers += (Layer("seg-score-coco", CONVOLUTION, ((81, 8, 1, 1), (81,))),)
    source = write_v1_caffemodel(tmp_path / "changed.caffemodel", "DeconvNet", layers)
    out = tmp_path / "converted.caffemodel"
    expected = {"missing": "missing 1 layers (debn2_1)", "extra": "seg-score-coco",
                "other size": "conv1_1 blob 0: file (16, 3, 3, 3), our net (8, 3, 3, 3)"}[change]
    _refused(convert_tool("deconvnet", source, out, "--model", files["deploy"]), out, expected)


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- the 2014 FCN-8s ---------------------------------------------------------------------------

def test_the_2014_fcn8s_with_crop_layers_converts_and_todays_loader_reads_it(caffe, tmp_path):
    """The file, with its CROP (fork type 40) and ELTWISE layers, converts
    into the committed deploy net with every blob as protobuf decodes it;
    today's loader reads the original too (the CROP layers are skipped)."""
    from deconvnet.common.cli import PROTOTXT
    from deconvnet.net.stand_in_weights import write_stand_in

    from caffe.proto import caffe_pb2

    source = write_stand_in("fcn8s-pascal-2014", tmp_path / "fcn-8s-pascal.caffemodel")
    parsed = caffe_pb2.NetParameter()
    parsed.ParseFromString(source.read_bytes())
    crops = [layer for layer in parsed.layers if layer.name == "crop"]
    assert len(crops) == 3 and all(not layer.HasField("type") for layer in crops)  # 40: unknown to today's enum
    out = tmp_path / "fcn8s_2014.caffemodel"
    done = convert_tool("fcn8s-2014", source, out)
    assert done.returncode == 0, done.stderr
    deploy = PROTOTXT / "fcn8s_2014_deploy.prototxt"
    converted = caffe.Net(str(deploy), str(out), caffe.TEST)
    direct = caffe.Net(str(deploy), caffe.TEST)
    direct.copy_from(str(source))
    expected = {layer.name: [np.array(b.data, np.float32) for b in layer.blobs] for layer in parsed.layers}
    for name, blobs in converted.params.items():
        for i, blob in enumerate(blobs):
            np.testing.assert_array_equal(blob.data.ravel(), expected[name][i], err_msg=name)
            np.testing.assert_array_equal(direct.params[name][i].data, blob.data, err_msg=name)


def test_a_heavy_fcn8s_is_refused_as_the_2014_model(caffe, tmp_path):
    from deconvnet.net.stand_in_weights import FCN8S_2014_LAYERS, write_v1_caffemodel

    renamed = tuple(layer._replace(name=layer.name.replace("score-fr", "score_fr")) for layer in FCN8S_2014_LAYERS)
    source = write_v1_caffemodel(tmp_path / "heavy.caffemodel", "FCN-8s", renamed)
    out = tmp_path / "converted.caffemodel"
    _refused(convert_tool("fcn8s-2014", source, out), out, "missing 1 layers (score-fr)", "score_fr")


# --- the converted weights in the tools ---------------------------------------------------------

def test_infer_and_figures_take_the_converted_weights(files, tmp_path):
    """tools/infer.py labels images alike with the unfolded and the folded
    conversion; tools/figures.py draws from them."""
    from PIL import Image

    from deconvnet.data.synthetic import SyntheticSpec, write_dataset

    write_dataset(tmp_path / "syn", SyntheticSpec(num_images=2, seed=5, voc_fraction=1.0))
    images = tmp_path / "syn" / "VOCdevkit" / "VOC2012" / "JPEGImages"
    labels = {}
    for which, model in (("unfolded", files["deploy"]), ("folded", files["folded"])):
        out = tmp_path / which
        done = subprocess.run([sys.executable, str(ROOT / "tools" / "infer.py"), str(images), "--out", str(out),
                               "--model", str(model), "--weights", str(files[f"{which}_out"]), "--edges", "gradient",
                               "--top-k", "3"], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        labels[which] = {p.name: np.array(Image.open(p)) for p in sorted((out / "labels").glob("*.png"))}
    assert len(labels["unfolded"]) == 2 and labels["unfolded"].keys() == labels["folded"].keys()
    for name, unfolded in labels["unfolded"].items():
        assert (unfolded == labels["folded"][name]).mean() > 0.999, name
    figure = tmp_path / "fig6.png"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "figures.py"), "fig6", str(sorted(images.iterdir())[0]),
                           "--model", str(files["folded"]), "--weights", str(files["folded_out"]), "--edges",
                           "gradient", "--out", str(figure)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.array(Image.open(figure)).shape[1] > 300


@pytest.mark.slow
def test_a_full_size_release_converts_into_the_committed_nets(caffe, tmp_path):
    """The paper's net: a full-size stand-in of the inference model, with the
    release's names, converts with the tool's defaults into the committed
    deploy nets, and the unfolded and folded conversions agree. At this size
    float rounding can flip a near-tie of max pooling, which moves one value
    of an unpooled map and spreads through the decoder (docs/BENCHMARKS.md,
    "Inference on the CPU"): so the encoder must agree to TOLERANCE, the
    switches but for a handful, and the labels nearly everywhere."""
    from deconvnet.common.cli import PROTOTXT
    from deconvnet.net.stand_in_weights import write_stand_in
    from deconvnet.net.weights import load_net

    source = write_stand_in("deconvnet-inference", tmp_path / "DeconvNet_trainval_inference.caffemodel")
    image = np.random.default_rng(1).normal(0, 60, (3, 224, 224)).astype(np.float32)
    blobs = {}
    for which, model, extra in (("unfolded", "deconvnet_deploy.prototxt", []),
                                ("folded", "deconvnet_deploy_folded.prototxt", ["--folded"])):
        out = tmp_path / f"{which}.caffemodel"
        done = convert_tool("deconvnet", source, out, *extra)
        assert done.returncode == 0, done.stderr
        net = load_net(PROTOTXT / model, out, caffe.TEST)
        caffe_scores(net, image)
        blobs[which] = {name: net.blobs[name].data.astype(np.float64).reshape(net.blobs[name].data.shape[0], -1)
                        for name in ("fc7", "seg_score", *(f"pool{s}_mask" for s in range(1, 6)))}
        del net
        out.unlink()
    unfolded, folded = blobs["unfolded"], blobs["folded"]
    assert disagreement(folded["fc7"], unfolded["fc7"]) < TOLERANCE
    flips = sum(int((unfolded[m] != folded[m]).sum()) for m in unfolded if m.endswith("_mask"))
    assert flips <= 10, flips
    labels = [b["seg_score"].reshape(21, -1).argmax(0) for b in (unfolded, folded)]
    assert np.ptp(unfolded["seg_score"]) > 1 and (labels[0] == labels[1]).mean() > 0.99
