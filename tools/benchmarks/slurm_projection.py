#!/usr/bin/env python3
"""Benchmark and projection: wall time of the dataset build and of batch
inference as Slurm job arrays of N tasks, for the paper's 12,031 images and
a 10x larger set, from per-image rates measured here.

Measured in this run, on the built-in synthetic dataset: a stage-2 build in
one process (proposals on gradient edges, crops, LMDB writes), per image and
scaled by pixel count to a 500x375 VOC photo; the same images built as 4
shards one after another (the sharding overhead) and merged (the merge's
time per record, scaled to the paper's 2.7 million stage-2 records). The
inference time per image is --infer-seconds: by default the folded full
net's on this machine's CPU (tools/benchmarks/inference.py, in
docs/BENCHMARKS.md). A task is one process on its share of the list
(ceil(images / N) images); queue waits are not included. Prints Markdown.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from deconvnet.common.cli import run_tool
from deconvnet.common.machine import cpu_name
from deconvnet.common.sharding import Shard
from deconvnet.data.build_crops import BuildConfig, build
from deconvnet.data.image_sets import ImageSource
from deconvnet.data.merge_shards import merge
from deconvnet.data.proposals import EdgeBoxParams
from deconvnet.data.synthetic import SyntheticSpec, write_dataset

PAPER_IMAGES = 12031
PAPER_STAGE2_RECORDS = 2_700_000
VOC_PIXELS = 500 * 375
TASKS = (1, 4, 16, 64, 256)
INFER_SECONDS_CPU = 21.5  # folded full net, 50 proposals, CRF; docs/BENCHMARKS.md


def hours(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def measure(folder: Path, images: int) -> dict[str, float]:
    write_dataset(folder / "syn", SyntheticSpec(num_images=images, seed=1))
    voc, sbd = folder / "syn" / "VOCdevkit" / "VOC2012", folder / "syn" / "benchmark_RELEASE" / "dataset"
    source = ImageSource(voc, sbd)
    refs = source.resolve("union")
    pixels = sum(source.image(ref).shape[0] * source.image(ref).shape[1] for ref in refs) / len(refs)
    config = BuildConfig(stage=2, out=folder / "single", voc_root=voc, sbd_root=sbd, workers=1,
                         edge_params=EdgeBoxParams(), proposal_cache=folder / "proposals_single")
    start = time.perf_counter()
    single = build(config)
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    for k in range(4):
        build(replace(config, out=folder / "sharded", shard=Shard(k, 4), proposal_cache=folder / "proposals_sh"))
    sharded_s = time.perf_counter() - start
    start = time.perf_counter()
    merged = merge(folder / "sharded")
    merge_s = time.perf_counter() - start
    scale = VOC_PIXELS / pixels
    return dict(images=len(refs), pixels=pixels, build_per_image=single_s / len(refs) * scale,
                shard_overhead=sharded_s / single_s - 1, merge_per_record=merge_s / max(merged["unique_records"], 1),
                records=single["unique_records"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48, help="synthetic images measured (default 48)")
    parser.add_argument("--infer-seconds", type=float, default=INFER_SECONDS_CPU,
                        help=f"inference seconds per image (default {INFER_SECONDS_CPU}: CPU, folded)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        m = measure(Path(tmp), args.images)
    merge_s = m["merge_per_record"] * PAPER_STAGE2_RECORDS
    print(f"Slurm job arrays: projection from rates measured on {cpu_name()}, {os.cpu_count()} cores")
    print()
    print(f"- stage-2 build, one process: {m['build_per_image']:.2f} s per 500x375 image (measured on "
          f"{m['images']} synthetic images of {m['pixels']:.0f} pixels on average, scaled by pixel count; "
          f"{m['records']} records)")
    print(f"- the same images as 4 shards, one after another: {m['shard_overhead'] * 100:+.0f}% time "
          "(each shard fingerprints the whole list and opens its own database)")
    print(f"- merge: {m['merge_per_record'] * 1e6:.1f} us per record, {merge_s:.0f} s for "
          f"{PAPER_STAGE2_RECORDS:,} records")
    print(f"- inference: {args.infer_seconds:.1f} s per image (--infer-seconds)")
    print()
    print("| tasks | stage-2 build, 12,031 images | 10x: 120,310 | inference, 12,031 images | 10x: 120,310 |")
    print("|---|---|---|---|---|")
    for n in TASKS:
        cells = []
        for per_image, extra in ((m["build_per_image"], merge_s), (args.infer_seconds, 0.0)):
            for images in (PAPER_IMAGES, 10 * PAPER_IMAGES):
                scale_extra = extra * images / PAPER_IMAGES
                cells.append(hours(math.ceil(images / n) * per_image + scale_extra))
        print(f"| {n} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "slurm_projection"))
