#!/usr/bin/env python3
"""Scores segmentations with the PASCAL VOC comp6 protocol: one 21x21
confusion matrix over the whole set (ground-truth void 255 ignored), IoU =
TP / (TP + FP + FN) per class, mean over the classes present (a class in
neither ground truth nor prediction is n/a), and pixel accuracy.

Predictions are PNGs named <id>.png holding class indices 0..20 (indexed
PNGs in the VOC palette, as tools/infer.py writes them).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from deconvnet.common.atomic import atomic_path
from deconvnet.common.cli import check_output_file, run_tool, setup_logging
from deconvnet.data.voc import DatasetError, read_split
from deconvnet.eval.scoring import EvaluationError, evaluate_dirs, score_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt-dir", type=Path, required=True, help="SegmentationClass PNGs")
    parser.add_argument("--pred-dir", type=Path, required=True, help="predicted label PNGs")
    parser.add_argument("--list", type=Path, help="image ids to score (default: every ground-truth PNG)")
    parser.add_argument("--json", type=Path, help="write the scores as JSON (IoUs as fractions)")
    parser.add_argument("--compare-paper", action="store_true", help="add the paper's VOC 2012 test rows")
    parser.add_argument("--name", default="ours", help="row label (default: ours)")
    args = parser.parse_args(argv)
    setup_logging()
    problem = check_output_file(args.json, "--json") if args.json else None
    if problem:
        logging.error("eval_voc: %s", problem)
        return 2
    try:
        ids = read_split(args.list) if args.list else None
        result, _ = evaluate_dirs(args.gt_dir, args.pred_dir, ids)
    except (EvaluationError, DatasetError) as err:
        logging.error("eval_voc: %s", err)
        return 1
    print(score_table(result, args.name, args.compare_paper))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(result.as_json(), indent=2, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "eval_voc"))
