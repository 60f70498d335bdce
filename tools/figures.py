#!/usr/bin/env python3
"""Draws the paper's figures from our own model, one PNG per command:

  fig6  progressive aggregation after 1, 2, 5, 10, 20 and 50 proposals, in
        decreasing size (paper Figure 6)
  fig4  the most active channel of each unpooling and deconvolution output for
        one proposal (the best-scoring one, or --box) (paper Figure 4)
  fig5  class probability maps of the top classes (paper Figure 5)
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from deconvnet.common.cli import PROTOTXT, setup_logging
from deconvnet.common.machine import use_device
from deconvnet.data.proposals import EdgeBoxParams, edge_boxes
from deconvnet.data.voc import DatasetError, read_image
from deconvnet.infer import figures
from deconvnet.infer.aggregation import select_boxes
from deconvnet.infer.models import DeconvNetModel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=("fig4", "fig5", "fig6"))
    parser.add_argument("image", type=Path)
    parser.add_argument("--weights", type=Path, required=True, help="DeconvNet caffemodel")
    parser.add_argument("--model", type=Path, default=PROTOTXT / "deconvnet_deploy.prototxt")
    parser.add_argument("--out", type=Path, help="PNG to write (default: <figure>_<image>.png)")
    parser.add_argument("--box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"),
                        help="fig4: the proposal to show")
    parser.add_argument("--aggregate", choices=("max", "sum"), default="max")
    parser.add_argument("--gpu", type=int)
    args = parser.parse_args(argv)
    setup_logging()
    use_device(args.gpu)
    try:
        image = read_image(args.image)
    except DatasetError as err:
        logging.error("figures: %s", err)
        return 1
    model = DeconvNetModel(args.model, args.weights, batch=50)
    boxes, _ = edge_boxes(image, EdgeBoxParams())
    out = args.out or Path(f"{args.figure}_{args.image.stem}.png")
    if args.figure == "fig6":
        figures.figure6(model, image, boxes, out, mode=args.aggregate)
    elif args.figure == "fig5":
        figures.figure5(model, image, boxes, out, mode=args.aggregate)
    else:
        box = np.array(args.box, np.float32) if args.box else select_boxes(boxes, image.shape, 1)[0]
        figures.figure4(model, image, box, out)
    logging.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
