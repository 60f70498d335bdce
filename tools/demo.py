#!/usr/bin/env python3
"""The main job: DeconvNet end to end on the built-in synthetic dataset, on
CPU: synthetic VOC/SBD data, stage-1 and stage-2 crop LMDBs with proposals,
VGG16 surgery on a random VGG16, two-stage training of a reduced DeconvNet,
BatchNorm statistics, inference with proposals, aggregation and CRF on the
val images, and tools/eval_voc.py. Writes a run folder with report.md,
plots, overlays and the Figure 6 panel, and prints where it is."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from deconvnet.demo import QUICK, DemoConfig, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="run folder (default: output/demo/<date-time>)")
    parser.add_argument("--quick", action="store_true", help="a tiny run for tests (under 2 minutes)")
    parser.add_argument("--images", type=int, help="synthetic images")
    parser.add_argument("--stage1-iters", type=int)
    parser.add_argument("--stage2-iters", type=int)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = QUICK if args.quick else DemoConfig()
    overrides = {k: v for k, v in (("images", args.images), ("stage1_iters", args.stage1_iters),
                                   ("stage2_iters", args.stage2_iters), ("seed", args.seed)) if v is not None}
    config = replace(config, **overrides)
    out = args.out or ROOT / "output" / "demo" / time.strftime("%Y%m%d-%H%M%S")
    summary = run(out, config)
    print(f"mean IoU {summary['mean_iou'] * 100:.1f}% (all-background baseline "
          f"{summary['all_background_mean_iou'] * 100:.1f}%) in {summary['seconds'] / 60:.1f} min")
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
