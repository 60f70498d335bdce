#!/usr/bin/env python3
"""Builds a stage-1 or stage-2 crop dataset in LMDB from VOC 2012 and SBD.

Stage 1: every annotated instance, its tight box enlarged 1.2x, cropped and
resized to 250x250; the label keeps only that instance's class.
Stage 2: edge-box proposals overlapping an instance's box with IoU >= 0.5,
enlarged the same way; the label keeps every class.
Both: classes balanced by repetition (an index; crops are stored once).

Proposals (stage 2) come from Edge Boxes on structured edges when
models/sed_model.yml.gz exists (tools/download.py sed-model) or --edge-model
names one, else on gradient edges with a warning; the manifest records
which. --recipe (release, the default, or paper; docs/REPRODUCE.md) decides
stage 1's void pixels and the edges; --stage1-void and --edges override.

An interrupted build resumes when rerun with the same arguments; the output
folder appears only when complete. See docs/DATASETS.md for the format.

--shard K/N (or a Slurm array task, by itself) builds only the K-th of N
parts of the image list, as <out>/shard-K-of-N (whole and resumable like any
database); data_prep/merge_shards.py <out> then writes the balanced index
over all shards, and the data layer reads <out> across them.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from deconvnet.common.cli import (
    add_options,
    check_output_folder,
    options_from_args,
    refuse_ineffective,
    run_tool,
    setup_logging,
)
from deconvnet.common.recipes import add_field_options, add_recipe_option, recipe_from_args
from deconvnet.common.sharding import add_shard_option, shard_from_env
from deconvnet.data.build_crops import BuildConfig, build
from deconvnet.data.crop_db import CropDBError
from deconvnet.data.proposals import EdgeBoxParams, EdgeModelError, resolve_edges
from deconvnet.data.voc import DatasetError

RECIPE_FIELDS = ("stage1_void", "edges")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, BuildConfig)
    parser.add_argument("--edge-model", default="",
                        help="structured-edge model.yml.gz (default: models/sed_model.yml.gz if present)")
    add_shard_option(parser, "image list, built as <out>/shard-K-of-N; data_prep/merge_shards.py <out> joins them")
    add_recipe_option(parser)
    add_field_options(parser, *RECIPE_FIELDS, help=dict(
        stage1_void="stage 1: VOC void pixels stay void (ignore) or become background",
        edges="stage 2: Edge Boxes on structured edges (falls back to gradient edges when the model is missing)"))
    args = parser.parse_args(argv)
    setup_logging()
    if refuse_ineffective("build_dataset", parser, argv, [
            (("edges", "edge_model", "min_iou", "max_proposals", "proposal_cache"), args.stage == 1,
             "in stage 1 (instance crops use no proposals)"),
            (("stage1_void",), args.stage == 2, "in stage 2 (it sets stage 1's void pixels)")]):
        return 2
    problem = check_output_folder(args.out.parent)
    if problem:
        logging.error("build_dataset: %s", problem)
        return 2
    recipe = recipe_from_args(args, *RECIPE_FIELDS)
    try:
        shard = args.shard or shard_from_env()
    except ValueError as err:
        logging.error("build_dataset: %s", err)
        return 2
    try:
        edge_model = resolve_edges(recipe.edges, args.edge_model) if args.stage == 2 else ""
        config = options_from_args(BuildConfig, args, stage1_void=recipe.stage1_void, recipe=recipe.name,
                                   edge_params=EdgeBoxParams(max_boxes=args.max_proposals, edge_model=edge_model),
                                   shard=shard)
        manifest = build(config)
    except (DatasetError, CropDBError, EdgeModelError) as err:
        logging.error("build_dataset: %s", err)
        return 1
    summary = {k: manifest[k] for k in ("images", "unique_records", "index_length", "skipped_count",
                                        "bytes_per_example", "class_counts_before", "class_counts_after")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "build_dataset"))
