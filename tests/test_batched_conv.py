"""Patch 0018: Convolution and Deconvolution run their CPU forward and
backward passes over groups of images with one GEMM per group; patch 0019
runs both passes of their 3x3 stride-1 layers by Winograd's F(2x2, 3x3).
Their gtests (batched against image by image, Winograd against a direct
convolution in double, the layers' own gtests against Caffe's naive
reference and gradient checks) pass, and our nets compute what they computed
before: the image-by-image path (CAFFE_CPU_CONV_BATCH_MIB=0, the unpatched
code, bit for bit: docs/BENCHMARKS.md), the batched im2col one and the
Winograd one agree to 1e-5 of the output's range."""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from deconvnet.net import nets
from deconvnet.net.architecture import Size

BATCH = 5  # not a multiple of the groups of 2 the cap below makes


@pytest.fixture
def batch_settings():
    """Sets CAFFE_CPU_CONV_BATCH_MIB / _IMAGES / CAFFE_CPU_CONV_WINOGRAD for the calls inside; restores them after."""
    names = ("CAFFE_CPU_CONV_BATCH_MIB", "CAFFE_CPU_CONV_BATCH_IMAGES", "CAFFE_CPU_CONV_WINOGRAD")
    saved = {k: os.environ.get(k) for k in names}

    def apply(mib: str, images: str = "0", winograd: str = "0") -> None:
        os.environ.update(zip(names, (mib, images, winograd), strict=True))

    yield apply
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _random_net(caffe, net_param, seed: int = 0):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "net.prototxt"
        path.write_text(str(net_param))
        net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        if name.endswith("_bn"):
            blobs[0].data[...], blobs[1].data[...], blobs[2].data[...] = 0, 1, 1
            continue
        for blob in blobs:
            fan_in = np.prod(blob.data.shape[1:]) if blob.data.ndim > 1 else 1
            blob.data[...] = rng.normal(0, np.sqrt(2 / max(fan_in, 1)), blob.data.shape)
    return net


NETS = {
    "deconvnet": lambda: nets.deconvnet_deploy(batch=BATCH, size=Size(64, 8)),
    "deconvnet-folded": lambda: nets.deconvnet_deploy(batch=BATCH, size=Size(64, 8), folded=True),
    "fcn8s": lambda: nets.fcn8s_deploy(Size(48, 8)),
    "deeplab-largefov": lambda: nets.deeplab_deploy(Size(49, 8)),
}


@pytest.mark.parametrize("name", list(NETS))
def test_our_nets_compute_the_same_batched(caffe, batch_settings, name):
    net = _random_net(caffe, NETS[name]())
    shape = (BATCH, *net.blobs["data"].data.shape[1:])
    net.blobs["data"].reshape(*shape)
    net.reshape()
    data = np.random.default_rng(1).normal(0, 60, shape).astype(np.float32)
    out = net.outputs[0]
    results = {}
    # Winograd in 1 MiB blocks: blocks of tiles that start and end inside images.
    settings = {"image by image": ("0", "0", "0"), "one group": ("64", "0", "0"), "groups of 2": ("64", "2", "0"),
                "winograd": ("64", "0", "1"), "winograd, 1 MiB blocks": ("1", "0", "1")}
    for label, setting in settings.items():
        batch_settings(*setting)
        net.blobs["data"].data[...] = data
        results[label] = net.forward()[out].copy()
    reference = results["image by image"]
    scale = float(reference.max() - reference.min())
    assert scale > 0
    for label in list(settings)[1:]:
        assert np.abs(results[label] - reference).max() <= 1e-5 * scale, label
    # Winograd's rounding differs from im2col's: its path was the one taken.
    assert not np.array_equal(results["winograd"], results["one group"])
    # Negative: the same check catches a batch whose images are out of order.
    swapped = results["one group"][[1, 0, 2, 3, 4]]
    assert np.abs(swapped - reference).max() > 1e-5 * scale


def test_batched_gtests_pass(cpu_prefix):
    """The new gtests (groups that do not divide the batch, grouped,
    dilated, strided and padded convolutions and deconvolutions, the group
    size's memory bound; Winograd against a direct convolution in double,
    pads 0 to 3, odd sizes, grouped, blocks across images, a reference that
    must fail; Winograd's gradients against im2col's) and the layers'
    own gtests on the CPU."""
    testbin = cpu_prefix / "bin" / "test.testbin"
    out = subprocess.run([str(testbin), "--gtest_filter=*BatchedConvolution*:*WinogradConvolution*:"
                          "*ConvolutionLayerTest*:*DeconvolutionLayerTest*:-*GPU*:*CuDNN*"],
                         capture_output=True, text=True, timeout=1200, env=dict(os.environ, GLOG_minloglevel="2"))
    assert out.returncode == 0, out.stdout[-4000:]
    assert "[  PASSED  ]" in out.stdout and "FAILED" not in out.stdout
    # 12 batched and 12 Winograd cases for float and for double, and the layers' own 40 on the CPU.
    for dtype in (0, 1):
        assert f"12 tests from BatchedConvolutionTest/{dtype} " in out.stdout
        assert f"12 tests from WinogradConvolutionTest/{dtype} " in out.stdout
    ran = int(out.stdout.rsplit("[  PASSED  ] ", 1)[1].split()[0])
    assert ran == 24 + 24 + 40, out.stdout[-2000:]
