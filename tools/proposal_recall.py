#!/usr/bin/env python3
"""Measures the Edge Boxes proposals that the dataset builder and
tools/infer.py use, on a VOC-layout dataset: the recall of ground-truth
instances (tight boxes of SegmentationObject) at IoU 0.5 and 0.7 by the
top 50 (what inference segments) and the top 2000 (what stage 2 draws
from) proposals, the mean best overlap, and the seconds of proposals per
image.

Edges follow --recipe (structured, from models/sed_model.yml.gz, or
--edge-model; gradient edges with a warning when it is missing) unless
--edges says otherwise. Proposals are not cached: the time is the real one.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from deconvnet.common.cli import positive_int, run_tool, setup_logging
from deconvnet.common.recipes import add_field_options, add_recipe_option, recipe_from_args
from deconvnet.data.crops import tight_box
from deconvnet.data.proposals import EdgeBoxParams, EdgeModelError, edge_boxes, edges_record, resolve_edges
from deconvnet.data.voc import DatasetError, VOCReader, read_split
from deconvnet.eval.proposal_recall import RecallReport


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", type=Path, required=True, help="VOCdevkit/VOC2012-layout folder")
    parser.add_argument("--split", default="val", help="ImageSets/Segmentation split (default val)")
    parser.add_argument("--list", type=Path, help="file of image ids instead of --split")
    parser.add_argument("--limit", type=positive_int, help="only the first N images")
    parser.add_argument("--max-boxes", type=positive_int, default=2000, help="proposals per image (default 2000)")
    parser.add_argument("--tops", type=positive_int, nargs="+", default=[50, 2000], help="k of the top-k rows")
    parser.add_argument("--edge-model", default="", help="structured-edge model.yml.gz")
    add_recipe_option(parser)
    add_field_options(parser, "edges", help=dict(edges="Edge Boxes' edges"))
    parser.add_argument("--json", type=Path, help="write the report as JSON")
    args = parser.parse_args(argv)
    setup_logging()
    recipe = recipe_from_args(args, "edges")
    try:
        params = EdgeBoxParams(max_boxes=args.max_boxes, edge_model=resolve_edges(recipe.edges, args.edge_model))
        reader = VOCReader(args.voc)
        ids = read_split(args.list) if args.list else reader.ids(args.split)
    except (EdgeModelError, DatasetError) as err:
        logging.error("proposal_recall: %s", err)
        return 1
    ids = ids[:args.limit] if args.limit else ids
    if not ids:
        logging.error("proposal_recall: no images in %s", args.list or f"split {args.split}")
        return 1
    result = RecallReport(tuple(args.tops))
    for image_id in tqdm(ids, unit="img", desc="proposals", dynamic_ncols=True):
        try:
            image = reader.image(image_id)
            gt = [tight_box(inst.mask) for inst in reader.instances(image_id) if inst.mask.any()]
        except DatasetError as err:
            logging.error("proposal_recall: %s", err)
            return 1
        start = time.perf_counter()
        boxes, _ = edge_boxes(image, params)
        result.add(gt, boxes, time.perf_counter() - start)
    print(f"Edge Boxes on {edges_record(params)['edges']} edges, {args.max_boxes} proposals at most per image\n")
    print(result.table())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(result.as_json(), **edges_record(params)), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "proposal_recall"))
