#!/usr/bin/env python3
"""Builds a stage-1 or stage-2 crop dataset in LMDB from VOC 2012 and SBD.

Stage 1: every annotated instance, its tight box enlarged 1.2x, cropped and
resized to 250x250; the label keeps only that instance's class.
Stage 2: edge-box proposals overlapping an instance's box with IoU >= 0.5,
enlarged the same way; the label keeps every class.
Both: classes balanced by repetition (an index; crops are stored once).

An interrupted build resumes when rerun with the same arguments; the output
folder appears only when complete. See docs/DATASETS.md for the format.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from deconvnet.build_crops import BuildConfig, build
from deconvnet.crop_db import CropDBError
from deconvnet.proposals import EdgeBoxParams
from deconvnet.voc import DatasetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", type=int, choices=(1, 2), required=True)
    parser.add_argument("--out", type=Path, required=True, help="database folder, e.g. data/lmdb/stage1_train")
    parser.add_argument("--voc", type=Path, help="VOCdevkit/VOC2012 folder")
    parser.add_argument("--sbd", type=Path, help="benchmark_RELEASE/dataset folder")
    parser.add_argument("--image-set", default="union",
                        help="union (VOC trainval + SBD train/val, the paper's), union-minus-voc-val "
                             "(the same without VOC val images, for a clean val score), voc:SPLIT or sbd:SPLIT")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--min-iou", type=float, default=0.5, help="stage 2: proposal-instance IoU (default 0.5)")
    parser.add_argument("--max-proposals", type=int, default=2000, help="stage 2: proposals per image")
    parser.add_argument("--edge-model", default="", help="structured-edge model.yml.gz (default: gradient edges)")
    parser.add_argument("--proposal-cache", type=Path, help="default: <out>/../proposals")
    parser.add_argument("--max-repeat", type=float, help="cap on each class's repetition factor")
    parser.add_argument("--no-balance", action="store_true", help="store the order unbalanced (e.g. for validation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=250, help="stored crop side (default 250)")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--strict", action="store_true", help="fail on unreadable images instead of skipping")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = BuildConfig(stage=args.stage, out=args.out, voc_root=args.voc, sbd_root=args.sbd,
                         image_set=args.image_set, stored_size=args.size, min_iou=args.min_iou,
                         max_proposals=args.max_proposals, max_repeat=args.max_repeat,
                         balance=not args.no_balance, seed=args.seed, workers=args.workers,
                         strict=args.strict, limit=args.limit, proposal_cache=args.proposal_cache,
                         edge_params=EdgeBoxParams(max_boxes=args.max_proposals, edge_model=args.edge_model))
    try:
        manifest = build(config)
    except (DatasetError, CropDBError) as err:
        logging.error("build_dataset: %s", err)
        return 1
    summary = {k: manifest[k] for k in ("images", "unique_records", "index_length", "skipped_count",
                                        "bytes_per_example", "class_counts_before", "class_counts_after")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
