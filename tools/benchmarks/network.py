#!/usr/bin/env python3
"""Benchmark: forward/backward of the full DeconvNet with `caffe time`, against
the same architecture in PyTorch (deconvnet/net/torch_reference.py), in one run
on the CPU. Each side runs in its own process so that its peak memory (max
RSS) is its own. Prints a Markdown table for docs/BENCHMARKS.md.

Needs PyTorch in the venv: .venv/bin/pip install torch==2.13.0
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deconvnet.common.cli import ROOT, run_tool
from deconvnet.common.machine import cpu_name

CAFFE = ROOT / ".venv" / "bin" / "caffe"

# Runs a command and prints its peak RSS (KiB) on the last line.
MEASURE = ("import resource, subprocess, sys\n"
           "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
           "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr)\n"
           "print('MAXRSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
           "sys.exit(r.returncode)\n")


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[str, float]:
    """(stdout + stderr, peak RSS in MiB) of cmd."""
    result = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True,
                            env=env)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise SystemExit(f"benchmark: {cmd[0]} failed:\n{output[-3000:]}")
    rss = float(re.search(r"MAXRSS_KIB (\d+)", output).group(1)) / 1024
    return output, rss


def caffe_side(batch: int, iterations: int, folder: Path) -> dict:
    from deconvnet.net import nets

    from caffe import layers as L

    def data(n):
        n.data = L.Input(shape=dict(dim=[batch, 3, 224, 224]))
        n.label = L.Input(shape=dict(dim=[batch, 1, 224, 224]))

    model = folder / "deconvnet_time.prototxt"
    model.write_text(str(nets.deconvnet_train_test(True, "unused", batch, data=data)))
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    out, rss = run_measured([str(CAFFE), "time", "-model", str(model), "-iterations",
                             str(iterations)], env=env)

    def ms(label: str) -> float:
        return float(re.search(rf"Average {label}: ([\d.]+) ms", out).group(1))

    return dict(forward=ms("Forward pass"), backward=ms("Backward pass"),
                total=ms("Forward-Backward"), rss=rss)


def torch_worker(batch: int, iterations: int) -> None:
    """Runs in its own process: times PyTorch and prints JSON."""
    import torch

    from deconvnet.net.torch_reference import DeconvNet

    torch.manual_seed(0)
    net = DeconvNet().train()
    if batch == 1:
        # PyTorch refuses batch statistics over one value (fc6, fc7 are 1x1);
        # Caffe computes them (degenerate, see tests/test_nets.py). Those two
        # BatchNorms use running statistics instead: the same arithmetic.
        net.fc[0][1].eval()
        net.fc[1][1].eval()
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 21, (batch, 224, 224))
    forward, backward = [], []
    for i in range(iterations + 1):  # the first is a warm-up, as caffe time's
        net.zero_grad(set_to_none=False)
        start = time.perf_counter()
        loss = loss_fn(net(x), y)
        mid = time.perf_counter()
        loss.backward()
        end = time.perf_counter()
        if i:
            forward.append(mid - start)
            backward.append(end - mid)
    f, b = sum(forward) / iterations * 1e3, sum(backward) / iterations * 1e3
    print(json.dumps(dict(forward=f, backward=b, total=f + b, threads=torch.get_num_threads(),
                          version=torch.__version__)))


def torch_side(batch: int, iterations: int) -> dict:
    out, rss = run_measured([sys.executable, str(Path(__file__).resolve()), "--torch-worker",
                             "--batch", str(batch), "--iterations", str(iterations)])
    result = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    result["rss"] = rss
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_worker:
        torch_worker(args.batch, args.iterations)
        return 0
    try:
        import torch  # noqa: F401
    except ImportError:
        parser.error("PyTorch is needed for the reference side: .venv/bin/pip install torch==2.13.0")
    with tempfile.TemporaryDirectory() as tmp:
        caffe = caffe_side(args.batch, args.iterations, Path(tmp))
    ref = torch_side(args.batch, args.iterations)
    print(f"Full DeconvNet (Table 2, 252M parameters), train mode, batch {args.batch}, 224x224, CPU; "
          f"mean of {args.iterations} iterations after one warm-up")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores; PyTorch {ref['version']} "
          f"({ref['threads']} threads), Caffe with OpenBLAS")
    print()
    print("| implementation | forward (ms) | backward (ms) | forward+backward (ms) | peak RSS (MiB) |")
    print("|---|---|---|---|---|")
    for name, r in (("Caffe (`caffe time`)", caffe), ("PyTorch", ref)):
        print(f"| {name} | {r['forward']:.0f} | {r['backward']:.0f} | {r['total']:.0f} | {r['rss']:.0f} |")
    print()
    print(f"Caffe / PyTorch time ratio: {caffe['total'] / ref['total']:.2f}; "
          f"memory ratio: {caffe['rss'] / ref['rss']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "network"))
