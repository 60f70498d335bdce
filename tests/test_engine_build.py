"""The engine as installed: layer registry, the caffe command, Caffe's own
gtest for the Unpooling layer, and the CUDA variant's compiled library."""
from __future__ import annotations

import os
import subprocess

from helpers import CAFFE_CACHE, ROOT, VENV_BIN


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


def test_cuda_variant_compiled_and_linked():
    """scripts/test.sh builds the CUDA variant first (it cannot run here)."""
    build = CAFFE_CACHE / "cuda"
    assert (build / ".complete").exists(), "no CUDA build; run scripts/setup.sh --cuda"
    lib = next((build / "install" / "lib").glob("libcaffe.so.*"))
    needed = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True).stdout
    for name in ("libcudart.so", "libcublas.so", "libcurand.so", "libcudnn.so", "libnccl.so"):
        assert name in needed, f"{lib} does not link {name}"
    symbols = subprocess.run(["nm", "-DC", str(lib)], capture_output=True, text=True).stdout
    assert "caffe::UnpoolingLayer<float>::Forward_gpu" in symbols
    assert "caffe::UnpoolingLayer<double>::Backward_gpu" in symbols
    cuobjdump = next((ROOT / ".cache" / "cuda-wheels").rglob("cuobjdump"))
    elves = subprocess.run([str(cuobjdump), "--list-elf", str(lib)], capture_output=True,
                           text=True).stdout
    for arch in ("sm_80", "sm_86", "sm_89", "sm_90"):
        assert arch in elves, f"no {arch} code in {lib}"
    ptx = subprocess.run([str(cuobjdump), "--list-ptx", str(lib)], capture_output=True,
                         text=True).stdout
    assert "sm_90" in ptx, "no PTX for newer GPUs"
    assert (build / "install" / "bin" / "test.testbin").exists()
    # Built with the pinned toolkit wheels unless CUDA_HOME chose another.
    toolkit = os.environ.get("CUDA_HOME", str(ROOT / ".cache" / "cuda-wheels" / "nvidia" / "cu13"))
    assert f"CUDA_TOOLKIT_ROOT_DIR_INTERNAL:INTERNAL={toolkit}\n" in (build / "build" / "CMakeCache.txt").read_text()


def test_cuda_variant_without_a_toolkit_fails_loudly(tmp_path):
    """A CUDA build with no nvcc stops before compiling anything, naming the
    fix, instead of quietly building a CPU-only library."""
    out = subprocess.run(["bash", str(ROOT / "engine" / "build_caffe.sh"), "--cuda", "--cuda-libs",
                          str(ROOT / ".cache" / "cuda-wheels")], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, CUDA_HOME=str(tmp_path)))
    assert out.returncode != 0
    assert f"no nvcc in {tmp_path}/bin" in out.stderr and "CUDA_HOME" in out.stderr, out.stderr[-2000:]
