#!/usr/bin/env python3
"""Writes every network and solver under prototxt/ from deconvnet/net/nets.py and
deconvnet/net/solvers.py. With --check, writes nothing and exits 1 if a committed
file differs from what the generator produces.

The committed files follow the release recipe. --recipe paper (or a field
flag such as --weight-decay-rule) writes only the two stages' train/test
nets and solvers under that recipe, into --out (default prototxt/<recipe>/),
with data and run paths relative to that folder; run caffe from there.
--root DIR points those paths at DIR/data and DIR/runs instead of the
repository's, and --iter-size replaces the iter_size that makes 64 (a
smaller mini-batch: experiments/reproduce.sh --rehearsal uses both).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deconvnet.common.cli import PROTOTXT, ROOT, run_tool, setup_logging
from deconvnet.common.recipes import add_field_options, add_recipe_option, recipe_from_args
from deconvnet.net.prototxt import Paths, generate_stages, stale_files, write_all, write_files

FIELDS = ("weight_decay_rule", "batch_per_pass")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder (default: prototxt/, or prototxt/<recipe>/ for "
                                                 "another recipe)")
    parser.add_argument("--check", action="store_true", help="only compare, exit 1 on a difference")
    add_recipe_option(parser)
    add_field_options(parser, *FIELDS, help=dict(
        weight_decay_rule="release: the 2015 Caffe's decay under iter_size; bvlc: this Caffe's",
        batch_per_pass="examples per forward pass; iter_size makes 64"))
    parser.add_argument("--root", type=Path, help="the folder whose data/ and runs/ the nets and solvers point to "
                                                  "(default: the repository)")
    parser.add_argument("--iter-size", type=int, help="iter_size of both stages (default: 64 / --batch-per-pass)")
    args = parser.parse_args(argv)
    setup_logging()
    recipe = recipe_from_args(args, *FIELDS)
    if args.iter_size is not None and args.iter_size <= 0:
        parser.error(f"--iter-size must be positive, got {args.iter_size}")
    if recipe.batch_per_pass <= 0 or 64 % recipe.batch_per_pass:
        parser.error(f"--batch-per-pass must divide 64, got {recipe.batch_per_pass}")
    committed = (args.recipe == "release" and all(getattr(args, f) is None for f in FIELDS)
                 and args.root is None and args.iter_size is None)
    out = args.out or (PROTOTXT if committed else PROTOTXT / recipe.name)
    if args.check:
        if not committed:
            parser.error("--check compares the committed (release recipe) files; drop the recipe flags")
        stale = stale_files(out)
        for name in stale:
            logging.error("%s differs from the generator; run tools/make_prototxt.py", out / name)
        return 1 if stale else 0
    if committed:
        write_all(out)
    else:
        iter_size = args.iter_size or recipe.iter_size
        write_files(out, generate_stages(recipe, Paths.seen_from(out, args.root or ROOT), args.iter_size))
        logging.info("recipe %s: weight_decay %g, %d per pass x iter_size %d, in %s", recipe.name,
                     recipe.solver_weight_decay(iter_size), recipe.batch_per_pass, iter_size, out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "make_prototxt"))
