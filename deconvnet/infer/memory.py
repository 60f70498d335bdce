"""How many proposals one CPU forward pass can take: the net's memory per
proposal against the memory the machine has.

A Caffe forward pass keeps every blob of the batch, and some layers keep
buffers the size of their input besides: BatchNorm two (``x_norm_`` and
``temp_``), an in-place Scale one (a copy of its input, kept for a backward
pass that inference never runs). Those are counted from the loaded net;
convolution buffers and the weights do not grow with the batch. The count
agrees with the peak memory measured by tools/benchmarks/inference.py
(docs/BENCHMARKS.md)."""
from __future__ import annotations

import logging
import math
from pathlib import Path

LOG = logging.getLogger(__name__)

# Buffers the size of their (first) input that a layer type keeps in a forward pass.
INPUT_COPIES = {"BatchNorm": 2, "Scale": 1}
# The part of the available memory the batch may take: the rest is for the
# score maps of all proposals, aggregation, the CRF and FCN-8s.
BATCH_SHARE = 0.6
FLOAT_BYTES = 4


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
    own path (/proc/self/cgroup), from its group up to the mount's root,
    for v2 and v1; None when no level is limited. A Slurm job's limit sits
    on a group deep below the root (/system.slice/slurmstepd.scope/job_42),
    which the root's files know nothing of."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    least = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, own = parts
        if hierarchy == "0" and controllers == "":
            base, (limit_name, usage_name) = root, CGROUP_FILES["v2"]
        elif "memory" in controllers.split(","):
            base, (limit_name, usage_name) = root / "memory", CGROUP_FILES["v1"]
        else:
            continue
        folder = base / own.strip().lstrip("/")
        while True:
            limit, usage = _read_int(folder / limit_name), _read_int(folder / usage_name)
            if limit is not None and usage is not None and limit < NO_LIMIT:
                least = max(limit - usage, 0) if least is None else min(least, max(limit - usage, 0))
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
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


def cpu_batch(net, proposals: int) -> int:
    """choose_batch for ``net`` on this machine, logged."""
    per, available = bytes_per_example(net), available_memory()
    batch = choose_batch(per, proposals, available)
    LOG.info("batch %d: %.0f MiB per proposal, %.1f GiB available (%.0f%% of it for the batch; --batch sets it)",
             batch, per / 2**20, available / 2**30, BATCH_SHARE * 100)
    return batch
