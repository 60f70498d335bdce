#!/usr/bin/env python3
"""Benchmark: the native Unpooling layer against the same operation written as
a Caffe Python layer (python_layers.unpooling), on the same blobs.

The default size is the paper's unpool1: batch 8, 64 channels, 112x112 pooled
values unpooled to 224x224. Both layers run forward + backward in one process,
alternately, and the median of each is reported with their ratio, as a
Markdown table ready for docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deconvnet.common.cli import run_tool  # first: it quiets glog before Caffe loads
from deconvnet.common.machine import cpu_name

import caffe

NATIVE = """layer { name: "unpool1" type: "Unpooling" bottom: "pool1" bottom: "pool1_mask"
  top: "unpool1" unpooling_param { unpool_h: %(h)d unpool_w: %(w)d } }"""
PYTHON = """layer { name: "unpool1" type: "Python" bottom: "pool1" bottom: "pool1_mask"
  top: "unpool1" python_param { module: "python_layers.unpooling" layer: "UnpoolingLayer"
  param_str: '{"unpool_h": %(h)d, "unpool_w": %(w)d}' } }"""


def unpool_net(layer: str, n: int, c: int, h: int, w: int, folder: Path) -> caffe.Net:
    text = f"""force_backward: true
layer {{ name: "pool1" type: "Input" top: "pool1" top: "pool1_mask"
  input_param {{ shape {{ dim: {n} dim: {c} dim: {h // 2} dim: {w // 2} }} }} }}
{layer % dict(h=h, w=w)}
"""
    path = folder / f"net_{abs(hash(layer))}.prototxt"
    path.write_text(text)
    return caffe.Net(str(path), caffe.TEST)


def max_pool_mask(rng: np.random.Generator, n: int, c: int, h: int, w: int) -> np.ndarray:
    """A valid 2x2/2 MAX pooling mask: one random position per window."""
    ph, pw = h // 2, w // 2
    dy = rng.integers(0, 2, size=(n, c, ph, pw))
    dx = rng.integers(0, 2, size=(n, c, ph, pw))
    rows = 2 * np.arange(ph)[:, None] + dy
    cols = 2 * np.arange(pw)[None, :] + dx
    return (rows * w + cols).astype(np.float32)


def time_forward_backward(net: caffe.Net, top_diff: np.ndarray, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        net.forward()
        net.blobs["unpool1"].diff[...] = top_diff
        net.backward()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=224, help="unpooled side (even)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    n, c, h, w = args.batch, args.channels, args.size, args.size

    caffe.set_mode_cpu()
    rng = np.random.default_rng(0)
    values = rng.standard_normal((n, c, h // 2, w // 2)).astype(np.float32)
    mask = max_pool_mask(rng, n, c, h, w)
    top_diff = rng.standard_normal((n, c, h, w)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        nets = {name: unpool_net(layer, n, c, h, w, Path(tmp))
                for name, layer in (("native C++", NATIVE), ("Python layer (numpy)", PYTHON))}
    for net in nets.values():
        net.blobs["pool1"].data[...] = values
        net.blobs["pool1_mask"].data[...] = mask
    # Same results, so the comparison is fair.
    outs = []
    for net in nets.values():
        time_forward_backward(net, top_diff, 1)
        outs.append((net.blobs["unpool1"].data.copy(), net.blobs["pool1"].diff.copy()))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])

    times: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(args.repeats):  # alternate, so machine noise hits both
        for name, net in nets.items():
            times[name] += time_forward_backward(net, top_diff, 1)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    native, python = medians["native C++"], medians["Python layer (numpy)"]

    print(f"Unpooling forward+backward, CPU, {n}x{c}x{h // 2}x{w // 2} -> {n}x{c}x{h}x{w}, "
          f"median of {args.repeats}")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    print()
    print("| implementation | forward+backward (ms) | relative |")
    print("|---|---|---|")
    for name, ms in medians.items():
        print(f"| {name} | {ms:.1f} | {ms / native:.2f}x |")
    print()
    print(f"native is {python / native:.1f}x faster than the Python layer")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "unpooling"))
