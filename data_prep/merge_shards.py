#!/usr/bin/env python3
"""Joins a crop dataset built in shards (data_prep/build_dataset.py --shard
K/N, or a Slurm array) into one dataset, copying no crop: writes <out>/index.npy
(the balanced order over every shard's records, the same as an unsharded
build's with the same seed) and <out>/manifest.json (naming the shards).
SegDataLayer then reads <out> as its source, across the shards.

Refuses, naming them, shards that are missing or unfinished, shards of
different counts, and shards built with other arguments or another image
list.

  data_prep/merge_shards.py data/lmdb/stage2_train
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from deconvnet.common.cli import run_tool, setup_logging
from deconvnet.data.crop_db import CropDBError
from deconvnet.data.merge_shards import merge


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the --out of the sharded build (holds shard-K-of-N)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        manifest = merge(args.folder)
    except CropDBError as err:
        logging.error("merge_shards: %s", err)
        return 1
    print(json.dumps({k: manifest[k] for k in ("images", "unique_records", "index_length", "skipped_count",
                                               "shards")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "merge_shards"))
