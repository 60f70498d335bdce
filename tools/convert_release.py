#!/usr/bin/env python3
"""Converts the authors' released weights, written by their 2015 Caffe
forks in the V1 format that today's Caffe cannot read whole, into
caffemodels for our nets:

  deconvnet        DeconvNet_trainval_inference.caffemodel (the paper's
                   DeconvNet, BN statistics folded into scale and shift)
                   -> weights for prototxt/deconvnet_deploy.prototxt: each
                   BN becomes a BatchNorm that is exactly the identity and a
                   Scale with the release's scale and shift. With --folded:
                   weights for prototxt/deconvnet_deploy_folded.prototxt
                   (folded by tools/fold_bn.py's code, with its rewrites;
                   the faster choice for inference).
  deconvnet-train  stage_2_train_result.caffemodel (the LEARN-mode
                   snapshot) -> weights for the stage-2 training net
                   (prototxt/deconvnet_stage2_train.prototxt, whose learned
                   layers are the deploy net's), for fine-tuning and for
                   tools/bn_stats.py. Its BatchNorms hold no statistics
                   (factor 0), so tools/fold_bn.py refuses them until
                   tools/bn_stats.py has estimated them.
  fcn8s-2014       fcn-8s-pascal.caffemodel (the FCN-8s of the paper's
                   ensemble) -> today's format for
                   prototxt/fcn8s_2014_deploy.prototxt, every layer checked.

Every layer's name, type and shape is checked first; a truncated file, a
file already in today's format, the training snapshot given as the
inference model (or the reverse), and a file with layers missing or extra
stop the tool with a message and nothing written. The output appears whole.

  tools/download.py deconvnet-release        # or --from PATH_OR_URL
  tools/convert_release.py deconvnet models/DeconvNet_trainval_inference.caffemodel \\
      models/deconvnet_release_folded.caffemodel --folded
  tools/infer.py --model prototxt/deconvnet_deploy_folded.prototxt \\
      --weights models/deconvnet_release_folded.caffemodel ...
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deconvnet.common.cli import PROTOTXT, check_output_file, colliding_paths, run_tool, setup_logging
from deconvnet.infer.models import FCN_DEPLOY
from deconvnet.net.fold_bn import FoldError
from deconvnet.net.release import KINDS, ReleaseError, convert

DEFAULT_MODEL = {"deconvnet": PROTOTXT / "deconvnet_deploy.prototxt",
                 "deconvnet-train": PROTOTXT / "deconvnet_deploy.prototxt",
                 "fcn8s-2014": FCN_DEPLOY["2014"]}
DEFAULT_FOLDED = PROTOTXT / "deconvnet_deploy_folded.prototxt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=KINDS, help="which released file")
    parser.add_argument("source", type=Path, help="the released caffemodel")
    parser.add_argument("out", type=Path, help="the caffemodel to write")
    parser.add_argument("--folded", action="store_true",
                        help="deconvnet only: write weights for the folded deploy net (--folded-model)")
    parser.add_argument("--model", type=Path,
                        help="our (unfolded) prototxt the release maps onto (default: "
                             "prototxt/deconvnet_deploy.prototxt, or prototxt/fcn8s_2014_deploy.prototxt for "
                             "fcn8s-2014); a reduced variant for tests")
    parser.add_argument("--folded-model", type=Path, default=DEFAULT_FOLDED,
                        help="with --folded: the folded prototxt the weights are for (default: "
                             "prototxt/deconvnet_deploy_folded.prototxt)")
    args = parser.parse_args(argv)
    setup_logging()
    if args.folded and args.kind != "deconvnet":
        parser.error(f"--folded is for `deconvnet` only: {args.kind} weights "
                     + ("hold no statistics to fold (run tools/bn_stats.py first, then tools/fold_bn.py)"
                        if args.kind == "deconvnet-train" else "have no BatchNorm to fold"))
    model = args.model or DEFAULT_MODEL[args.kind]
    if not args.source.is_file():
        logging.error("convert_release: %s not found (download it with tools/download.py deconvnet-release, or "
                      "--from PATH_OR_URL)", args.source)
        return 2
    paths = {"source": args.source, "out": args.out, "--model": model}
    collisions = colliding_paths(paths)
    for a, b in collisions:
        logging.error("convert_release: %s and %s name the same file (%s)", a, b, paths[b])
    problem = check_output_file(args.out, "out")
    if problem:
        logging.error("convert_release: %s", problem)
    if collisions or problem:
        return 2
    try:
        convert(args.kind, args.source, args.out, model, args.folded_model if args.folded else None)
    except (ReleaseError, FoldError) as err:
        logging.error("convert_release: %s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "convert_release"))
