#!/usr/bin/env python3
"""Benchmark: tools/infer.py's seconds per image against --workers, in one
run, on synthetic 500x375 images with 50 edge-box proposals and the dense
CRF (the release's 10 iterations):

  reduced net, --workers 0, 1, 2   the demo's net (input 64, widths /8):
                                   its forward pass is cheap, so the CPU
                                   stages set the time, as on a GPU
  reduced net, --workers 0 and 2   with OPENBLAS_NUM_THREADS=1 (Caffe's
    with one BLAS thread           forward pass on one thread: OpenBLAS's
                                   threads spin, and wait for each other,
                                   on cores the workers need)
  reduced net, 2 serial shards     two --workers 0 processes at once,
                                   one per core: what 2 cores give when
                                   nothing is shared, the ceiling the
                                   pipelined runs are held against
  full folded net, --workers 0, 1  the forward pass dominates

Each configuration is a tools/infer.py run of its own into a fresh folder
(proposals computed, not cached), read back from its --timings: the wall
seconds per image and each stage's busy seconds. From the serial reduced
run's stage times comes a projection for a 16-core GPU node (stated with
its assumptions).

The reduced net is the demo's folded one with --demo RUN (a tools/demo.py
run folder), else one with random weights of the same shape; the full
folded net has random weights. Prints Markdown for docs/BENCHMARKS.md;
--json writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from deconvnet.common.cli import PROTOTXT, ROOT, run_tool
from deconvnet.common.machine import cpu_name, usable_cores
from deconvnet.data.synthetic import SyntheticSpec, render

REDUCED_WORKERS = (0, 1, 2)
FULL_WORKERS = (0, 1)
STAGES = ("proposals", "forward", "aggregation", "crf", "fcn", "writing")
# The projection's assumptions: a GPU node's cores as fast as these, workers
# scaling linearly, and the forward pass of 50 proposals of the folded full
# net on an H100/H200-class GPU (3.1 TFLOP an image at about 30 TFLOP/s of
# FP32 cuDNN convolution: an estimate, no GPU was measured).
NODE_CORES = 16
ONE_BLAS_THREAD = "OPENBLAS_NUM_THREADS=1"
GPU_FORWARD_S = 0.1


def make_images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    spec = SyntheticSpec(min_side=375, max_side=375, seed=29)
    for i in range(count):
        cv2.imwrite(str(folder / f"img{i:03d}.png"), cv2.resize(render(i, spec)[0], (500, 375)))
    return folder


def random_net(prototxt: Path, out: Path, seed: int = 0) -> Path:
    """He-initialised weights (identity BatchNorm where there is one)."""
    import caffe

    caffe.set_mode_cpu()
    net = caffe.Net(str(prototxt), caffe.TEST)
    rng = np.random.default_rng(seed)
    kinds = {name: layer.type for name, layer in zip(net._layer_names, net.layers, strict=True)}
    for name, blobs in net.params.items():
        shape = blobs[0].data.shape
        if kinds[name] in ("Convolution", "Deconvolution", "InnerProduct"):
            fan_in = np.prod(shape[1:]) if kinds[name] != "Deconvolution" else shape[0] * np.prod(shape[2:])
            blobs[0].data[...] = rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)
            if len(blobs) > 1:
                blobs[1].data[...] = 0
        elif kinds[name] == "BatchNorm":
            blobs[0].data[...], blobs[1].data[...], blobs[2].data[...] = 0, 1, 1
    net.save(str(out))
    return out


def reduced_model(demo: Path | None, folder: Path) -> tuple[Path, Path, str]:
    if demo is not None:
        models = demo / "models"
        return (models / "deconvnet_reduced_deploy_folded.prototxt", models / "deconvnet_folded.caffemodel",
                f"the demo's trained folded net ({demo})")
    from deconvnet.net import nets
    from deconvnet.net.architecture import Size

    prototxt = folder / "reduced_folded.prototxt"
    prototxt.write_text(str(nets.deconvnet_deploy(size=Size(64, 8), folded=True)))
    return prototxt, random_net(prototxt, folder / "reduced.caffemodel"), "random weights, the demo's shape"


def infer_args(images: Path, model: tuple[Path, Path], out: Path, workers: int, count: int,
               timings: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The tools/infer.py command on the first `count` images (linked into a folder of their own)."""
    folder = out.parent / f"{out.name}_in"
    if not folder.exists():
        folder.mkdir()
        for path in sorted(images.iterdir())[:count]:
            os.symlink(path, folder / path.name)
    return [sys.executable, str(ROOT / "tools" / "infer.py"), str(folder), "--out", str(out), "--model",
            str(model[0]), "--weights", str(model[1]), "--crf", "--workers", str(workers), "--min-box-side", "0",
            "--timings", str(timings), *extra]


def finish(process: subprocess.Popen, args: list[str], timings: Path) -> dict:
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"infer failed ({' '.join(args)}):\n{stderr[-3000:]}")
    return json.loads(timings.read_text())


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, GLOG_minloglevel="2", **(env or {})))


def run_infer(images: Path, model: tuple[Path, Path], out: Path, workers: int, count: int,
              env: dict[str, str] | None = None) -> dict:
    timings = out.parent / f"{out.name}.json"
    args = infer_args(images, model, out, workers, count, timings)
    return finish(start(args, env), args, timings)


def run_shards(images: Path, model: tuple[Path, Path], out: Path, count: int, shards: int = 2) -> dict:
    """`shards` serial processes at once on one split: the wall per image is
    the slowest shard's wall over all the images; busy times are the mean
    over the shards' images."""
    runs = []
    for k in range(shards):
        timings = out.parent / f"{out.name}_shard{k}.json"
        args = infer_args(images, model, out, 0, count, timings, ("--shard", f"{k}/{shards}"))
        runs.append((start(args), args, timings))
    records = [finish(*run) for run in runs]
    done = sum(r["images"] for r in records)
    busy = {stage: sum(r["seconds_per_image"][stage] * r["images"] for r in records) / done
            for stage in records[0]["seconds_per_image"]}
    wall = max(r["wall_seconds_per_image"] * r["images"] for r in records)
    return dict(images=done, workers=f"{shards} shards", seconds_per_image=busy, wall_seconds_per_image=wall / done)


def projection(serial: dict) -> dict:
    busy = serial["seconds_per_image"]
    cpu = sum(busy[k] for k in ("proposals", "aggregation", "crf", "writing"))
    workers = NODE_CORES - 1
    return dict(cpu_seconds_per_image=cpu, workers=workers, gpu_forward_s=GPU_FORWARD_S,
                seconds_per_image=max(cpu / workers, GPU_FORWARD_S), cpu_bound=cpu / workers > GPU_FORWARD_S)


def report(results: dict, reduced_what: str, images: dict[str, int]) -> str:
    lines = [f"Machine: {cpu_name()}, {usable_cores()} usable cores; 500x375 synthetic images, 50 proposals, "
             f"dense CRF (10 iterations). Reduced net: {reduced_what}.", "",
             "| net | --workers | images | s/image (wall) | vs --workers 0 | busy s/image: proposals | forward | "
             "aggregation | CRF | writing |", "|---|---|---|---|---|---|---|---|---|---|"]
    for net in ("reduced", "full folded"):
        rows = results[net]
        base = rows[0]["wall_seconds_per_image"]
        for workers, row in rows.items():
            busy = row["seconds_per_image"]
            lines.append(f"| {net} | {workers} | {images[net]} | {row['wall_seconds_per_image']:.2f} | "
                         f"{base / row['wall_seconds_per_image']:.2f}x | {busy['proposals']:.2f} | "
                         f"{busy['forward']:.2f} | {busy['aggregation']:.2f} | {busy['crf']:.2f} | "
                         f"{busy['writing']:.2f} |")
    p = results["projection"]
    lines += ["", f"Projection for a {NODE_CORES}-core GPU node (--workers {p['workers']}): the CPU stages take "
              f"{p['cpu_seconds_per_image']:.2f} core-seconds an image here, so {p['workers']} workers finish one "
              f"every {p['cpu_seconds_per_image'] / p['workers']:.2f} s; with the forward pass on the GPU at an "
              f"assumed {GPU_FORWARD_S:.2f} s per image (50 proposals, folded, H100/H200 class: an estimate), "
              f"about **{p['seconds_per_image']:.2f} s per image** "
              f"({'the CPU stages' if p['cpu_bound'] else 'the GPU'} set the pace). Assumes the node's cores "
              "are as fast as these and the workers scale linearly."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, help="a tools/demo.py run folder: its folded net is the reduced net")
    parser.add_argument("--images", type=int, default=8, help="images per reduced-net run (default 8)")
    parser.add_argument("--full-images", type=int, default=2, help="images per full-net run (default 2)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="pipelined_bench_") as tmp:
        folder = Path(tmp)
        images = make_images(folder / "images", max(args.images, args.full_images))
        reduced = reduced_model(args.demo, folder)
        full = (PROTOTXT / "deconvnet_deploy_folded.prototxt",
                random_net(PROTOTXT / "deconvnet_deploy_folded.prototxt", folder / "full.caffemodel"))
        for net, model, workers_list, count in (("reduced", reduced[:2], REDUCED_WORKERS, args.images),
                                                ("full folded", full, FULL_WORKERS, args.full_images)):
            results[net] = {}
            for workers in workers_list:
                name = f"{net.replace(' ', '_')}_w{workers}"
                print(f"running {name} ...", file=sys.stderr)
                results[net][workers] = run_infer(images, model, folder / name, workers, count)
            if net == "reduced":
                for workers in (0, 2):  # Caffe's OpenBLAS on one thread: no threads spinning beside the workers
                    print(f"running reduced_w{workers}_blas1 ...", file=sys.stderr)
                    results[net][f"{workers}, {ONE_BLAS_THREAD}"] = run_infer(
                        images, model, folder / f"reduced_w{workers}_blas1", workers, count,
                        {"OPENBLAS_NUM_THREADS": "1"})
                print("running reduced_shards ...", file=sys.stderr)
                results[net]["2 serial shards"] = run_shards(images, model, folder / "reduced_shards", count)
        results["projection"] = projection(results["reduced"][0])
    text = report(results, reduced[2], {"reduced": args.images, "full folded": args.full_images})
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "benchmark"))
