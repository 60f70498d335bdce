#!/usr/bin/env python3
"""Looks inside a trained network the way Zeiler and Fergus did (ECCV 2014;
docs/VISUALIZE.md): projections of units back to pixels through their
deconvnet (ReLU, the transposed filters, unpooling by the max-pooling
switches), built on our Unpooling layer; BatchNorm is folded first.

  top9       the 9 strongest activations of each unit of --layer over an
             image set: their projections and image patches, one grid
  filters    the first layer's filters as images
  occlusion  a grey square slid over --image: the class's score and the
             strongest feature map's activity as heat maps
  evolution  the same units' strongest projections in every snapshot

Each writes a PNG and a JSON of what it shows (image names, positions,
values) into --out. Images (--images) are demo:RUN_FOLDER (a tools/demo.py
run's val images), voc:SPLIT or ids:FILE (with --voc-root), or a folder.

  tools/visualize.py top9 --weights models/deconvnet_folded.caffemodel \\
      --model models/deconvnet_deploy_folded.prototxt --layer conv5_3 \\
      --units strongest:8 --images voc:val --voc-root data/VOCdevkit/VOC2012
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from deconvnet.common.cli import PROTOTXT, ROOT, ToolError, check_output_folder, run_tool, setup_logging
from deconvnet.common.constants import CLASSES
from deconvnet.data.proposals import EdgeBoxParams, edge_boxes
from deconvnet.data.voc import DatasetError, read_image
from deconvnet.net.fold_bn import FoldError
from deconvnet.net.projection import ProjectionError
from deconvnet.net.weights import WeightsMismatch
from deconvnet.visualize import occlusion, views
from deconvnet.visualize.projector import Projector
from deconvnet.visualize.sources import load_images
from deconvnet.visualize.top9 import TOP, parse_units, peaks


def _common(parser: argparse.ArgumentParser, layer: str) -> None:
    parser.add_argument("--model", type=Path, default=PROTOTXT / "deconvnet_deploy.prototxt",
                        help="deploy prototxt, folded or not (default: %(default)s)")
    parser.add_argument("--layer", default=layer, help="layer to look at (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="folder for the PNG and JSON (default: output/visualize/<date-time>)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _images(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--images", required=required,
                        help="demo:RUN_FOLDER, voc:SPLIT, ids:FILE (VOC ids) or a folder of images")
    parser.add_argument("--voc-root", type=Path, help="VOCdevkit/VOC2012 folder, for voc: and ids:")
    parser.add_argument("--limit", type=int, help="only the first N images")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    top9 = commands.add_parser("top9", help="strongest activations per unit, projected, with their patches")
    _common(top9, "conv5_3")
    top9.add_argument("--weights", type=Path, required=True, help="caffemodel of --model")
    _images(top9)
    top9.add_argument("--units", default="strongest:8",
                      help="units: 0,5,9-12, strongest:K (the K with the highest peaks) or all (default: %(default)s)")
    top9.add_argument("--top", type=int, default=TOP, help="activations per unit (default: %(default)s)")
    filters = commands.add_parser("filters", help="first-layer filters as images")
    _common(filters, "conv1_1")
    filters.add_argument("--weights", type=Path, required=True, help="caffemodel of --model")
    occl = commands.add_parser("occlusion", help="occlusion sensitivity of a class and of a feature map")
    _common(occl, "conv5_3")
    occl.add_argument("--weights", type=Path, required=True, help="caffemodel of --model")
    occl.add_argument("--image", type=Path, required=True, help="the image")
    occl.add_argument("--class", dest="cls", required=True, help="class name (e.g. cat) or index 0-20")
    occl.add_argument("--square", type=int, help="the square's side in image pixels (default: a quarter of the "
                                                  "image's shorter side)")
    occl.add_argument("--stride", type=int, help="pixels between square positions (default: half the square)")
    occl.add_argument("--score", choices=occlusion.MODES, default="proposal",
                      help="the class's score of one proposal (the image, or --box, warped to the input) or of "
                           "DeconvNet's aggregation over the image's edge-box proposals (default: %(default)s)")
    occl.add_argument("--box", help="x1,y1,x2,y2: the proposal to score and read (default: the whole image)")
    evo = commands.add_parser("evolution", help="the same units' projections across training snapshots")
    _common(evo, "conv5_3")
    evo.add_argument("--snapshots", type=Path, required=True, help="folder of *_iter_N.caffemodel snapshots")
    _images(evo)
    evo.add_argument("--units", default="0-3", help="units: 0,5,9-12 (default: %(default)s)")
    return parser


def _class(text: str) -> int:
    if text.isdigit() and int(text) < len(CLASSES):
        return int(text)
    if text in CLASSES:
        return CLASSES.index(text)
    raise ToolError(f"--class {text!r}: give one of {', '.join(CLASSES)} or its index 0-{len(CLASSES) - 1}")


def _box(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        x1, y1, x2, y2 = (int(v) for v in text.split(","))
    except ValueError:
        raise ToolError(f"--box {text!r}: give four whole numbers x1,y1,x2,y2") from None
    if x2 <= x1 or y2 <= y1:
        raise ToolError(f"--box {text!r}: x2 must exceed x1 and y2 y1")
    return x1, y1, x2, y2


def _progress(total: int, what: str):
    bar = tqdm(total=total, unit=what, disable=not sys.stderr.isatty())
    return bar, bar.update


def run(args: argparse.Namespace, out: Path) -> dict:
    if args.command == "filters":
        return views.filters(Projector(args.model, args.weights, args.layer), out)
    if args.command == "occlusion":
        image = read_image(args.image)
        h, w = image.shape[:2]
        square = args.square or max(min(h, w) // 4, 1)
        stride = args.stride or max(square // 2, 1)
        proposals = edge_boxes(image, EdgeBoxParams())[0] if args.score == "aggregated" else None
        positions = len(range(stride // 2, h, stride)) * len(range(stride // 2, w, stride))
        bar, update = _progress(positions, "position")
        with bar:
            return occlusion.run(args.model, args.weights, image, args.image.stem, _class(args.cls), args.layer,
                                 square, stride, out, args.score, _box(args.box), proposals, progress=update)
    if args.command == "evolution":
        first = Projector(args.model, views.snapshots(args.snapshots)[0][1], args.layer)
        images = load_images(args.images, first.size, args.voc_root, args.limit)
        units = parse_units(args.units, None, first.units)
        del first
        return views.evolution(args.model, args.snapshots, args.layer, units, images, out, args.images)
    projector = Projector(args.model, args.weights, args.layer)
    images = load_images(args.images, projector.size, args.voc_root, args.limit)
    if len(images.names) == 0:
        raise ToolError(f"--images {args.images}: no images")
    bar, update = _progress(len(images.names), "img")
    with bar:
        found = peaks(projector, images.images, progress=update)
    return views.top9(projector, images, parse_units(args.units, found, projector.units), out, found,
                      min(args.top, len(images.names)), args.images)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    out = args.out or ROOT / "output" / "visualize" / time.strftime("%Y%m%d-%H%M%S")
    problem = check_output_folder(out)
    if problem:
        raise ToolError(problem)
    for flag in ("model", "weights", "image", "snapshots"):
        path = getattr(args, flag, None)
        if path is not None and not path.exists():
            raise ToolError(f"--{flag} {path} not found")
    try:
        record = run(args, out)
    except (ProjectionError, FoldError, WeightsMismatch, DatasetError, ValueError) as err:
        raise ToolError(str(err)) from err
    logging.info("wrote %s and its JSON", out / record["picture"])
    print(out / record["picture"])
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "visualize"))
