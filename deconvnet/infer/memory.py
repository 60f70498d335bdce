"""How many proposals one forward pass can take: the net's memory per
proposal against the memory the machine (CPU) or the card (GPU) has.

A Caffe forward pass keeps every blob of the batch, and some layers keep
buffers the size of their input besides: BatchNorm two (``x_norm_`` and
``temp_``), an in-place Scale one (a copy of its input, kept for a backward
pass that inference never runs). Those are counted from the loaded net;
convolution buffers and the weights do not grow with the batch, nor do the
buffers of patch 0018's batched CPU convolution (at most
CAFFE_CPU_CONV_BATCH_MIB, 64 MiB, a thread) and patch 0019's transformed
Winograd filters (16 MiB for VGG's 512x512 layers), which are set aside. The count
agrees with the peak memory measured by tools/benchmarks/inference.py
(docs/BENCHMARKS.md)."""
from __future__ import annotations

import ctypes
import logging
import math
from pathlib import Path

from deconvnet.common.machine import cgroup_path, loaded_libraries

LOG = logging.getLogger(__name__)

# Buffers the size of their (first) input that a layer type keeps in a forward pass.
INPUT_COPIES = {"BatchNorm": 2, "Scale": 1}
# The part of the available memory the batch may take: the rest is for the
# score maps of all proposals, aggregation, the CRF and FCN-8s.
BATCH_SHARE = 0.6
FLOAT_BYTES = 4
# Patch 0018's default budget for the columns of a group of images, and patch
# 0019's filters transformed for Winograd's F(2x2, 3x3) (docs/ENGINE.md).
CONV_BATCH_BYTES = (64 + 16) << 20


def bytes_per_example(net) -> int:
    """Bytes of a pycaffe Net's forward pass that grow with each example."""
    batch = next(iter(net.blobs.values())).data.shape[0]
    floats = sum(blob.count for blob in net.blobs.values())
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        copies = INPUT_COPIES.get(layer.type, 0)
        bottoms, tops = net.bottom_names[name], net.top_names[name]
        if layer.type == "Scale" and bottoms[:1] != tops[:1]:
            copies = 0  # Scale copies its input only when it runs in place
        if copies and bottoms:
            floats += copies * net.blobs[bottoms[0]].count
    return math.ceil(floats * FLOAT_BYTES / batch)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# cgroup v2 (one hierarchy) and v1 (a memory hierarchy): limit and usage files.
CGROUP_FILES = {"v2": ("memory.max", "memory.current"), "v1": ("memory.limit_in_bytes", "memory.usage_in_bytes")}
NO_LIMIT = 1 << 60  # v1 writes "no limit" as a huge number, v2 as "max"


def cgroup_headroom(proc_cgroup: Path = Path("/proc/self/cgroup"),
                    root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The least (limit - usage) over every memory cgroup on this process's
    own path, from its group up to the mount's root, for v2 and v1; None
    when no level is limited."""
    least = None
    for v2, folder in cgroup_path("memory", ("memory",), proc_cgroup, root):
        limit_name, usage_name = CGROUP_FILES["v2" if v2 else "v1"]
        limit, usage = _read_int(folder / limit_name), _read_int(folder / usage_name)
        if limit is not None and usage is not None and limit < NO_LIMIT:
            least = max(limit - usage, 0) if least is None else min(least, max(limit - usage, 0))
    return least


def available_memory(meminfo: Path = Path("/proc/meminfo"), proc_cgroup: Path = Path("/proc/self/cgroup"),
                     cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Bytes this process can still use: the kernel's MemAvailable, or less
    when a cgroup on its path (a container, a Slurm job) limits it."""
    available = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        import os

        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    headroom = cgroup_headroom(proc_cgroup, cgroup_root)
    return available if headroom is None else min(available, headroom)


def choose_batch(per_example: int, proposals: int, available: int, share: float = BATCH_SHARE) -> int:
    """The largest batch of at most ``proposals`` whose growing memory fits in
    ``share`` of ``available``, evened out over the passes it takes (50 in
    at most 23 a pass: 17, 17, 16 rather than 23, 23, 4); at least 1."""
    fits = max(1, int(available * share // max(per_example, 1)))
    passes = math.ceil(proposals / min(fits, proposals))
    return math.ceil(proposals / passes)


def cpu_batch(net, proposals: int, reserved: int = 0) -> int:
    """choose_batch for ``net`` on this machine, logged; ``reserved`` bytes
    (the pipelined run's queues) are taken off the available memory first."""
    per, available = bytes_per_example(net), max(available_memory() - reserved - CONV_BATCH_BYTES, 0)
    batch = choose_batch(per, proposals, available)
    LOG.info("batch %d: %.0f MiB per proposal, %.1f GiB available (%.0f%% of it for the batch; --batch sets it)",
             batch, per / 2**20, available / 2**30, BATCH_SHARE * 100)
    return batch


# --- the GPU -------------------------------------------------------------------
# On the GPU only the networks live in device memory (aggregation and the CRF
# run on the CPU), so the batch may take most of what is free; the rest is
# left for the allocator's rounding and for cuDNN's own buffers.
GPU_SHARE = 0.9
# BVLC Caffe's cudnn_conv_layer.cpp (and the deconvolution layer) choose
# algorithms within 8 MiB of workspace and keep a workspace for each of
# CUDNN_STREAMS_PER_GROUP streams per group: a bound per layer that does not
# grow with the batch.
CUDNN_WORKSPACE_LIMIT = 8 * 2**20
CUDNN_STREAMS_PER_GROUP = 3
CUDNN_LAYERS = ("Convolution", "Deconvolution")


def parameter_bytes(net) -> int:
    """The weights a net uploads to the device."""
    return sum(blob.count for params in net.params.values() for blob in params) * FLOAT_BYTES


def cudnn_workspace_bytes(net) -> int:
    """The most cuDNN's workspaces of ``net`` can take: the per-layer bound
    times its groups (read from the weights: a Convolution's are (out,
    in/group, kh, kw), a Deconvolution's (in, out/group, kh, kw))."""
    total = 0
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        if layer.type not in CUDNN_LAYERS or not len(layer.blobs):
            continue
        if layer.type == "Convolution":
            channels = net.blobs[net.bottom_names[name][0]].data.shape[1]
        else:
            channels = net.blobs[net.top_names[name][0]].data.shape[1]
        groups = max(1, channels // max(layer.blobs[0].data.shape[1], 1))
        total += CUDNN_WORKSPACE_LIMIT * CUDNN_STREAMS_PER_GROUP * groups
    return total


def _cuda_runtime(libraries: list[str]):
    """The CUDA runtime pycaffe loaded (a wheel's may be renamed by
    auditwheel: libcudart-1a2b3c4d.so.13), or None in a CPU-only build."""
    path = next((p for p in libraries if Path(p).name.startswith("libcudart")), None)
    return None if path is None else ctypes.CDLL(path)


def gpu_memory(libraries: list[str] | None = None) -> tuple[int, int]:
    """(free, total) bytes of the current device, from cudaMemGetInfo of
    the runtime Caffe already loaded (so on the device Caffe chose)."""
    runtime = _cuda_runtime(loaded_libraries() if libraries is None else libraries)
    if runtime is None:
        raise RuntimeError("no CUDA runtime is loaded: this Caffe is a CPU-only build")
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    status = runtime.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total))
    if status != 0:
        raise RuntimeError(f"cudaMemGetInfo failed with CUDA error {status}")
    return free.value, total.value


def choose_gpu_batch(per_example: int, fixed: int, proposals: int, free: int, share: float = GPU_SHARE) -> int:
    """The largest batch of at most ``proposals`` whose memory, ``fixed``
    (weights, cuDNN's workspaces, a partner net) plus ``per_example`` for
    each proposal, fits in ``share`` of ``free``; evened out over the
    passes like choose_batch; at least 1 (a card too small for one proposal
    fails in Caffe with its own out-of-memory message)."""
    fits = max(1, int((free * share - fixed) // max(per_example, 1)))
    passes = math.ceil(proposals / min(fits, proposals))
    return math.ceil(proposals / passes)


def gpu_batch(net, proposals: int, reserved: int = 0, memory: tuple[int, int] | None = None) -> int:
    """choose_gpu_batch for ``net`` on the current device, logged;
    ``reserved``: device bytes of other nets (FCN-8s) that share the card."""
    free, total = gpu_memory() if memory is None else memory
    per, weights, workspace = bytes_per_example(net), parameter_bytes(net), cudnn_workspace_bytes(net)
    batch = choose_gpu_batch(per, weights + workspace + reserved, proposals, free)
    LOG.info("batch %d: %.0f MiB per proposal; %.1f of %.1f GiB free on the GPU, %.0f%% of it for the net: "
             "weights %.0f MiB, cuDNN workspace up to %.0f MiB%s (--batch sets it)", batch, per / 2**20,
             free / 2**30, total / 2**30, GPU_SHARE * 100, weights / 2**20, workspace / 2**20,
             f", FCN-8s {reserved / 2**20:.0f} MiB" if reserved else "")
    return batch
