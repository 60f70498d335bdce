#!/usr/bin/env python3
"""Trains DeepLab-LargeFOV through pycaffe, the DeepLab authors' recipe
(deconvnet/common/recipes.py, DEEPLAB_LARGEFOV; docs/DEEPLAB.md): random
321x321 mirrored crops of whole train_aug images, 20 images per update
(10 a pass x iter_size 2), base rate 0.001 (fc8 x10, its biases x20), x0.1
every 2,000 of 6,000 updates, momentum 0.9, weight decay 0.0005.

  python tools/init_weights.py deeplab-largefov    # from VGG16
  python tools/train_deeplab.py --gpu 0

The same trainer as DeconvNet's stages (tools/train.py): snapshots as whole
pairs, a resume from the latest, the final model printed, and --gpus 0,1,..
for data parallelism (iter_size divided among the GPUs). --val-interval N
scores the solver's val net (VOC 2012 val, whole images) every N updates;
by default nothing is validated during training, as in the release: score
the final model with tools/infer.py and tools/eval_voc.py.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deconvnet.common.cli import (
    MODELS,
    PROTOTXT,
    ROOT,
    add_options,
    check_output_folder,
    options_from_args,
    run_tool,
    setup_logging,
)
from deconvnet.train.launch import check_gpus, run_stage
from deconvnet.train.trainer import StageConfig, finished_model

SKIPPED = ("lr_policy", "patience")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solver", type=Path, default=PROTOTXT / "deeplab_largefov_solver.prototxt",
                        help="default: prototxt/deeplab_largefov_solver.prototxt")
    parser.add_argument("--weights", type=Path, default=MODELS / "deeplab_largefov_init_vgg16.caffemodel",
                        help="initial weights (default: tools/init_weights.py deeplab-largefov's output)")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "train" / "deeplab_largefov",
                        help="snapshots, log.jsonl and state (default runs/train/deeplab_largefov)")
    add_options(parser, StageConfig, skip=SKIPPED)
    parser.add_argument("--min-free-gb", type=float, help="stop when less disk is free (default: 2 snapshots)")
    parser.add_argument("--gpus", help="data-parallel training on these GPUs: 0,1,2,3 or all (one process per GPU, "
                                       "NCCL; iter_size is divided by their count)")
    args = parser.parse_args(argv)
    setup_logging()
    if args.gpus is not None and args.gpu is not None:
        logging.error("train_deeplab: --gpu and --gpus both given; give one")
        return 2
    if not args.weights.is_file() and finished_model(args.run_dir) is None:
        logging.error("train_deeplab: %s: no such file; make it with tools/init_weights.py deeplab-largefov "
                      "(or pass --weights)", args.weights)
        return 2
    gpus = None
    if args.gpus is not None:
        try:
            gpus = check_gpus(args.gpus, [args.solver])
        except ValueError as err:
            logging.error("train_deeplab: %s", err)
            return 2
    problem = check_output_folder(args.run_dir)
    if problem:
        logging.error("train_deeplab: %s", problem)
        return 2
    done = finished_model(args.run_dir)
    if done is not None:
        logging.info("already finished: %s", done)
        print(done)
        return 0
    # The solver's own steps; its weight decay as written (the BVLC rule is the release's here).
    config = options_from_args(
        StageConfig, args, skip=SKIPPED, lr_policy="step", plateau_metric="mean_iou", solver=args.solver,
        run_dir=args.run_dir, weights=args.weights,
        min_free_bytes=int(args.min_free_gb * 2**30) if args.min_free_gb else None)
    final, code = run_stage(config, gpus, "train_deeplab")
    if final is None:
        return code
    logging.info("finished: %s", final)
    print(final)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "train_deeplab"))
