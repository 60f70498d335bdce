"""tools/init_weights.py on VGG16s with random weights saved by pycaffe."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, write

TOOL = ROOT / "tools" / "init_weights.py"
PROTOTXT = ROOT / "prototxt"
CONVS = [f"conv{s}_{k}" for s, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for k in range(1, n + 1)]


def random_vgg(caffe, prototxt, out, seed: int) -> dict[str, list[np.ndarray]]:
    """Saves a VGG16 with random weights; returns copies of them."""
    net = caffe.Net(str(prototxt), caffe.TEST)
    rng = np.random.default_rng(seed)
    weights = {}
    for name, params in net.params.items():
        for p in params:
            p.data[...] = rng.standard_normal(p.data.shape, dtype=np.float32)
        weights[name] = [p.data.copy() for p in params]
    net.save(str(out))
    return weights


def run_tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def full_vgg(caffe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vgg16")
    model = folder / "vgg16_random.caffemodel"
    return model, random_vgg(caffe, PROTOTXT / "vgg16_deploy.prototxt", model, seed=0)


@pytest.fixture(scope="module")
def reduced(caffe, tmp_path_factory):
    """A width/8, 64-pixel VGG16 and DeconvNet pair, for the error cases."""
    from deconvnet.net import nets

    folder = tmp_path_factory.mktemp("reduced")
    size = nets.Size(input_size=64, width_divisor=8)
    vgg_proto = write(folder / "vgg.prototxt", str(nets.vgg16_deploy(size)))
    target = write(folder / "deconvnet.prototxt", str(nets.deconvnet_deploy(size=size)))
    model = folder / "vgg.caffemodel"
    weights = random_vgg(caffe, vgg_proto, model, seed=1)
    return dict(folder=folder, vgg_proto=vgg_proto, target=target, model=model, weights=weights)


def initialised(net: str, vgg_model, folder):
    """tools/init_weights.py NET on the given VGG16: the written caffemodel."""
    out = folder / f"{net}_init.caffemodel"
    result = run_tool(net, "--vgg-model", vgg_model, "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.mark.slow
def test_deconvnet_init_round_trip(caffe, full_vgg, tmp_path):
    model, vgg = full_vgg
    out = initialised("deconvnet", model, tmp_path)
    # A float32 DeconvNet is about 961 MiB.
    assert 955 < out.stat().st_size / 2**20 < 970
    net = caffe.Net(str(PROTOTXT / "deconvnet_deploy.prototxt"), str(out), caffe.TEST)
    for name in CONVS:
        np.testing.assert_array_equal(net.params[name][0].data, vgg[name][0])
        np.testing.assert_array_equal(net.params[name][1].data, vgg[name][1])
    # fc6: InnerProduct rows over (channel, y, x) of pool5 become 7x7 kernels.
    fc6 = net.params["fc6"][0].data
    assert fc6.shape == (4096, 512, 7, 7)
    for out_ch, ch, y, x in [(0, 0, 0, 0), (17, 300, 3, 5), (4095, 511, 6, 6)]:
        assert fc6[out_ch, ch, y, x] == vgg["fc6"][0][out_ch, ch * 49 + y * 7 + x]
    np.testing.assert_array_equal(net.params["fc6"][1].data, vgg["fc6"][1])
    np.testing.assert_array_equal(net.params["fc7"][0].data[:, :, 0, 0], vgg["fc7"][0])
    # Decoder: Gaussian std 0.01, zero bias. BatchNorm/Scale: the identity.
    weights = net.params["fc6_deconv"][0].data
    assert abs(weights.std() - 0.01) < 0.0005 and abs(weights.mean()) < 0.0005
    assert np.all(net.params["deconv3_2"][1].data == 0)
    mean, var, factor = (p.data for p in net.params["deconv1_1_bn"])
    assert np.all(mean == 0) and np.all(var == 1) and factor[0] == 1
    assert np.all(net.params["conv4_2_scale"][0].data == 1)
    assert np.all(net.params["conv4_2_scale"][1].data == 0)


def test_fc6_as_convolution_computes_the_inner_product(caffe, reduced):
    """Functional check on the reduced pair: the same pool5 gives the same fc6."""
    out = reduced["folder"] / "init.caffemodel"
    result = run_tool("deconvnet", "--vgg-model", reduced["model"], "--vgg-prototxt",
                      reduced["vgg_proto"], "--target", reduced["target"], "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    vgg = caffe.Net(str(reduced["vgg_proto"]), str(reduced["model"]), caffe.TEST)
    deconvnet = caffe.Net(str(reduced["target"]), str(out), caffe.TEST)
    pool5 = np.random.default_rng(3).standard_normal(vgg.blobs["pool5"].data.shape)
    for net in (vgg, deconvnet):
        net.blobs["pool5"].data[...] = pool5
        net.forward(start="fc6", end="fc6")
    np.testing.assert_allclose(deconvnet.blobs["fc6"].data.reshape(1, -1),
                               vgg.blobs["fc6"].data, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_fcn8s_init(caffe, full_vgg, tmp_path):
    model, vgg = full_vgg
    net = caffe.Net(str(PROTOTXT / "fcn8s_deploy.prototxt"), str(initialised("fcn8s", model, tmp_path)), caffe.TEST)
    np.testing.assert_array_equal(net.params["conv3_2"][0].data, vgg["conv3_2"][0])
    np.testing.assert_array_equal(net.params["fc6"][0].data.reshape(4096, -1), vgg["fc6"][0])
    # 4x4 bilinear upsampling by 2: the outer product of [1, 3, 3, 1] / 4,
    # on each class's own channel only.
    k4 = np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25])
    up = net.params["upscore2"][0].data
    for c in (0, 7, 20):
        np.testing.assert_allclose(up[c, c], k4)
    assert up[3, 4].sum() == 0
    k16 = net.params["upscore8"][0].data[5, 5]
    assert k16.shape == (16, 16) and k16.max() == pytest.approx((1 - 0.5 / 8) ** 2)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert all(np.all(p.data == 0) for p in net.params[name])


def assert_failed_cleanly(result, out, *phrases):
    assert result.returncode == 1, result.stdout + result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr[-2000:]
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.stem}.*")), "a partial file was left behind"


def test_missing_layers_are_listed(caffe, reduced, tmp_path):
    net = caffe.proto.caffe_pb2.NetParameter()
    net.ParseFromString(reduced["model"].read_bytes())
    kept = [layer for layer in net.layer if layer.name not in ("conv3_2", "fc7")]
    del net.layer[:]
    net.layer.extend(kept)
    broken = write(tmp_path / "broken.caffemodel", "")
    broken.write_bytes(net.SerializeToString())
    out = tmp_path / "out" / "init.caffemodel"
    result = run_tool("deconvnet", "--vgg-model", broken, "--vgg-prototxt", reduced["vgg_proto"],
                      "--target", reduced["target"], "--out", out)
    assert_failed_cleanly(result, out, "missing layers: conv3_2, fc7")


def test_wrong_shapes_are_listed(reduced, tmp_path):
    # The full-size target with a width/8 VGG16.
    out = tmp_path / "init.caffemodel"
    result = run_tool("deconvnet", "--vgg-model", reduced["model"], "--out", out)
    assert_failed_cleanly(result, out, "wrong shapes", "conv1_1: model has [(8, 3, 3, 3), (8,)], "
                          "target needs [(64, 3, 3, 3), (64,)]")


@pytest.mark.parametrize("content", [b"name: 'not a model'\n", bytes(range(256)) * 40, b""])
def test_not_a_caffemodel(reduced, tmp_path, content):
    bogus = tmp_path / "bogus.caffemodel"
    bogus.write_bytes(content)
    out = tmp_path / "init.caffemodel"
    result = run_tool("deconvnet", "--vgg-model", bogus, "--vgg-prototxt", reduced["vgg_proto"],
                      "--target", reduced["target"], "--out", out)
    assert_failed_cleanly(result, out, "is not a Caffe model")


def test_missing_file_and_bad_prototxt(reduced, tmp_path):
    out = tmp_path / "init.caffemodel"
    result = run_tool("deconvnet", "--vgg-model", tmp_path / "nope.caffemodel", "--out", out)
    assert_failed_cleanly(result, out, "nope.caffemodel: no such file")
    bad = write(tmp_path / "bad.prototxt", "layer { name: 'x' type: \n")
    result = run_tool("deconvnet", "--vgg-model", reduced["model"], "--target", bad, "--out", out)
    assert_failed_cleanly(result, out, "is not a valid prototxt")
