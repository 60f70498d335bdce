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
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from deconvnet.training import DiskFull, StageConfig, Trainer, finished_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("1", "2", "both"), default="both")
    parser.add_argument("--solver1", type=Path, default=ROOT / "prototxt" / "stage1_solver.prototxt")
    parser.add_argument("--solver2", type=Path, default=ROOT / "prototxt" / "stage2_solver.prototxt")
    parser.add_argument("--weights", type=Path,
                        help="initial weights of the first stage run (stage 1: the VGG16 surgery output; "
                             "stage 2 alone: stage 1's final model)")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "train")
    parser.add_argument("--lr-policy", choices=("step", "plateau"), default="step")
    parser.add_argument("--patience", type=int, default=3, help="plateau: validations without improvement")
    parser.add_argument("--val-interval", type=int, default=1000)
    parser.add_argument("--val-batches", type=int, default=50)
    parser.add_argument("--snapshot-interval", type=int, default=2000)
    parser.add_argument("--keep-last", type=int, default=2)
    parser.add_argument("--max-iter", type=int, help="override each stage's max_iter")
    parser.add_argument("--min-free-gb", type=float, help="stop when less disk is free (default: 2 snapshots)")
    parser.add_argument("--gpu", type=int, help="GPU id (default: CPU)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stages = [1, 2] if args.stage == "both" else [int(args.stage)]
    weights = args.weights
    for stage in stages:
        run_dir = args.run_dir / f"stage{stage}"
        done = finished_model(run_dir)
        if done is not None:
            logging.info("stage %d already finished: %s", stage, done)
            weights = done
            continue
        config = StageConfig(
            solver=args.solver1 if stage == 1 else args.solver2, run_dir=run_dir, weights=weights,
            lr_policy=args.lr_policy, patience=args.patience, val_interval=args.val_interval,
            val_batches=args.val_batches, snapshot_interval=args.snapshot_interval, keep_last=args.keep_last,
            min_free_bytes=int(args.min_free_gb * 2**30) if args.min_free_gb else None,
            max_iter=args.max_iter, gpu=args.gpu)
        try:
            weights = Trainer(config).train()
        except DiskFull as err:
            logging.error("train: stopped cleanly: %s", err)
            return 3
        logging.info("stage %d finished: %s", stage, weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
