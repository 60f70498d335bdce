#!/usr/bin/env python3
"""Writes the built-in synthetic dataset: VOC 2012 layout plus SBD .mat files
for part of it (see deconvnet/data/synthetic.py). Deterministic for a seed."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deconvnet.common.cli import run_tool, setup_logging
from deconvnet.data.synthetic import SyntheticSpec, write_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("data/synthetic"),
                        help="root folder (default data/synthetic); VOCdevkit/ and benchmark_RELEASE/ go inside")
    parser.add_argument("--images", type=int, default=48, help="number of images (default 48)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_logging()
    splits = write_dataset(args.out, SyntheticSpec(num_images=args.images, seed=args.seed))
    for name, ids in splits.items():
        logging.info("%-9s %d images", name, len(ids))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "make_synthetic"))
