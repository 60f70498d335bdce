#!/usr/bin/env python3
"""Benchmark: per-image inference time on the CPU for a 500x375 image with 50
proposals and the full-size DeconvNet (random weights): proposals, forward,
paste-back and aggregation, CRF. The vectorised paste-back and aggregation
is timed against a plain per-proposal, per-channel loop in the same run
(and their results compared). Prints Markdown for docs/BENCHMARKS.md."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from deconvnet.common.machine import cpu_name
from deconvnet.data.proposals import EdgeBoxParams, edge_boxes
from deconvnet.data.synthetic import SyntheticSpec, render
from deconvnet.infer.aggregation import paste_and_aggregate, proposal_batch, select_boxes, softmax
from deconvnet.infer.crf import CRFParams, dense_crf
from deconvnet.infer.models import DeconvNetModel


def loop_aggregate(score_maps: np.ndarray, boxes, image_shape, mode: str = "max") -> np.ndarray:
    """The straightforward port: per proposal, per channel, resize and merge."""
    h, w = image_shape[:2]
    c = score_maps.shape[1]
    canvas = np.full((c, h, w), -np.inf if mode == "max" else 0.0, np.float32)
    covered = np.zeros((h, w), np.int32)
    for scores, (x1, y1, x2, y2) in zip(score_maps, boxes, strict=True):
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 <= sx1 or sy2 <= sy1:
            continue
        covered[sy1:sy2, sx1:sx2] += 1
        for ch in range(c):
            resized = cv2.resize(scores[ch], (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
            part = resized[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1]
            if mode == "max":
                canvas[ch, sy1:sy2, sx1:sx2] = np.maximum(canvas[ch, sy1:sy2, sx1:sx2], part)
            else:
                canvas[ch, sy1:sy2, sx1:sx2] += part
    if mode == "max":
        for ch in range(c):
            canvas[ch][covered < len(score_maps)] = np.maximum(canvas[ch][covered < len(score_maps)], 0)
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proposals", type=int, default=50)
    parser.add_argument("--batch", type=int, default=10,
                        help="proposals per forward (default 10: 50 at once needs more than 24 GiB on CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the aggregation timing")
    args = parser.parse_args(argv)
    from deconvnet.net import nets

    import caffe

    caffe.set_mode_cpu()
    image = render(0, SyntheticSpec(min_side=375, max_side=375, seed=4))[0]
    image = cv2.resize(image, (500, 375))
    with tempfile.TemporaryDirectory() as tmp:
        deploy = Path(tmp) / "deploy.prototxt"
        deploy.write_text(str(nets.deconvnet_deploy(batch=args.batch)))
        net = caffe.Net(str(deploy), caffe.TEST)
        for name, params in net.params.items():
            if name.endswith("_bn"):
                params[0].data[...], params[1].data[...], params[2].data[...] = 0, 1, 1
        weights = Path(tmp) / "random.caffemodel"
        net.save(str(weights))
        del net
        model = DeconvNetModel(deploy, weights, batch=args.batch)

    times = {}
    start = time.perf_counter()
    boxes, _ = edge_boxes(image, EdgeBoxParams())
    boxes = select_boxes(boxes, image.shape, args.proposals)
    crops, enlarged = proposal_batch(image, boxes, model.size)
    times["proposals (edge boxes, crops)"] = time.perf_counter() - start
    start = time.perf_counter()
    maps = model.scores(crops)
    times[f"forward ({len(crops)} proposals, batches of {args.batch})"] = time.perf_counter() - start
    vec, loop = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        aggregated = paste_and_aggregate(maps, enlarged, image.shape, "max")
        vec.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference = loop_aggregate(maps, enlarged, image.shape, "max")
        loop.append(time.perf_counter() - start)
    np.testing.assert_allclose(aggregated, reference, atol=1e-4)
    times["paste-back + aggregation (vectorised)"] = min(vec)
    start = time.perf_counter()
    probs = softmax(aggregated)
    times["softmax"] = time.perf_counter() - start
    start = time.perf_counter()
    dense_crf(image, probs, CRFParams())
    times["dense CRF (10 iterations)"] = time.perf_counter() - start

    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Inference of one 500x375 image, {len(crops)} proposals, full DeconvNet, CPU; "
          f"peak RSS {peak:.0f} MiB")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores; Caffe with OpenBLAS")
    print()
    print("| step | seconds |")
    print("|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.3f} |")
    print(f"| total | {sum(times.values()):.2f} |")
    print()
    print(f"Paste-back + aggregation: vectorised {min(vec) * 1e3:.0f} ms vs per-proposal, per-channel "
          f"loop {min(loop) * 1e3:.0f} ms (same results): {min(loop) / min(vec):.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
