#!/usr/bin/env python3
"""Benchmark: Zeiler-Fergus visualisation (tools/visualize.py) on the demo's
model and val images (a tools/demo.py run folder), in one run:

- top-9 of one layer over the val set, end to end as the tool runs it
  (loading the projection net, the search, the projections, the PNG and
  JSON), for the default 8 units and for every unit of the layer;
- one projection (batch 1) against one forward pass to the same layer, for
  the demo's reduced net and for the full-size DeconvNet at 224 x 224
  (random weights: the cost does not depend on them), each the median of
  --repeats.

Prints Markdown for docs/BENCHMARKS.md; --json writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deconvnet.common.cli import run_tool
from deconvnet.common.machine import cpu_name
from deconvnet.net import nets
from deconvnet.net.projection import PROJECTION, UNITS, chosen_blob, fold_if_needed, projection_net
from deconvnet.visualize import views
from deconvnet.visualize.projector import Projector, to_input
from deconvnet.visualize.sources import load_images
from deconvnet.visualize.top9 import peaks


def _median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def top9_seconds(model: Path, weights: Path, demo: Path, layer: str, units: str, out: Path) -> tuple[float, int]:
    start = time.perf_counter()
    projector = Projector(model, weights, layer)
    images = load_images(f"demo:{demo}", projector.size)
    found = peaks(projector, images.images)
    chosen = list(range(projector.units)) if units == "all" else found.strongest_units(int(units))
    views.top9(projector, images, chosen, out, found)
    return time.perf_counter() - start, len(chosen)


def full_size_costs(layer: str, repeats: int) -> dict[str, float]:
    """Seconds of one projection and of one forward pass to ``layer`` in the
    full-size DeconvNet's projection net, random weights."""
    import caffe

    deploy = nets.deconvnet_deploy()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "projection.prototxt"
        path.write_text(str(projection_net(deploy, layer)))
        net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.default_rng(0)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.normal(0, 0.01, blob.data.shape)
    net.blobs["data"].data[...] = rng.normal(0, 50, net.blobs["data"].data.shape)
    net.blobs[UNITS].data[...] = 0
    forward_layers = list(fold_if_needed(deploy).layer)
    last = forward_layers[chosen_blob(forward_layers, layer)[1]].name
    net.forward()
    return dict(projection=_median_seconds(lambda: net.forward()[PROJECTION], repeats),
                forward=_median_seconds(lambda: net.forward(end=last), repeats))


def reduced_costs(projector: Projector, demo: Path, repeats: int) -> dict[str, float]:
    images = load_images(f"demo:{demo}", projector.size, limit=1)
    inputs = to_input(images.images)
    return dict(projection=_median_seconds(lambda: projector.project(inputs, [0]), repeats),
                forward=_median_seconds(lambda: projector.features(inputs), repeats))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo", type=Path, help="a tools/demo.py run folder (its models/ and data/)")
    parser.add_argument("--layer", default="conv5_3", help="the layer (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per single-projection timing (default 5)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    import caffe

    caffe.set_mode_cpu()
    model = args.demo / "models" / "deconvnet_reduced_deploy_folded.prototxt"
    weights = args.demo / "models" / "deconvnet_folded.caffemodel"
    if not weights.is_file():
        raise SystemExit(f"visualize benchmark: {args.demo} is not a finished tools/demo.py run folder "
                         "(no models/deconvnet_folded.caffemodel)")
    results: dict = dict(machine=cpu_name(), layer=args.layer)
    with tempfile.TemporaryDirectory() as out:
        for units in ("8", "all"):
            seconds, count = top9_seconds(model, weights, args.demo, args.layer, units, Path(out))
            results[f"top9_{units}"] = dict(seconds=seconds, units=count)
    projector = Projector(model, weights, args.layer)
    results["images"] = len(load_images(f"demo:{args.demo}", projector.size).names)
    results["reduced"] = reduced_costs(projector, args.demo, args.repeats)
    results["full_size"] = full_size_costs(args.layer, args.repeats)
    print(f"Machine: {results['machine']}; layer {args.layer}; {results['images']} val images of the demo.\n")
    print("| what | seconds |\n|---|---|")
    for units in ("8", "all"):
        row = results[f"top9_{units}"]
        print(f"| top-9 over the val set, {row['units']} units, end to end | {row['seconds']:.2f} |")
    for name, title in (("reduced", "reduced net (64 px, widths /8)"), ("full_size", "full DeconvNet (224 px)")):
        costs = results[name]
        print(f"| {title}: one projection | {costs['projection']:.4f} |")
        print(f"| {title}: forward to {args.layer} alone | {costs['forward']:.4f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "benchmark visualize"))
