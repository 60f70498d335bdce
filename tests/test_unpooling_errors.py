"""Bad input to the Unpooling layer stops the process with a message naming
the layer. Caffe's CHECK failures abort, so each case runs in a subprocess."""
from __future__ import annotations

import pytest

from helpers import run_python, write

HEADER = """
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }
layer { name: "pool1" type: "Pooling" bottom: "x" top: "pool1" top: "pool1_mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""

SCRIPT = """
import caffe, numpy as np
caffe.set_mode_cpu()
net = caffe.Net("net.prototxt", caffe.TEST)
fill = {fill!r}
if fill is not None:
    net.blobs["mask"].data[...] = float(fill)
net.forward()
print("FORWARD_DONE")
"""


def run_net(tmp_path, layers: str, fill=None):
    write(tmp_path / "net.prototxt", HEADER + layers)
    return run_python(SCRIPT.format(fill=None if fill is None else str(fill)), cwd=tmp_path)


def assert_stopped(result, *phrases: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "FORWARD_DONE" not in result.stdout
    assert "Unpooling layer 'unpool1'" in result.stderr, result.stderr[-2000:]
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr[-2000:]


def test_mask_shape_differs(tmp_path):
    layers = """
layer { name: "mask" type: "Input" top: "mask" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 2 } } }
layer { name: "unpool1" type: "Unpooling" bottom: "pool1" bottom: "mask" top: "unpool1"
  unpooling_param { unpool_size: 4 } }
"""
    assert_stopped(run_net(tmp_path, layers), "mask shape", "differs from input shape")


@pytest.mark.parametrize("bad_index", [16.0, 1000.0, -1.0, float("nan")])
def test_mask_index_outside_output_plane(tmp_path, bad_index):
    layers = """
layer { name: "mask" type: "Input" top: "mask" input_param { shape { dim: 1 dim: 2 dim: 2 dim: 2 } } }
layer { name: "unpool1" type: "Unpooling" bottom: "pool1" bottom: "mask" top: "unpool1"
  unpooling_param { unpool_size: 4 } }
"""
    result = run_net(tmp_path, layers, fill=bad_index)
    assert_stopped(result, "outside the 4x4 output plane")


def test_valid_hand_made_mask_runs(tmp_path):
    """The same net with in-range indices runs: the failures above are real."""
    layers = """
layer { name: "mask" type: "Input" top: "mask" input_param { shape { dim: 1 dim: 2 dim: 2 dim: 2 } } }
layer { name: "unpool1" type: "Unpooling" bottom: "pool1" bottom: "mask" top: "unpool1"
  unpooling_param { unpool_size: 4 } }
"""
    result = run_net(tmp_path, layers, fill=15.0)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "FORWARD_DONE" in result.stdout


def test_missing_mask(tmp_path):
    layers = """
layer { name: "unpool1" type: "Unpooling" bottom: "pool1" top: "unpool1"
  unpooling_param { unpool_size: 4 } }
"""
    assert_stopped(run_net(tmp_path, layers), "missing mask")


def test_too_many_bottoms(tmp_path):
    layers = """
layer { name: "unpool1" type: "Unpooling" bottom: "pool1" bottom: "pool1_mask" bottom: "x"
  bottom: "pool1" top: "unpool1" unpooling_param { unpool_size: 4 } }
"""
    assert_stopped(run_net(tmp_path, layers), "takes 2 or 3 bottoms", "got 4")


def test_no_bottoms(tmp_path):
    layers = """
layer { name: "unpool1" type: "Unpooling" top: "unpool1" unpooling_param { kernel_size: 2 } }
"""
    assert_stopped(run_net(tmp_path, layers), "takes 2 or 3 bottoms", "got 0")


def test_size_from_kernel_and_stride_is_refused(tmp_path):
    """Issue 12, item 8: a 7x7 input pools to 4x4; kernel and stride would
    say 8x8 and put the last row's and column's switches at wrong places."""
    header = """
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 7 dim: 7 } } }
layer { name: "pool1" type: "Pooling" bottom: "x" top: "pool1" top: "pool1_mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "unpool1" type: "Unpooling" bottom: "pool1" bottom: "pool1_mask" top: "unpool1"
  unpooling_param { kernel_size: 2 stride: 2 } }
"""
    write(tmp_path / "net.prototxt", header)
    result = run_python(SCRIPT.format(fill=None), cwd=tmp_path)
    assert_stopped(result, "needs its output size", "inputs of 7 and 8 both pool to 4", "unpool_size")


@pytest.mark.parametrize("param, phrase", [
    ("unpool_size: 3000000000", "larger than 2147483647"),
    ("unpool_h: 100000 unpool_w: 100000", "more than a Caffe blob's limit"),
])
def test_huge_sizes_name_the_layer(tmp_path, param, phrase):
    """Issue 12, item 15: not "cannot infer the output size", and the layer named."""
    layers = f"""
layer {{ name: "unpool1" type: "Unpooling" bottom: "pool1" bottom: "pool1_mask" top: "unpool1"
  unpooling_param {{ {param} }} }}
"""
    assert_stopped(run_net(tmp_path, layers), phrase)
