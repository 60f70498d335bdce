#!/usr/bin/env python3
"""Re-estimates the BatchNorm global statistics of a trained DeconvNet over N
batches of its training data (the authors used about 500) and writes the
caffemodel for inference. --model is a train prototxt whose data layer reads
the training LMDB; --source replaces that layer's LMDB path.

With --fold, --out is the folded caffemodel instead (tools/fold_bn.py: the
BatchNorm and Scale layers folded into the (de)convolutions of --deploy),
and --out-model its prototxt (default: --out with .prototxt)."""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from deconvnet.common.cli import PROTOTXT, positive_int, run_tool, setup_logging
from deconvnet.common.machine import use_device
from deconvnet.net.bn_stats import write_statistics
from deconvnet.net.fold_bn import FoldError, fold
from deconvnet.net.nets import net_reading_from
from deconvnet.net.weights import WeightsMismatch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=PROTOTXT / "deconvnet_stage2_train.prototxt")
    parser.add_argument("--weights", type=Path, required=True, help="the trained caffemodel")
    parser.add_argument("--out", type=Path, required=True, help="the inference caffemodel to write")
    parser.add_argument("--batches", type=positive_int, default=500)
    parser.add_argument("--source", type=Path, help="training LMDB (default: the one in --model)")
    parser.add_argument("--allow-missing-weights", action="store_true",
                        help="go on when --weights lacks learned layers of --model (listed); they keep their fillers")
    fold_group = parser.add_argument_group("folding")
    fold_group.add_argument("--fold", action="store_true", help="write the folded inference model")
    fold_group.add_argument("--deploy", type=Path, default=PROTOTXT / "deconvnet_deploy.prototxt",
                            help="the deploy prototxt to fold (default %(default)s)")
    fold_group.add_argument("--out-model", type=Path, help="the folded prototxt (default: --out with .prototxt)")
    parser.add_argument("--gpu", type=int)
    args = parser.parse_args(argv)
    setup_logging()
    use_device(args.gpu)
    for path in (args.model, args.weights) + ((args.deploy,) if args.fold else ()):
        if not path.is_file():
            logging.error("bn_stats: %s not found", path)
            return 1
    weights, out = args.weights.resolve(), args.out.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        # The net's relative data paths resolve from its folder (or --source replaces them).
        model = net_reading_from(args.model, Path(tmp) / args.model.name, args.source).resolve()
        try:
            # Folding reads the statistics from a scratch caffemodel: --out is written only when both worked.
            stats = Path(tmp) / "bn_stats.caffemodel" if args.fold else out
            write_statistics(model, weights, stats, args.batches, allow_missing=args.allow_missing_weights)
        except WeightsMismatch as err:
            logging.error("bn_stats: %s", err)
            return 1
        if args.fold:
            try:
                fold(args.deploy, stats, args.out_model or out.with_suffix(".prototxt"), out)
            except (FoldError, WeightsMismatch) as err:
                logging.error("bn_stats: %s", err)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "bn_stats"))
