#!/usr/bin/env python3
"""Trains DeconvNet in two stages through pycaffe (the paper's recipe):
stage 1 on object-centred crops from VGG16-initialised weights, then stage 2
on proposal crops from stage 1's final weights.

  --lr-policy step     the authors' released steps, as in the solver files
  --lr-policy plateau  the paper's rule: divide the rate by 10 when validation
                       mIoU has not improved for --patience validations

Validation runs the solver's test net (held-out crops) every --val-interval
iterations and reports mean IoU. The best snapshot (best.caffemodel) and the
last --keep-last are kept; free disk is checked before each snapshot. A run
folder with snapshots resumes from the latest solverstate. Logs go to
<run-dir>/stageN/log.jsonl (plot them with tools/plot_training.py).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deconvnet.common.cli import PROTOTXT, ROOT, add_options, options_from_args, setup_logging
from deconvnet.train.trainer import DiskFull, StageConfig, Trainer, finished_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("1", "2", "both"), default="both")
    parser.add_argument("--solver1", type=Path, default=PROTOTXT / "stage1_solver.prototxt")
    parser.add_argument("--solver2", type=Path, default=PROTOTXT / "stage2_solver.prototxt")
    parser.add_argument("--weights", type=Path,
                        help="initial weights of the first stage run (stage 1: the VGG16 surgery output; "
                             "stage 2 alone: stage 1's final model)")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "train",
                        help="stage folders go inside (default runs/train)")
    add_options(parser, StageConfig)
    parser.add_argument("--min-free-gb", type=float, help="stop when less disk is free (default: 2 snapshots)")
    args = parser.parse_args(argv)
    setup_logging()
    stages = [1, 2] if args.stage == "both" else [int(args.stage)]
    weights = args.weights
    for stage in stages:
        run_dir = args.run_dir / f"stage{stage}"
        done = finished_model(run_dir)
        if done is not None:
            logging.info("stage %d already finished: %s", stage, done)
            weights = done
            continue
        config = options_from_args(
            StageConfig, args, solver=args.solver1 if stage == 1 else args.solver2, run_dir=run_dir,
            weights=weights, min_free_bytes=int(args.min_free_gb * 2**30) if args.min_free_gb else None)
        try:
            weights = Trainer(config).train()
        except DiskFull as err:
            logging.error("train: stopped cleanly: %s", err)
            return 3
        logging.info("stage %d finished: %s", stage, weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
