"""The engine as installed: layer registry, the caffe command, Caffe's own
gtest for the Unpooling layer, and the CUDA build's refusal to go on without
a toolkit (the CUDA build itself is checked in the image, test_docker.py)."""
from __future__ import annotations

import os
import subprocess

import pytest

from helpers import ROOT, VENV_BIN, run_python


def test_unpooling_is_registered_in_venv_python():
    # Exactly the acceptance command, in a fresh interpreter of the venv.
    out = subprocess.run(
        [str(VENV_BIN / "python"), "-c", "import caffe; print('Unpooling' in caffe.layer_type_list())"],
        capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_caffe_command_on_venv_path():
    out = subprocess.run([str(VENV_BIN / "caffe"), "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "caffe version 1.0.0" in (out.stdout + out.stderr)


def test_pycaffe_numpy_and_protobuf_roundtrip(caffe):
    """Our patches to caffe.io: datum round trip under numpy 2."""
    import numpy as np

    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    datum = caffe.io.array_to_datum(arr, label=7)
    back = caffe.io.datum_to_array(caffe.proto.caffe_pb2.Datum.FromString(datum.SerializeToString()))
    np.testing.assert_array_equal(back, arr)
    back[0, 0, 0] = 99  # a writable copy, not a view of the protobuf bytes


def test_unpooling_gtest_passes(cpu_prefix):
    testbin = cpu_prefix / "bin" / "test.testbin"
    assert testbin.exists(), f"{testbin} missing"
    out = subprocess.run([str(testbin), "--gtest_filter=*Unpooling*:-*GPU*"], capture_output=True,
                         text=True, timeout=600, env=dict(os.environ, GLOG_minloglevel="2"))
    assert out.returncode == 0, out.stdout[-3000:]
    assert "[  PASSED  ]" in out.stdout
    # CPU float and double: setup x3, hand-computed, odd sizes, gradient.
    assert "12 tests" in out.stdout, out.stdout[-2000:]


def test_cuda_variant_without_a_toolkit_fails_loudly(tmp_path):
    """A CUDA build with no nvcc stops before compiling anything, naming the
    fix, instead of quietly building a CPU-only library."""
    out = subprocess.run(["bash", str(ROOT / "engine" / "build_caffe.sh"), "--cuda", "--cuda-libs",
                          str(ROOT / ".cache" / "cuda-wheels")], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, CUDA_HOME=str(tmp_path)))
    assert out.returncode != 0
    assert f"no nvcc in {tmp_path}/bin" in out.stderr and "CUDA_HOME" in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("args, message", [
    (["--arch", "90"], "--arch needs --cuda"),
    (["--cuda", "--arch", "sm_90"], "--arch takes compute capabilities"),
])
def test_arch_option_is_checked(args, message):
    out = subprocess.run(["bash", str(ROOT / "engine" / "build_caffe.sh"), *args], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and message in out.stderr, out.stderr[-2000:]


def test_import_caffe_needs_no_scikit_image(tmp_path):
    """Patch 0012: caffe.io imports scikit-image and scipy only where used."""
    code = ("import sys\nsys.modules['skimage'] = None\nsys.modules['scipy'] = None\n"
            "import caffe\nprint('imported', 'Unpooling' in caffe.layer_type_list())")
    result = run_python(code, tmp_path)
    assert result.returncode == 0 and "imported True" in result.stdout, result.stderr[-2000:]
