#!/usr/bin/env python3
"""Draws the paper's figures from our own model, one PNG per command:

  fig4  the most active channel of each unpooling and deconvolution output for
        one proposal (the best-scoring one, or --box) (paper Figure 4)
  fig5  class probability maps of the top classes; with --fcn-weights also
        FCN-8s's and the ensemble's, row by row (paper Figure 5)
  fig6  progressive aggregation after 1, 2, 5, 10, 20 and 50 proposals, in
        decreasing size (paper Figure 6)
  fig7  input, ground truth, FCN-8s, DeconvNet and EDeconvNet + CRF (paper
        Figure 7); needs --fcn-weights; the ground truth is --gt, or the
        image's SegmentationClass PNG in a VOC layout

Proposals, the box filter, the ensemble rule and the FCN-8s layout follow
--recipe (release by default) as in tools/infer.py; single flags override.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from deconvnet.common.cli import PROTOTXT, run_tool, setup_logging
from deconvnet.common.constants import TEST_PROPOSALS
from deconvnet.common.machine import use_device
from deconvnet.common.recipes import INFERENCE_FIELDS, add_field_options, add_recipe_option, recipe_from_args
from deconvnet.data.proposals import EdgeBoxParams, EdgeModelError, edge_boxes, resolve_edges
from deconvnet.data.voc import DatasetError, read_image, read_indexed_png
from deconvnet.infer import figures
from deconvnet.infer.aggregation import select_boxes
from deconvnet.infer.models import FCN_DEPLOY, DeconvNetModel, FCNModel, WeightsMismatch


def ground_truth_for(image: Path, given: Path | None) -> Path | None:
    """--gt, or VOC's SegmentationClass/<id>.png beside JPEGImages/."""
    if given is not None:
        return given
    guess = image.parent.parent / "SegmentationClass" / f"{image.stem}.png"
    return guess if guess.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=("fig4", "fig5", "fig6", "fig7"))
    parser.add_argument("image", type=Path)
    parser.add_argument("--weights", type=Path, required=True, help="DeconvNet caffemodel")
    parser.add_argument("--model", type=Path, default=PROTOTXT / "deconvnet_deploy.prototxt",
                        help="deploy prototxt (default %(default)s); for a caffemodel from tools/fold_bn.py, "
                             "prototxt/deconvnet_deploy_folded.prototxt")
    parser.add_argument("--fcn-weights", type=Path, help="FCN-8s caffemodel (fig5: adds its rows; fig7: needed)")
    parser.add_argument("--fcn-model", type=Path, help="FCN-8s deploy prototxt (default: the --fcn-variant's)")
    parser.add_argument("--gt", type=Path, help="fig7: ground-truth label PNG")
    parser.add_argument("--allow-missing-weights", action="store_true",
                        help="go on when a caffemodel lacks learned layers of its net (listed)")
    parser.add_argument("--out", type=Path, help="PNG to write (default: <figure>_<image>.png)")
    parser.add_argument("--box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"),
                        help="fig4: the proposal to show")
    parser.add_argument("--aggregate", choices=("max", "sum"), default="max")
    parser.add_argument("--edge-model", default="", help="structured-edge model.yml.gz")
    add_recipe_option(parser)
    add_field_options(parser, *INFERENCE_FIELDS)
    parser.add_argument("--gpu", type=int)
    args = parser.parse_args(argv)
    setup_logging()
    recipe = recipe_from_args(args, *INFERENCE_FIELDS)
    if args.figure == "fig7" and args.fcn_weights is None:
        parser.error("fig7 needs --fcn-weights (the FCN-8s partner)")
    use_device(args.gpu)
    try:
        image = read_image(args.image)
        gt_path = ground_truth_for(args.image, args.gt) if args.figure == "fig7" else None
        ground_truth = read_indexed_png(gt_path) if gt_path else None
        params = EdgeBoxParams(edge_model=resolve_edges(recipe.edges, args.edge_model))
        model = DeconvNetModel(args.model, args.weights, 50 if args.gpu is not None else None,
                               args.allow_missing_weights)
        fcn = (FCNModel(args.fcn_model or FCN_DEPLOY[recipe.fcn_variant], args.fcn_weights,
                        args.allow_missing_weights) if args.fcn_weights else None)
    except (DatasetError, EdgeModelError, WeightsMismatch) as err:
        logging.error("figures: %s", err)
        return 1
    if ground_truth is not None and ground_truth.shape != image.shape[:2]:
        logging.error("figures: ground truth %s is %s, the image %s", gt_path, ground_truth.shape, image.shape[:2])
        return 1
    boxes, _ = edge_boxes(image, params)
    out = args.out or Path(f"{args.figure}_{args.image.stem}.png")
    if args.figure == "fig6":
        figures.figure6(model, image, boxes, out, mode=args.aggregate, padding=recipe.proposal_padding)
    elif args.figure in ("fig5", "fig7"):
        chosen = select_boxes(boxes, image.shape, TEST_PROPOSALS, recipe.min_box_side, recipe.box_side_of)
        if args.figure == "fig5":
            figures.figure5(model, image, chosen, out, mode=args.aggregate, fcn=fcn, rule=recipe.ensemble,
                            padding=recipe.proposal_padding)
        else:
            figures.figure7(model, fcn, image, ground_truth, chosen, out, mode=args.aggregate, rule=recipe.ensemble,
                            padding=recipe.proposal_padding)
    else:
        box = np.array(args.box, np.float32) if args.box else select_boxes(boxes, image.shape, 1)[0]
        figures.figure4(model, image, box, out, padding=recipe.proposal_padding)
    logging.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "figures"))
