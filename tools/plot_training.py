#!/usr/bin/env python3
"""Plots loss, learning rate and validation mIoU against iterations, from
tools/train.py's log.jsonl files or plain `caffe train` logs (as written to
stderr), one PNG per quantity."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deconvnet.common.cli import run_tool, setup_logging
from deconvnet.train.plots import parse_log, plot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("logs", nargs="+", type=Path, help="log.jsonl or caffe log files")
    parser.add_argument("--out", type=Path, default=Path("plots"), help="folder for the PNGs (default plots/)")
    args = parser.parse_args(argv)
    setup_logging()
    missing = [str(p) for p in args.logs if not p.is_file()]
    if missing:
        logging.error("plot_training: not found: %s", ", ".join(missing))
        return 1
    logs = {f"{p.parent.name}/{p.name}": parse_log(p) for p in args.logs}
    for path in plot(logs, args.out):
        logging.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "plot_training"))
