"""`caffe train -solver` from the command line on a tiny encoder-decoder with
every layer type DeconvNet needs, and the snapshot it writes."""
from __future__ import annotations

import os
import subprocess

import h5py
import numpy as np
import pytest

from helpers import CAFFE_COMMAND, write

UNPOOL_NATIVE = """layer { name: "unpool1" type: "Unpooling" bottom: "conv2" bottom: "pool1_mask"
  top: "unpool1" unpooling_param { unpool_size: 16 } }"""
UNPOOL_PYTHON = """layer { name: "unpool1" type: "Python" bottom: "conv2" bottom: "pool1_mask"
  top: "unpool1" python_param { module: "python_layers.unpooling" layer: "UnpoolingLayer"
  param_str: '{"unpool_h": 16, "unpool_w": 16}' } }"""


def conv_bn_relu(name: str, bottom: str, kind: str, num_output: int) -> str:
    return f"""
layer {{ name: "{name}" type: "{kind}" bottom: "{bottom}" top: "{name}"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  convolution_param {{ num_output: {num_output} kernel_size: 3 pad: 1
    weight_filler {{ type: "gaussian" std: 0.1 }} bias_filler {{ type: "constant" }} }} }}
layer {{ name: "{name}_bn" type: "BatchNorm" bottom: "{name}" top: "{name}" }}
layer {{ name: "{name}_scale" type: "Scale" bottom: "{name}" top: "{name}"
  scale_param {{ bias_term: true }} }}
layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}
"""


def tiny_net(unpool_layer: str, h5_list) -> str:
    return (
        f"""name: "tiny_deconvnet"
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param {{ source: "{h5_list}" batch_size: 4 }} }}
"""
        + conv_bn_relu("conv1", "data", "Convolution", 8)
        + """layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" top: "pool1_mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""
        + conv_bn_relu("conv2", "pool1", "Convolution", 8)
        + unpool_layer
        + conv_bn_relu("deconv1", "unpool1", "Deconvolution", 8)
        + """layer { name: "seg_score" type: "Convolution" bottom: "deconv1" top: "seg_score"
  convolution_param { num_output: 3 kernel_size: 1
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "seg_score" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 } }
"""
    )


SOLVER = """net: "net.prototxt"
base_lr: 0.01
lr_policy: "fixed"
momentum: 0.9
weight_decay: 0.0005
max_iter: {max_iter}
display: 1
snapshot: 4
snapshot_prefix: "snapshots/tiny"
solver_mode: CPU
random_seed: 3
"""


def make_data(folder) -> None:
    """Squares of class 1 or 2 on background 0, with a void (255) border."""
    rng = np.random.default_rng(0)
    data = rng.normal(0, 0.1, (8, 3, 16, 16)).astype(np.float32)
    label = np.zeros((8, 1, 16, 16), dtype=np.float32)
    for i in range(8):
        cls = 1 + i % 2
        y, x = rng.integers(2, 8, size=2)
        label[i, 0, y:y + 6, x:x + 6] = cls
        data[i, cls, y:y + 6, x:x + 6] += 1.0
        label[i, 0, 0, :] = 255
    with h5py.File(folder / "train.h5", "w") as f:
        f["data"] = data
        f["label"] = label
    write(folder / "train_h5.txt", str(folder / "train.h5") + "\n")


def caffe_train(folder, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")
    return subprocess.run([CAFFE_COMMAND, "train", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("unpool_layer", [UNPOOL_NATIVE, UNPOOL_PYTHON], ids=["native", "python"])
def test_caffe_train_writes_loadable_snapshot(caffe, tmp_path, unpool_layer):
    make_data(tmp_path)
    write(tmp_path / "net.prototxt", tiny_net(unpool_layer, tmp_path / "train_h5.txt"))
    write(tmp_path / "solver.prototxt", SOLVER.format(max_iter=4))
    (tmp_path / "snapshots").mkdir()

    result = caffe_train(tmp_path, "-solver", "solver.prototxt")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Iteration 4" in result.stderr
    model = tmp_path / "snapshots" / "tiny_iter_4.caffemodel"
    state = tmp_path / "snapshots" / "tiny_iter_4.solverstate"
    assert model.exists() and state.exists()

    # The snapshot holds every learnable layer, with the shapes of the net.
    net = caffe.Net(str(tmp_path / "net.prototxt"), str(model), caffe.TEST)
    assert net.params["conv1"][0].data.shape == (8, 3, 3, 3)
    assert net.params["deconv1"][0].data.shape == (8, 8, 3, 3)
    assert net.params["seg_score"][0].data.shape == (3, 8, 1, 1)
    # BatchNorm kept running statistics: mean, variance and their weight.
    mean, var, factor = (b.data for b in net.params["conv1_bn"])
    assert factor[0] > 0 and np.any(mean != 0) and np.all(var > 0)
    # Training moved the weights away from their Gaussian initialisation's
    # zero bias.
    assert np.any(net.params["conv1"][1].data != 0)
    losses = [float(line.rsplit("=", 1)[1].split()[0]) for line in result.stderr.splitlines()
              if "Train net output" in line and "loss =" in line]
    assert len(losses) == 4 and all(np.isfinite(losses))

    # Resuming from the solverstate continues the iteration count.
    write(tmp_path / "solver.prototxt", SOLVER.format(max_iter=8))
    resumed = caffe_train(tmp_path, "-solver", "solver.prototxt", "-snapshot", str(state))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stderr
    assert (tmp_path / "snapshots" / "tiny_iter_8.caffemodel").exists()


RAISING_LAYER = '''
import caffe


class Raising(caffe.Layer):
    """Raises in the method its param_str names ("exit": SystemExit in forward)."""

    def setup(self, bottom, top):
        if self.param_str == "setup":
            raise ValueError("SENTINEL-7f3a raised in setup")

    def reshape(self, bottom, top):
        if self.param_str == "reshape":
            raise ValueError("SENTINEL-7f3a raised in reshape")
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        if self.param_str == "forward":
            raise RuntimeError("SENTINEL-7f3a raised in forward")
        if self.param_str == "exit":
            raise SystemExit("SENTINEL-7f3a raised in forward")
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if self.param_str == "backward":
            raise RuntimeError("SENTINEL-7f3a raised in backward")


class RaisingAtConstruction(caffe.Layer):
    def __init__(self, param):
        raise ValueError("SENTINEL-7f3a raised in construction")
'''


def python_layer_net(folder, where: str, layer: str = "Raising") -> None:
    """A net whose Python layer 'feeder' raises in ``where``; force_backward
    makes Caffe run its backward."""
    write(folder / "raising_layer.py", RAISING_LAYER)
    write(folder / "net.prototxt", f"""force_backward: true
layer {{ name: "source" type: "DummyData" top: "data"
  dummy_data_param {{ shape {{ dim: 2 dim: 3 dim: 4 dim: 4 }} data_filler {{ type: "gaussian" }} }} }}
layer {{ name: "feeder" type: "Python" bottom: "data" top: "out"
  python_param {{ module: "raising_layer" layer: "{layer}" param_str: "{where}" }} }}
layer {{ name: "loss" type: "Reduction" bottom: "out" top: "loss" loss_weight: 1 }}
""")
    write(folder / "solver.prototxt", 'net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 2\n'
                                      "solver_mode: CPU\n")


def run_caffe(folder, command: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0",
               PYTHONPATH=f"{folder}:{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run([CAFFE_COMMAND, command, *args], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("command, where", [("train", "setup"), ("train", "forward"), ("test", "forward"),
                                            ("time", "forward"), ("train", "reshape"), ("train", "backward"),
                                            ("test", "reshape")])
def test_python_layer_errors_are_printed_with_the_layer(caffe, tmp_path, command, where):
    """Issue 12, item 1 (and issue 26, item 5): the exception's text and the
    layer's name, not only 'terminate called after throwing
    boost::python::error_already_set'."""
    python_layer_net(tmp_path, where)
    (tmp_path / "empty.caffemodel").write_bytes(b"")  # `caffe test` insists on -weights
    args = {"train": ["-solver", "solver.prototxt"],
            "test": ["-model", "net.prototxt", "-weights", "empty.caffemodel", "-iterations", "1"],
            "time": ["-model", "net.prototxt", "-iterations", "1"]}[command]
    result = run_caffe(tmp_path, command, *args)
    assert result.returncode != 0
    assert f"SENTINEL-7f3a raised in {where}" in result.stderr, result.stderr[-3000:]
    assert f"Python layer 'feeder' (raising_layer.Raising) raised in {where}" in result.stderr
    assert "Traceback" in result.stderr


def test_an_error_while_a_python_layer_is_constructed_names_it(caffe, tmp_path):
    python_layer_net(tmp_path, "", layer="RaisingAtConstruction")
    result = run_caffe(tmp_path, "train", "-solver", "solver.prototxt")
    assert result.returncode != 0
    assert "SENTINEL-7f3a raised in construction" in result.stderr, result.stderr[-3000:]
    assert ("Python layer 'feeder' (raising_layer.RaisingAtConstruction) raised while it was constructed"
            in result.stderr)


def test_a_system_exit_in_a_layer_is_reported_not_obeyed(caffe, tmp_path):
    """Python's own error printer would exit quietly with the SystemExit's code."""
    python_layer_net(tmp_path, "exit")
    result = run_caffe(tmp_path, "train", "-solver", "solver.prototxt")
    assert result.returncode != 0
    assert "SystemExit: SENTINEL-7f3a raised in forward" in result.stderr, result.stderr[-3000:]
    assert "Python layer 'feeder' (raising_layer.Raising) raised in forward" in result.stderr


def test_multi_gpu_training_of_a_net_with_python_layers_says_what_to_do(caffe, tmp_path):
    """Caffe's multi-GPU training cannot run Python layers: the tool stops
    before touching a GPU, naming them, tools/train.py --gpus and the one-GPU
    command."""
    python_layer_net(tmp_path, "")
    result = run_caffe(tmp_path, "train", "-solver", "solver.prototxt", "-gpu", "0,1")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "-gpu 0,1 asks for 2 GPUs" in result.stderr
    assert "'feeder' (raising_layer.Raising)" in result.stderr
    assert "Train with tools/train.py --gpus 0,1" in result.stderr and "on one GPU: -gpu 0." in result.stderr
    assert "Check failure" not in result.stderr
    # Without Python layers the request goes on (and fails here for want of a GPU, differently).
    write(tmp_path / "net.prototxt", """layer { name: "source" type: "DummyData" top: "data"
  dummy_data_param { shape { dim: 2 dim: 3 } } }
layer { name: "loss" type: "Reduction" bottom: "data" top: "loss" loss_weight: 1 }
""")
    plain = run_caffe(tmp_path, "train", "-solver", "solver.prototxt", "-gpu", "0,1")
    assert "asks for 2 GPUs" not in plain.stderr
