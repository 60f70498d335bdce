"""GPU checks of the CUDA variant (scripts/setup.sh --cuda), run only where
an NVIDIA GPU is present (marker ``gpu``; conftest deselects them
elsewhere): Caffe's own gtest of the Unpooling layer on the GPU, and a
forward pass of a reduced DeconvNet on the GPU against the same net on the
CPU (the CPU code is the independent reference)."""
from __future__ import annotations

import os
import subprocess

import pytest

from helpers import ROOT, run_python

pytestmark = pytest.mark.gpu


def test_unpooling_gtest_on_gpu(cuda_prefix):
    """Every Unpooling case of the CUDA build: CPU and GPU devices in float and
    double (4 x 6), and the GPU-against-CPU agreement test (2)."""
    testbin = cuda_prefix / "bin" / "test.testbin"
    out = subprocess.run([str(testbin), "--gtest_filter=*Unpooling*"], capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, GLOG_minloglevel="2"))
    assert out.returncode == 0, out.stdout[-3000:]
    assert "[  PASSED  ] 26 tests" in out.stdout, out.stdout[-2000:]


FORWARD = """

import numpy as np
import caffe
from deconvnet.net import nets
from deconvnet.net.architecture import Size

path = "deploy.prototxt"
open(path, "w").write(str(nets.deconvnet_deploy(batch=4, size=Size(64, 8))))
caffe.set_mode_cpu()
net = caffe.Net(path, caffe.TEST)
rng = np.random.default_rng(0)
for name, params in net.params.items():
    for blob in params:
        blob.data[...] = rng.normal(0, 0.1, blob.data.shape)
    if name.endswith("_bn"):
        params[1].data[...] = 1 + np.abs(params[1].data)   # a positive variance
        params[2].data[...] = 1
net.blobs["data"].data[...] = rng.normal(0, 50, net.blobs["data"].data.shape)
cpu = net.forward()["seg_score"].copy()
caffe.set_device(0)
caffe.set_mode_gpu()
gpu = net.forward()["seg_score"].copy()
scale = np.abs(cpu).max()
print("max difference", np.abs(gpu - cpu).max(), "scale", scale)
assert np.allclose(gpu, cpu, atol=1e-3 * scale, rtol=1e-3)
"""


def test_forward_pass_on_gpu_matches_cpu(cuda_prefix, tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{cuda_prefix / 'python'}:{ROOT}")
    result = run_python(FORWARD, tmp_path, timeout=300, env=env, python=str(ROOT / ".venv/bin/python"))
    assert result.returncode == 0, result.stderr[-3000:]
