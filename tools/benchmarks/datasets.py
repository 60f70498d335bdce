#!/usr/bin/env python3
"""Benchmark of the dataset pipeline on the synthetic dataset: edge-box
proposals per second, stage-2 crops written per second, bytes per stored
example, and SegDataLayer samples per second with 1 and 2 workers, with a
projection to the real dataset sizes, and the cost of the read-time checks
(CRC32 and label range) against the data layer's time per sample. Prints
Markdown for docs/BENCHMARKS.md."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deconvnet.common.cli import quiet_caffe, run_tool
from deconvnet.common.machine import cpu_name
from deconvnet.data.build_crops import BuildConfig, build
from deconvnet.data.image_sets import ImageSource
from deconvnet.data.layer_params import SegDataParams
from deconvnet.data.proposals import EdgeBoxParams, edge_boxes
from deconvnet.data.synthetic import SyntheticSpec, write_dataset
from deconvnet.net.nets import seg_data_net

REAL_IMAGES = 12031            # VOC trainval + SBD train/val
REAL_PIXELS = 500 * 375        # a typical VOC image
REAL_STAGE1, REAL_STAGE2 = 200_000, 2_700_000   # balanced examples (paper)


def data_layer_rate(db: Path, workers: int, batches: int, folder: Path) -> float:
    import caffe

    caffe.set_mode_cpu()
    params = SegDataParams(source=str(db), mirror=True, shuffle=True, workers=workers)
    net_path = folder / f"data_{workers}.prototxt"
    net_path.write_text(str(seg_data_net(params)))
    net = caffe.Net(str(net_path), caffe.TRAIN)
    net.forward()  # workers started, first batches in flight
    start = time.perf_counter()
    for _ in range(batches):
        net.forward()
    rate = batches * 8 / (time.perf_counter() - start)
    del net
    return rate


def read_check_cost(db_path: Path, passes: int = 5) -> tuple[float, float]:
    """Seconds per record to read and decode, with and without the checks,
    interleaved pass by pass so that both see the same machine state."""
    from deconvnet.data.crop_db import CropDB, decode_record

    db = CropDB(db_path)
    raws = [db.raw(n) for n in range(db.num_records)]
    times = {True: [], False: []}
    for _ in range(passes):
        for verify in (True, False):
            start = time.perf_counter()
            for value in raws:
                decode_record(value, verify)
            times[verify].append((time.perf_counter() - start) / len(raws))
    return min(times[True]), min(times[False])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=48, help="synthetic images (default 48)")
    parser.add_argument("--batches", type=int, default=60, help="data-layer batches timed (default 60)")
    args = parser.parse_args(argv)
    quiet_caffe()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_dataset(root / "syn", SyntheticSpec(num_images=args.images, seed=1))
        voc, sbd = root / "syn/VOCdevkit/VOC2012", root / "syn/benchmark_RELEASE/dataset"
        source = ImageSource(voc, sbd)
        refs = source.resolve("union")
        images = [source.image(r) for r in refs]
        pixels = float(np.mean([im.shape[0] * im.shape[1] for im in images]))

        start = time.perf_counter()
        counts = [len(edge_boxes(im, EdgeBoxParams())[0]) for im in images]
        proposal_time = (time.perf_counter() - start) / len(images)

        build(BuildConfig(stage=1, out=root / "s1", voc_root=voc, sbd_root=sbd, workers=2))
        # The first build fills the proposal cache; the second is timed.
        build(BuildConfig(stage=2, out=root / "s2_warmup", voc_root=voc, sbd_root=sbd, workers=2,
                          proposal_cache=root / "cache"))
        start = time.perf_counter()
        m2 = build(BuildConfig(stage=2, out=root / "s2", voc_root=voc, sbd_root=sbd, workers=2,
                               proposal_cache=root / "cache"))
        crops_per_s = m2["unique_records"] / (time.perf_counter() - start)

        m1 = json.loads((root / "s1" / "manifest.json").read_text())
        rates = {w: data_layer_rate(root / "s2", w, args.batches, root) for w in (1, 2)}
        checked, unchecked = read_check_cost(root / "s2")

    scale = REAL_PIXELS / pixels
    real_proposal_s = proposal_time * scale
    bytes_per = m2["bytes_per_example"]
    print(f"Dataset pipeline, synthetic dataset of {len(images)} images "
          f"(mean {pixels:.0f} pixels, {REAL_PIXELS / pixels:.1f}x fewer than a 500x375 VOC photo)")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}")
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| edge-box proposals (gradient edges), one process | {1 / proposal_time:.1f} images/s, "
          f"{np.mean(counts):.0f} boxes/image |")
    print(f"| stage-2 crops written (2 workers, proposals excluded) | {crops_per_s:.0f} crops/s |")
    print(f"| bytes per stored example (JPEG q95 + PNG label + metadata) | stage 1: "
          f"{m1['bytes_per_example'] / 1024:.1f} KiB, stage 2: {bytes_per / 1024:.1f} KiB |")
    for w, rate in rates.items():
        print(f"| SegDataLayer, batch 8, 224 crops, {w} worker(s) | {rate:.0f} samples/s |")
    check = max(checked - unchecked, 0.0)
    print(f"| record decode with / without the read-time checks (CRC32, labels) | {checked * 1e6:.0f} / "
          f"{unchecked * 1e6:.0f} us per record |")
    print(f"| the checks' share of the data layer's time per sample (1 worker) | "
          f"{check * rates[1] * 100:.1f}% |")
    print()
    print("Projection to the real data (12031 images):")
    print()
    print(f"- proposals: about {real_proposal_s:.2f} s per 500x375 image (pixel-scaled), "
          f"{real_proposal_s * REAL_IMAGES / 3600:.1f} h for all images in one process, "
          f"{real_proposal_s * REAL_IMAGES / 3600 / (os.cpu_count() or 1):.1f} h on these "
          f"{os.cpu_count()} cores;")
    print(f"- storage: crops are stored once, so stage 1 needs at most "
          f"{REAL_STAGE1 * m1['bytes_per_example'] / 2**30:.1f} GiB and stage 2 at most "
          f"{REAL_STAGE2 * bytes_per / 2**30:.1f} GiB (if no balanced example were a repeat);")
    print(f"- writing {REAL_STAGE2:,} stage-2 crops at {crops_per_s:.0f}/s: "
          f"{REAL_STAGE2 / crops_per_s / 3600:.1f} h at most;")
    print(f"- the data layer delivers {rates[2]:.0f} samples/s with 2 workers, against "
          "the paper's Titan X training rate of about 7.4 samples/s.")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "datasets"))
