"""Issue 29: the GPU batch from the card's free memory (fake figures, a fake
CUDA runtime built here), and the cores tools/infer.py's --workers default
counts (affinity, cgroup quota, Slurm)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deconvnet.common.machine import usable_cores
from deconvnet.infer import memory

from helpers import write

MiB, GiB = 2**20, 2**30
FAKE_RUNTIME = r"""
#include <stddef.h>
int cudaMemGetInfo(size_t *free, size_t *total) {
    if (FAKE_STATUS) return FAKE_STATUS;
    *free = (size_t)FAKE_FREE; *total = (size_t)FAKE_TOTAL; return 0;
}
"""


def fake_runtime(folder: Path, free: int, total: int, status: int = 0) -> Path:
    """A libcudart answering cudaMemGetInfo with these figures."""
    source = write(folder / "fake_cudart.c", FAKE_RUNTIME)
    library = folder / f"libcudart-fake{status}.so.13"
    subprocess.run(["gcc", "-shared", "-fPIC", f"-DFAKE_FREE={free}ULL", f"-DFAKE_TOTAL={total}ULL",
                    f"-DFAKE_STATUS={status}", "-o", str(library), str(source)], check=True)
    return library


def test_the_gpu_batch_by_hand():
    # 10000 MiB free, 90% of it 9000; less 1000 fixed: 8000 MiB hold 20 proposals of 400 MiB;
    # 50 proposals then go in 3 passes, evened out to 17, 17, 16.
    assert memory.choose_gpu_batch(400 * MiB, 1000 * MiB, 50, 10000 * MiB) == 17
    # 24 fit: still 3 passes (50 / 24), 17 each.
    assert memory.choose_gpu_batch(300 * MiB, 1800 * MiB, 50, 10000 * MiB) == 17
    # 25 fit exactly: 2 passes of 25.
    assert memory.choose_gpu_batch(288 * MiB, 1800 * MiB, 50, 10000 * MiB) == 25
    # An H200's 139 GiB: all 50 in one pass, never more than the proposals.
    assert memory.choose_gpu_batch(432 * MiB, 2 * GiB, 50, 139 * GiB) == 50
    # Less free than the fixed part: one proposal a pass (Caffe then says out of memory itself).
    assert memory.choose_gpu_batch(432 * MiB, 2 * GiB, 50, GiB) == 1


def test_the_gpu_batch_of_a_net_with_a_fake_runtime(caffe, tmp_path, caplog):
    from deconvnet.net import nets

    from caffe.proto import caffe_pb2

    deploy = write(tmp_path / "deploy.prototxt", str(nets.deconvnet_deploy(size=nets.Size(64, 8))))
    net = caffe.Net(str(deploy), caffe.TEST)
    net.save(str(tmp_path / "w.caffemodel"))
    # Independent counts: the layers' types in the prototxt text, the weights in the saved file.
    text = deploy.read_text()
    cudnn_layers = len(re.findall(r'type: "(?:Convolution|Deconvolution)"', text))
    saved = caffe_pb2.NetParameter()
    saved.ParseFromString((tmp_path / "w.caffemodel").read_bytes())
    weights = 4 * sum(len(blob.data) for layer in saved.layer for blob in layer.blobs)
    assert memory.cudnn_workspace_bytes(net) == cudnn_layers * 8 * MiB * 3 > 0
    assert memory.parameter_bytes(net) == weights
    per = memory.bytes_per_example(net)

    free, total = 6 * GiB, 8 * GiB
    runtime = fake_runtime(tmp_path, free, total)
    assert memory.gpu_memory([str(runtime)]) == (free, total)
    fixed = weights + cudnn_layers * 24 * MiB + 100 * MiB
    fits = int((free * 0.9 - fixed) // per)
    passes = -(-50 // min(fits, 50))
    with caplog.at_level("INFO"):
        batch = memory.gpu_batch(net, 50, reserved=100 * MiB, memory=(free, total))
    assert batch == -(-50 // passes)
    assert f"batch {batch}:" in caplog.text and "FCN-8s 100 MiB" in caplog.text
    # A card with room for 3.5 proposals beside the weights and workspaces: 17 passes of 3 (50 / 3 = 16.7).
    small = int((weights + cudnn_layers * 24 * MiB + 3.5 * per) / 0.9)
    assert memory.gpu_batch(net, 50, memory=(small, total)) == 3


def test_a_grouped_convolution_counts_a_workspace_per_group(caffe, tmp_path):
    net_text = """
input: "data" input_shape { dim: 1 dim: 4 dim: 8 dim: 8 }
layer { name: "g" type: "Convolution" bottom: "data" top: "g"
        convolution_param { num_output: 6 kernel_size: 3 group: 2 } }
layer { name: "r" type: "ReLU" bottom: "g" top: "g" }
layer { name: "c" type: "Convolution" bottom: "g" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }
"""
    net = caffe.Net(str(write(tmp_path / "g.prototxt", net_text)), caffe.TEST)
    assert memory.cudnn_workspace_bytes(net) == (2 + 1) * 24 * MiB
    relu_only = 'input: "data" input_shape { dim: 1 dim: 4 dim: 8 dim: 8 }\n' \
                'layer { name: "r" type: "ReLU" bottom: "data" top: "data" }\n'
    assert memory.cudnn_workspace_bytes(caffe.Net(str(write(tmp_path / "r.prototxt", relu_only)), caffe.TEST)) == 0


def test_gpu_memory_errors_name_the_cause(tmp_path):
    with pytest.raises(RuntimeError, match="CPU-only build"):
        memory.gpu_memory(["/usr/lib/x86_64-linux-gnu/libc.so.6"])
    with pytest.raises(RuntimeError, match="CUDA error 2"):
        memory.gpu_memory([str(fake_runtime(tmp_path, 1, 1, status=2))])


def cgroup_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")


def test_usable_cores_by_affinity_quota_and_slurm(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    job = "system.slice/job_9/step_0"
    cgroup_tree(tmp_path / "v2", {"cpu.max": "max 100000", "system.slice/job_9/cpu.max": "150000 100000",
                                  f"{job}/cpu.max": "max 100000"})
    (tmp_path / "cgroup2").write_text(f"0::/{job}\n")
    # 1.5 cores of quota on the job's group: 2 cores usable (rounded up), or fewer by affinity.
    assert usable_cores({}, tmp_path / "cgroup2", tmp_path / "v2") == min(affinity, 2)
    cgroup_tree(tmp_path / "v1", {"cpu,cpuacct/slurm/cpu.cfs_quota_us": "100000",
                                  "cpu,cpuacct/slurm/cpu.cfs_period_us": "100000",
                                  "cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"})
    (tmp_path / "cgroup1").write_text("5:cpu,cpuacct:/slurm\n4:memory:/slurm\n")
    assert usable_cores({}, tmp_path / "cgroup1", tmp_path / "v1") == 1
    # No quota anywhere: the affinity; Slurm's count lowers it.
    cgroup_tree(tmp_path / "none", {"cpu.max": "max 100000"})
    (tmp_path / "cgroup0").write_text("0::/\n")
    assert usable_cores({}, tmp_path / "cgroup0", tmp_path / "none") == affinity
    assert usable_cores({"SLURM_CPUS_PER_TASK": "1"}, tmp_path / "cgroup0", tmp_path / "none") == 1
    assert usable_cores({"SLURM_CPUS_PER_TASK": "64"}, tmp_path / "cgroup0", tmp_path / "none") == affinity


def test_peak_by_hand(tmp_path):
    """The peak the benchmarks report against: cores x clock x float
    operations a cycle (64 with AVX-512, 32 with AVX2 FMA, 16 otherwise)."""
    from deconvnet.common.machine import peak_gflops

    for flags, per_cycle in (("fpu sse2 avx2 fma", 32), ("fpu avx2 fma avx512f", 64), ("fpu sse2", 16)):
        info = write(tmp_path / "cpuinfo", f"processor\t: 0\ncpu MHz\t\t: 2600.000\nflags\t\t: {flags}\n")
        peak, counted = peak_gflops(info)
        assert peak == pytest.approx(usable_cores() * 2.6 * per_cycle) and f"{per_cycle} flops/cycle" in counted


def test_blas_threads_are_set_in_caffes_openblas(tmp_path):
    """set_blas_threads reaches the OpenBLAS pycaffe loaded (a fresh process:
    the count is process-wide)."""
    code = ("import caffe\nfrom deconvnet.common.blas import blas_threads, set_blas_threads\n"
            "print(blas_threads(), set_blas_threads(1), blas_threads())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="2"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["2", "1", "1"]
