#!/usr/bin/env python3
"""Benchmark: the dense CRF's cost against its gain, on the demo's data and
model (a tools/demo.py run folder), in one run.

For each val image of the demo, the pipeline runs once without the CRF
(the demo's folded net, its proposals, max aggregation, softmax); then the
CRF of the release's settings runs on those probabilities with 10 (the
release's), 5, 3 and 1 mean-field iterations, and at half resolution (the
image and the probabilities halved, the spatial standard deviations
halved, 10 iterations, the marginals upsampled bilinearly). Each row gives
the val mean IoU and the CRF's seconds per image (the fastest of
--repeats), and per megapixel. The permutohedral lattice grows with the
image's extent in units of the kernels' widths and with its colours, not
with its pixels alone: time larger images themselves (tools/infer.py
--timings) rather than scale these.

Prints Markdown for docs/BENCHMARKS.md; --json writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from deconvnet.common.cli import run_tool
from deconvnet.common.machine import cpu_name
from deconvnet.common.recipes import RELEASE
from deconvnet.data.proposals import EdgeBoxParams, ProposalCache, resolve_edges
from deconvnet.data.voc import VOCReader
from deconvnet.eval.scoring import confusion, scores
from deconvnet.infer.crf import CRFParams, dense_crf
from deconvnet.infer.pipeline import Pipeline, Timings

ITERATIONS = (10, 5, 3, 1)


def half_resolution_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    """The CRF on the image and probabilities at half size, with the spatial
    standard deviations halved (the same kernels in the image's units), and
    the marginals upsampled to the full size."""
    h, w = image.shape[:2]
    small_h, small_w = max(h // 2, 1), max(w // 2, 1)
    small_image = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA)
    small = np.stack([cv2.resize(p, (small_w, small_h), interpolation=cv2.INTER_AREA) for p in probs])
    small /= small.sum(axis=0, keepdims=True)
    halved = replace(params, gaussian_sxy=params.gaussian_sxy / 2, bilateral_sxy=params.bilateral_sxy / 2)
    q = dense_crf(small_image, small, halved)
    return np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in q])


def configurations() -> dict[str, object]:
    rows: dict[str, object] = {"no CRF": None}
    for n in ITERATIONS:
        name = f"{n} iteration{'s' if n != 1 else ''}" + (" (the release's)" if n == 10 else "")
        rows[name] = CRFParams(iterations=n)
    rows["half resolution, 10 iterations"] = "half"
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo", type=Path, help="a tools/demo.py run folder (its models/ and data/)")
    parser.add_argument("--repeats", type=int, default=2, help="CRF runs timed per image and setting (default 2)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    from deconvnet.infer.models import DeconvNetModel

    import caffe

    caffe.set_mode_cpu()
    models, data = args.demo / "models", args.demo / "data"
    voc = data / "synthetic" / "VOCdevkit" / "VOC2012"
    if not (models / "deconvnet_folded.caffemodel").is_file() or not voc.is_dir():
        raise SystemExit(f"crf benchmark: {args.demo} is not a finished tools/demo.py run folder "
                         "(models/deconvnet_folded.caffemodel and data/synthetic are needed)")
    model = DeconvNetModel(models / "deconvnet_reduced_deploy_folded.prototxt", models / "deconvnet_folded.caffemodel")
    pipeline = Pipeline(model, min_box_side=0)  # the demo's settings: small images keep every proposal
    reader = VOCReader(voc)
    proposals = ProposalCache(data / "proposals_infer", EdgeBoxParams(edge_model=resolve_edges(RELEASE.edges)))
    rows = configurations()
    cms = {name: np.zeros((21, 21), np.int64) for name in rows}
    seconds = dict.fromkeys(rows, 0.0)
    ids = reader.ids("val")
    pixels = 0
    for image_id in ids:
        image = reader.image(image_id)
        gt = reader.class_map(image_id)
        pixels += gt.size
        prepared = pipeline.prepare(image, proposals.get(image_id, image)[0])
        score_maps, _ = pipeline.forward(image, prepared.crops, Timings())
        probs, _ = pipeline.finish(image, score_maps, prepared.enlarged, None, Timings())
        for name, setting in rows.items():
            best = float("inf")
            for _ in range(args.repeats if setting is not None else 1):
                start = time.perf_counter()
                if setting is None:
                    refined = probs
                elif setting == "half":
                    refined = half_resolution_crf(image, probs, CRFParams())
                else:
                    refined = dense_crf(image, probs, setting)  # type: ignore[arg-type]
                best = min(best, time.perf_counter() - start)
            seconds[name] += best if setting is not None else 0.0
            cms[name] += confusion(gt, refined.argmax(axis=0).astype(np.uint8))
    results = {name: dict(mean_iou=scores(cms[name], len(ids)).mean_iou, crf_seconds_per_image=seconds[name] / len(ids),
                          crf_seconds_per_megapixel=seconds[name] / (pixels / 1e6)) for name in rows}
    base = results["10 iterations (the release's)"]
    lines = [f"Machine: {cpu_name()}, one core (pydensecrf is single-threaded); {len(ids)} demo val images of "
             f"{pixels / len(ids) / 1e3:.0f} kpixels on average; the demo's trained folded net ({args.demo.name}).",
             "", "| CRF | val mean IoU | vs the release's | CRF s/image | s/megapixel |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['mean_iou'] * 100:.2f} | {(r['mean_iou'] - base['mean_iou']) * 100:+.2f} | "
                     f"{r['crf_seconds_per_image']:.3f} | {r['crf_seconds_per_megapixel']:.2f} |")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "crf benchmark"))
