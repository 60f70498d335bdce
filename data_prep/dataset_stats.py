#!/usr/bin/env python3
"""Prints a crop database's statistics (from its manifest and index), and
optionally writes a class histogram plot and a contact sheet of random
examples with their labels overlaid in the VOC colours."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from deconvnet.common.cli import run_tool, setup_logging
from deconvnet.common.constants import CLASSES
from deconvnet.data.crop_db import CropDBError, CropSource, open_crop_db
from deconvnet.data.voc import colorize


def contact_sheet(db: CropSource, count: int, seed: int, tile: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(db.index), size=min(count, len(db.index)), replace=False)
    cols = int(np.ceil(np.sqrt(len(picks))))
    rows = int(np.ceil(len(picks) / cols))
    sheet = np.full((rows * tile, cols * tile, 3), 255, np.uint8)
    for k, pos in enumerate(picks):
        record = db.get(int(db.index[pos]))
        colours = colorize(record.label)
        blend = np.where((record.label == 0)[..., None], record.image,
                         (0.45 * record.image + 0.55 * colours).astype(np.uint8))
        blend = cv2.resize(blend, (tile, tile), interpolation=cv2.INTER_AREA)
        name = CLASSES[record.meta.get("cls", 0)]
        cv2.putText(blend, name, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
        cv2.putText(blend, name, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        r, c = divmod(k, cols)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = blend
    return sheet


def histogram_plot(manifest: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c for c in CLASSES if c in manifest["class_counts_after"] or c in manifest["class_counts_before"]]
    before = [manifest["class_counts_before"].get(c, 0) for c in names]
    after = [manifest["class_counts_after"].get(c, 0) for c in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.5), 4))
    ax.bar(x - 0.2, before, 0.4, label="unique crops")
    ax.bar(x + 0.2, after, 0.4, label="after balancing")
    ax.set_xticks(x, names, rotation=60, ha="right")
    ax.set_ylabel("examples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db", type=Path, help="crop database folder")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet PNG here")
    parser.add_argument("--plot", type=Path, help="write a class histogram PNG here")
    parser.add_argument("--count", type=int, default=25, help="examples on the sheet (default 25)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        db = open_crop_db(args.db)
    except CropDBError as err:
        logging.error("%s", err)
        return 1
    m = db.manifest
    print(f"{args.db}: stage {m['params']['stage']}, {m['images']} source images, "
          f"{m['unique_records']} unique crops, {m['index_length']} in the balanced index, "
          f"{m['bytes_per_example'] / 1024:.1f} KiB per crop, {m['skipped_count']} images skipped")
    print(f"{'class':<14}{'unique':>10}{'balanced':>10}")
    for name in CLASSES:
        b, a = m["class_counts_before"].get(name, 0), m["class_counts_after"].get(name, 0)
        if a or b:
            print(f"{name:<14}{b:>10}{a:>10}")
    for item in m["skipped"][:20]:
        print(f"skipped {item['image']}: {item['reason']}")
    if args.plot:
        histogram_plot(m, args.plot)
        logging.info("wrote %s", args.plot)
    if args.sheet:
        cv2.imwrite(str(args.sheet), contact_sheet(db, args.count, args.seed))
        logging.info("wrote %s", args.sheet)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "dataset_stats"))
