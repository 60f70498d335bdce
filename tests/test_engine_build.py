"""The engine as installed: layer registry, the caffe command, Caffe's own
gtest for the Unpooling layer, and the CUDA build's refusal to go on without
a toolkit (the CUDA build itself is checked in the image, test_docker.py)."""
from __future__ import annotations

import os
import subprocess

import pytest

from helpers import ROOT, VENV_BIN, run_find_python, run_python


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


def test_python_layers_are_registered_by_pycaffe_not_libcaffe(cpu_prefix):
    """Engine patch 0016: libcaffe links no Python, so the compiled tool
    alone knows no Python layer type; pycaffe's module registers it."""
    needed = subprocess.run(["readelf", "-d", str(cpu_prefix / "lib" / "libcaffe.so")], capture_output=True,
                            text=True, check=True).stdout
    assert "libpython" not in needed and "boost_python" not in needed, needed
    net = ('layer { name: "d" type: "Python" top: "x" '
           'python_param { module: "no_such_module" layer: "L" } }')
    with_tool = subprocess.run([str(cpu_prefix / "bin" / "caffe"), "time", "-model", "/dev/stdin", "-iterations",
                                "1"], input=net, capture_output=True, text=True, timeout=60)
    assert with_tool.returncode != 0 and "Unknown layer type: Python" in with_tool.stderr, with_tool.stderr[-2000:]
    # The caffe command (the tool inside a Python with pycaffe) gets as far
    # as importing the layer's module.
    with_command = subprocess.run([str(VENV_BIN / "caffe"), "time", "-model", "/dev/stdin", "-iterations", "1"],
                                  input=net, capture_output=True, text=True, timeout=60)
    assert with_command.returncode != 0 and "No module named 'no_such_module'" in with_command.stderr, \
        with_command.stderr[-2000:]


def test_find_python_takes_an_interpreter_of_that_version_with_headers(tmp_path):
    """The override is taken only when it is that version with Python.h;
    an unknown version fails naming how to get one."""
    import sys
    import sysconfig
    here = "%d.%d" % sys.version_info[:2]
    found = run_find_python(here, {f"DECONVNET_PYTHON_{here.replace('.', '_')}": sys.executable})
    assert found.returncode == 0 and found.stdout.strip() == sys.executable, found.stderr
    assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
    liar = tmp_path / "python"
    liar.write_text("#!/bin/sh\nexit 1\n")
    liar.chmod(0o755)
    other = run_find_python(here, {f"DECONVNET_PYTHON_{here.replace('.', '_')}": str(liar)})
    assert other.stdout.strip() != str(liar)
    missing = run_find_python("3.99")
    assert missing.returncode == 1 and "pyenv install 3.99" in missing.stderr and "python3.99-dev" in missing.stderr


@pytest.mark.parametrize("args, message", [
    (["--python", "3.9"], "Python 3.9 is not one the wheels are made for (3.10 3.11 3.12 3.13"),
    (["--python", "/no/such/python"], "neither X.Y nor an interpreter's path"),
    (["--python", "3.12", "--all-pythons"], "exclude each other"),
])
def test_wheel_python_choice_is_checked(args, message):
    out = subprocess.run(["bash", "scripts/build_wheel.sh", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and message in out.stderr, out.stderr


def test_pycaffe_build_refuses_a_core_without_its_sources(tmp_path):
    """A core install tree from before build_pycaffe.sh (no share/Caffe/pycaffe)."""
    (tmp_path / "install" / "lib").mkdir(parents=True)
    out = subprocess.run(["bash", "engine/build_pycaffe.sh", "--prefix", str(tmp_path / "install")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "rebuild it with engine/build_caffe.sh" in out.stderr, out.stderr
