#!/usr/bin/env python3
"""Trains DeconvNet in two stages through pycaffe (the paper's recipe):
stage 1 on object-centred crops from VGG16-initialised weights, then stage 2
on proposal crops from stage 1's final weights.

The recipe (--recipe release, the default, or paper; docs/REPRODUCE.md)
decides what the paper and the authors' release disagree on; single flags
override it:

  --lr-policy step     the authors' released steps, as in the solver files
                       (release recipe)
  --lr-policy plateau  the paper's rule: divide the rate by 10 when validation
                       --plateau-metric has not improved for --patience
                       validations (paper recipe: pixel accuracy, 3)
  --weight-decay-rule  release: the solver's weight_decay becomes
                       0.0005 / iter_size, the authors' 2015 update under this
                       Caffe; bvlc: 0.0005 (paper recipe)

Validation runs the solver's test net (held-out crops) every --val-interval
iterations and reports mean IoU. The best snapshot (best.caffemodel) and the
last --keep-last are kept; free disk is checked before each snapshot. A run
folder with snapshots resumes from the latest solverstate. Logs go to
<run-dir>/stageN/log.jsonl (plot them with tools/plot_training.py).

--gpus 0,1,2,3 (or all) trains each stage on several GPUs of this node: one
process per GPU, gradients averaged by NCCL (deconvnet/train/data_parallel.py;
Caffe's own `caffe train -gpu 0,1` cannot run our Python data layer). Each
GPU reads its own share of every epoch and runs iter_size / GPUs passes per
update, so the update is the one-GPU update of the same solver (a count that
does not divide iter_size is refused, with the batches that would work).
Rank 0 validates, logs, snapshots and applies the plateau rule; a resume
works as on one GPU; a failed rank stops all of them with its error.

Both solver files are checked first (known fields, a known lr_policy, net
files that exist), naming the line and the fix. Snapshots are written as
whole pairs (caffemodel and solverstate); a resume falls back from a
damaged newest pair to the one before. Flags without effect (--patience
with --lr-policy step; a --recipe whose batch the solver does not have)
are refused.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deconvnet.common.cli import (
    PROTOTXT,
    ROOT,
    add_options,
    check_output_folder,
    given_flags,
    options_from_args,
    refuse_ineffective,
    run_tool,
    setup_logging,
)
from deconvnet.common.recipes import add_field_options, add_recipe_option, recipe_from_args
from deconvnet.train.launch import check_gpus, run_stage
from deconvnet.train.trainer import StageConfig, finished_model, read_solver

RECIPE_FIELDS = ("lr_policy", "patience", "plateau_metric", "weight_decay_rule")


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
    add_options(parser, StageConfig, skip=("lr_policy", "patience"))
    add_recipe_option(parser)
    add_field_options(parser, *RECIPE_FIELDS, help=dict(
        lr_policy="step: the solver's steps; plateau: divide by 10 after --patience validations without "
                  "improvement", patience="plateau: validations without improvement before a cut",
        plateau_metric="plateau: what validation must improve", weight_decay_rule="see above"))
    parser.add_argument("--min-free-gb", type=float, help="stop when less disk is free (default: 2 snapshots)")
    parser.add_argument("--gpus", help="data-parallel training on these GPUs: 0,1,2,3 or all (one process per GPU, "
                                       "NCCL; iter_size is divided by their count)")
    args = parser.parse_args(argv)
    setup_logging()
    recipe = recipe_from_args(args, *RECIPE_FIELDS)
    if refuse_ineffective("train", parser, argv, [
            (("patience", "plateau_metric"), recipe.lr_policy == "step",
             "with --lr-policy step (the solver's steps set the rate; they are the plateau rule's)")]):
        return 2
    if args.gpus is not None and args.gpu is not None:
        logging.error("train: --gpu and --gpus both given: --gpu %d trains on one GPU, --gpus %s on several; "
                      "give one", args.gpu, args.gpus)
        return 2
    stages = [1, 2] if args.stage == "both" else [int(args.stage)]
    solvers = {stage: args.solver1 if stage == 1 else args.solver2 for stage in stages}
    recipe_typed = "recipe" in given_flags(parser, argv)
    for solver in solvers.values():  # both checked before hours of stage 1
        iter_size = max(read_solver(solver).iter_size, 1)
        if recipe_typed and iter_size != recipe.iter_size:
            logging.error("train: --recipe %s makes the mini-batch of 64 from %d examples a pass x iter_size %d, "
                          "but %s has iter_size %d (and its net its own batch): the recipe's batch would not be "
                          "applied. Write its solvers and nets with tools/make_prototxt.py --recipe %s and pass "
                          "them as --solver1/--solver2", recipe.name, recipe.batch_per_pass, recipe.iter_size,
                          solver, iter_size, recipe.name)
            return 2
    gpus = None
    if args.gpus is not None:
        try:
            gpus = check_gpus(args.gpus, list(solvers.values()))
        except ValueError as err:
            logging.error("train: %s", err)
            return 2
    problem = check_output_folder(args.run_dir)
    if problem:
        logging.error("train: %s", problem)
        return 2
    weights = args.weights
    for stage in stages:
        run_dir = args.run_dir / f"stage{stage}"
        done = finished_model(run_dir)
        if done is not None:
            logging.info("stage %d already finished: %s", stage, done)
            weights = done
            continue
        config = options_from_args(
            StageConfig, args, skip=("lr_policy", "patience"), lr_policy=recipe.lr_policy,
            patience=recipe.patience, plateau_metric=recipe.plateau_metric,
            weight_decay_rule=recipe.weight_decay_rule,
            solver=solvers[stage], run_dir=run_dir,
            weights=weights, min_free_bytes=int(args.min_free_gb * 2**30) if args.min_free_gb else None)
        final, code = run_stage(config, gpus, "train")
        if final is None:
            return code
        weights = final
        logging.info("stage %d finished: %s", stage, weights)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "train"))
