"""Training curves from our JSON-lines log or a plain `caffe train` log."""
from __future__ import annotations

import json
import re
from pathlib import Path

from matplotlib.figure import Figure

Series = dict[str, list[tuple[int, float]]]

CAFFE_LOSS = re.compile(r"Iteration (\d+) \(.*\), loss = ([-\d.eE+naif]+)")
CAFFE_LR = re.compile(r"Iteration (\d+), lr = ([-\d.eE+]+)")
CAFFE_TEST_ITER = re.compile(r"Iteration (\d+), Testing net")
CAFFE_TEST_OUT = re.compile(r"Test net output #\d+: (\w+) = ([-\d.eE+naif]+)")


def parse_jsonl(path: Path) -> Series:
    series: Series = {"loss": [], "lr": [], "val_miou": []}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("event") == "train":
            series["loss"].append((record["iter"], record["loss"]))
            series["lr"].append((record["iter"], record["lr"]))
        elif record.get("event") == "val":
            series["val_miou"].append((record["iter"], record["val_miou"]))
    return series


def parse_caffe_log(path: Path) -> Series:
    series: Series = {"loss": [], "lr": []}
    test_iter = None
    for line in path.read_text(errors="replace").splitlines():
        if m := CAFFE_LOSS.search(line):
            series["loss"].append((int(m.group(1)), float(m.group(2))))
        elif m := CAFFE_LR.search(line):
            series["lr"].append((int(m.group(1)), float(m.group(2))))
        elif m := CAFFE_TEST_ITER.search(line):
            test_iter = int(m.group(1))
        elif (m := CAFFE_TEST_OUT.search(line)) and test_iter is not None:
            series.setdefault(f"test_{m.group(1)}", []).append((test_iter, float(m.group(2))))
    return series


def parse_log(path: Path) -> Series:
    text = path.read_text(errors="replace").lstrip()
    return parse_jsonl(path) if text.startswith("{") else parse_caffe_log(path)


def plot(logs: dict[str, Series], out_dir: Path) -> list[Path]:
    """One PNG per quantity, each log a line; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted({k for series in logs.values() for k, v in series.items() if v})
    written = []
    for name in names:
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        for label, series in logs.items():
            points = series.get(name) or []
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=label, marker="o" if len(points) < 30 else None)
        ax.set_xlabel("iteration")
        ax.set_ylabel(name)
        if name == "lr":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=100)
        written.append(path)
    return written
