#!/usr/bin/env python3
"""Benchmark of tools/convert_release.py on full-size stand-ins of the
released files (deconvnet.net.stand_in_weights: the paper's DeconvNet,
252M parameters, and the 2014 FCN-8s, 134M): wall time and peak resident
memory of each conversion, each in its own process, against the targets
of issue 27 (under 2 minutes and 6 GiB on 2 cores). Prints Markdown for
docs/BENCHMARKS.md."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deconvnet.common.cli import ROOT, run_tool
from deconvnet.common.machine import cpu_name
from deconvnet.net.stand_in_weights import STAND_INS, write_stand_in

TOOL = ROOT / "tools" / "convert_release.py"
# Runs the tool in this process and reports its own peak RSS (ru_maxrss, KiB).
MEASURE = ("import resource, runpy, sys, json\n"
           "sys.argv = sys.argv[1:]\n"
           "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
           "except SystemExit as stop:\n    code = stop.code or 0\n"
           "else:\n    code = 0\n"
           "print(json.dumps(dict(code=code, rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))\n")
TARGET_SECONDS, TARGET_GIB = 120, 6


def parameters(which: str) -> int:
    import numpy as np

    return sum(int(np.prod(shape)) for layer in STAND_INS[which][1] for shape in layer[2])


def measure(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one conversion."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MEASURE, str(TOOL), *args], capture_output=True, text=True,
                          env={**os.environ, "GLOG_minloglevel": "2"})
    seconds = time.perf_counter() - start
    report = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    if done.returncode or report.get("code"):
        raise SystemExit(f"convert_release {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return seconds, report["rss_kib"] / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="where the stand-ins and outputs go (default: a temporary "
                                                    "folder, removed after; needs about 4 GB)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        inference = write_stand_in("deconvnet-inference", folder / "DeconvNet_trainval_inference.caffemodel")
        snapshot = write_stand_in("deconvnet-stage2", folder / "stage_2_train_result.caffemodel")
        fcn = write_stand_in("fcn8s-pascal-2014", folder / "fcn-8s-pascal.caffemodel")
        rows = []
        for label, which, tool_args in (
                ("deconvnet (unfolded)", "deconvnet-inference", ["deconvnet", inference, folder / "a.caffemodel"]),
                ("deconvnet --folded", "deconvnet-inference",
                 ["deconvnet", inference, folder / "b.caffemodel", "--folded"]),
                ("deconvnet-train", "deconvnet-stage2", ["deconvnet-train", snapshot, folder / "c.caffemodel"]),
                ("fcn8s-2014", "fcn8s-pascal-2014", ["fcn8s-2014", fcn, folder / "d.caffemodel"])):
            seconds, rss = measure([str(a) for a in tool_args])
            rows.append((label, parameters(which), seconds, rss))
            print(f"{label}: {seconds:.1f} s, {rss:.0f} MiB", file=sys.stderr, flush=True)
    print(f"Conversion of full-size stand-ins, {time.strftime('%Y-%m-%d')}; {cpu_name()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}\n")
    print("| conversion | parameters | wall (s) | peak RSS (MiB) | within 2 min and 6 GiB |")
    print("|---|---|---|---|---|")
    for label, count, seconds, rss in rows:
        ok = seconds < TARGET_SECONDS and rss < TARGET_GIB * 1024
        print(f"| {label} | {count / 1e6:.0f}M | {seconds:.1f} | {rss:.0f} | {'yes' if ok else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "benchmarks/convert_release"))
