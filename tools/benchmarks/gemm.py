#!/usr/bin/env python3
"""Benchmark: how close the BLAS's float32 GEMM comes to the machine's peak
on the products Caffe's convolutions make, one image at a time and for
groups of images (patch 0018), in one run.

Each row is a layer shape of the full DeconvNet, named by an encoder layer
(the decoder's mirror layers have the same products): M output channels, K
= input channels x 9 (the im2col rows), N = output positions x images. The
rate is the best of --repeats calls of cblas_sgemm through ctypes, on the
library given (default: the OpenBLAS Caffe links, as pycaffe loads it; e.g.
--library /path/libmkl_rt.so.2 for MKL from PyPI). The peak is counted as
in tools/benchmarks/inference.py. Prints Markdown for docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import ctypes
import sys
import time

import numpy as np

from deconvnet.common.cli import run_tool
from deconvnet.common.machine import cpu_name, loaded_libraries, peak_gflops

# (layer, M, K, output positions) of the full net's convolutions at 224 x 224.
SHAPES = (("conv1_2", 64, 64 * 9, 224 * 224), ("conv2_2", 128, 128 * 9, 112 * 112),
          ("conv3_3", 256, 256 * 9, 56 * 56), ("conv4_3", 512, 512 * 9, 28 * 28),
          ("conv5_3", 512, 512 * 9, 14 * 14))
GROUPS = (1, 2, 4, 8, 16)
ROW_MAJOR, NO_TRANS = 101, 111


def openblas_path() -> str:
    import caffe  # noqa: F401  (loads Caffe's BLAS)

    found = [p for p in loaded_libraries() if "blas" in p.rsplit("/", 1)[-1]]
    if not found:
        raise SystemExit("benchmark: no BLAS library is loaded by pycaffe; give --library")
    return found[0]


def gflops(sgemm, m: int, k: int, n: int, repeats: int) -> float:
    a = np.random.default_rng(0).random((m, k), np.float32)
    b = np.random.default_rng(1).random((k, n), np.float32)
    c = np.empty((m, n), np.float32)
    ptr = ctypes.POINTER(ctypes.c_float)

    def call() -> None:
        sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, m, n, k, ctypes.c_float(1.0), a.ctypes.data_as(ptr), k,
              b.ctypes.data_as(ptr), n, ctypes.c_float(0.0), c.ctypes.data_as(ptr), n)

    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", help="BLAS shared library to time (default: the one pycaffe loads)")
    parser.add_argument("--repeats", type=int, default=3, help="calls timed per shape (default 3)")
    parser.add_argument("--max-mib", type=int, default=256, help="skip groups whose columns exceed this (default 256)")
    args = parser.parse_args(argv)
    path = args.library or openblas_path()
    sgemm = ctypes.CDLL(path).cblas_sgemm
    peak, counted = peak_gflops()
    print(f"Machine: {cpu_name()}; peak {peak:.0f} GFLOP/s ({counted}); BLAS: {path}\n")
    print("| layer | M x K | positions | " + " | ".join(f"{g} image{'s' * (g > 1)}" for g in GROUPS) + " |")
    print("|---|---|---|" + "---|" * len(GROUPS))
    for name, m, k, positions in SHAPES:
        cells = []
        for group in GROUPS:
            if k * positions * group * 4 > args.max_mib << 20:
                cells.append("")
                continue
            rate = gflops(sgemm, m, k, positions * group, args.repeats)
            cells.append(f"{rate:.0f} ({rate / peak * 100:.0f}%)")
        print(f"| {name} | {m} x {k} | {positions} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "benchmark gemm"))
