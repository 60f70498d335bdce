#!/usr/bin/env python3
"""GPU benchmark of the full DeconvNet, Caffe against PyTorch on the same GPU:

  - training throughput (samples/s): batch 8 x iter_size 8 (the solvers'),
    SGD with momentum, train-mode BatchNorm;
  - forward time of one image's 50 proposals as one batch;
  - end-to-end seconds per 500x375 image: proposals, forward, aggregation, CRF;
  - peak GPU memory of each.

Beside them: the paper's Titan X (about 7.4 samples/s) and this GPU's fp32
peak as the physical limit (from --peak-tflops or a table of known GPUs).
Each side runs in its own process. Prints Markdown for docs/BENCHMARKS.md.
--cpu with a reduced --width-divisor runs the same code as a smoke test.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Dense fp32 peak (TFLOPS, non-tensor-core) of GPUs this may run on.
FP32_PEAK = {"H100 80GB HBM3": 66.9, "H100 PCIe": 51.2, "H200": 66.9, "A100": 19.5, "L40S": 91.6,
             "RTX 4090": 82.6, "GeForce GTX TITAN X": 6.6}


def gpu_name(gpu: int) -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", str(gpu)],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        return out or "unknown GPU"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown GPU"


class MemoryWatch:
    """Peak memory in use on a GPU, polled with nvidia-smi."""

    def __init__(self, gpu: int | None) -> None:
        self.gpu, self.peak, self._stop = gpu, 0, threading.Event()

    def __enter__(self):
        if self.gpu is not None:
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                      "-i", str(self.gpu)], capture_output=True, text=True, timeout=10).stdout
                self.peak = max(self.peak, int(out.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(0.2)

    def __exit__(self, *exc) -> None:
        self._stop.set()


def caffe_worker(args) -> dict:
    import numpy as np

    from deconvnet.data.proposals import edge_boxes
    from deconvnet.data.synthetic import SyntheticSpec, render
    from deconvnet.infer.crf import CRFParams
    from deconvnet.infer.models import DeconvNetModel
    from deconvnet.infer.pipeline import Pipeline
    from deconvnet.net import nets

    import caffe
    from caffe import layers as L

    if args.cpu:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(args.gpu)
        caffe.set_mode_gpu()
    size = nets.Size(224, args.width_divisor)
    result = {}
    with tempfile.TemporaryDirectory() as tmp, MemoryWatch(None if args.cpu else args.gpu) as watch:
        def data(n):
            n.data = L.Input(shape=dict(dim=[args.batch, 3, 224, 224]))
            n.label = L.Input(shape=dict(dim=[args.batch, 1, 224, 224]))

        net_path = Path(tmp) / "train.prototxt"
        net_path.write_text(str(nets.deconvnet_train_test(True, "unused", args.batch, size, data=data)))
        solver_path = Path(tmp) / "solver.prototxt"
        solver_path.write_text(f'net: "{net_path}"\nbase_lr: 0.001\nlr_policy: "fixed"\nmomentum: 0.9\n'
                               f'weight_decay: 0.0005\niter_size: {args.iter_size}\n'
                               f'solver_mode: {"CPU" if args.cpu else "GPU"}\n')
        solver = caffe.SGDSolver(str(solver_path))
        rng = np.random.default_rng(0)
        solver.net.blobs["data"].data[...] = rng.normal(0, 50, solver.net.blobs["data"].data.shape)
        solver.net.blobs["label"].data[...] = rng.integers(0, 21, solver.net.blobs["label"].data.shape)
        solver.step(1)  # warm-up: cuDNN algorithm choice, allocations
        start = time.perf_counter()
        solver.step(args.iterations)
        seconds = time.perf_counter() - start
        result["train_samples_per_s"] = args.iterations * args.batch * args.iter_size / seconds
        del solver

        deploy = Path(tmp) / "deploy.prototxt"
        deploy.write_text(str(nets.deconvnet_deploy(batch=50, size=size)))
        model = caffe.Net(str(deploy), caffe.TEST)
        weights = Path(tmp) / "w.caffemodel"
        model.save(str(weights))
        del model
        deconvnet = DeconvNetModel(deploy, weights, batch=50)
        crops = rng.normal(0, 50, (50, 3, 224, 224)).astype(np.float32)
        deconvnet.scores(crops)
        start = time.perf_counter()
        for _ in range(args.iterations):
            deconvnet.scores(crops)
        result["forward_50_s"] = (time.perf_counter() - start) / args.iterations

        image = render(0, SyntheticSpec(min_side=375, max_side=375, seed=4))[0]
        import cv2

        image = cv2.resize(image, (500, 375))
        pipeline = Pipeline(deconvnet, crf=CRFParams())
        start = time.perf_counter()
        boxes, _ = edge_boxes(image)
        seg = pipeline.segment(image, boxes)
        result["end_to_end_s"] = time.perf_counter() - start
        result["end_to_end_parts"] = vars(seg.timings)
    result["peak_mib"] = watch.peak
    return result


def torch_worker(args) -> dict:
    from deconvnet.bench import torch_benchmark

    return torch_benchmark.run("cpu" if args.cpu else f"cuda:{args.gpu}", args.batch, args.iter_size,
                               args.iterations, args.width_divisor)


def run_side(side: str, argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", side, *argv],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmark_gpu: the {side} side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--cpu", action="store_true", help="smoke test on the CPU")
    parser.add_argument("--width-divisor", type=int, default=1, help="reduced widths (smoke tests)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iter-size", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, help="this GPU's fp32 peak, if not in the table")
    parser.add_argument("--worker", choices=("caffe", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = caffe_worker(args) if args.worker == "caffe" else torch_worker(args)
        print(json.dumps(result))
        return 0
    passthrough = [a for a in argv if a not in ("--worker",)]
    caffe_r, torch_r = run_side("caffe", passthrough), run_side("torch", passthrough)

    from deconvnet.bench.gpu_kit_report import PAPER_TITAN_X_SAMPLES_PER_S as PAPER_TITAN_X
    from deconvnet.net.architecture import Size, forward_macs

    flops_per_sample = 3 * 2 * forward_macs(Size(224, args.width_divisor))  # forward + backward
    name = "CPU" if args.cpu else gpu_name(args.gpu)
    peak = args.peak_tflops or next((v for k, v in FP32_PEAK.items() if k in name), None)
    print(f"Full DeconvNet{'' if args.width_divisor == 1 else f' (widths /{args.width_divisor})'} on {name}; "
          f"training batch {args.batch} x iter_size {args.iter_size}; PyTorch {torch_r['version']}")
    print()
    print("| measure | Caffe | PyTorch |")
    print("|---|---|---|")
    print(f"| training samples/s | {caffe_r['train_samples_per_s']:.1f} | {torch_r['train_samples_per_s']:.1f} |")
    print(f"| forward of 50 proposals (s) | {caffe_r['forward_50_s']:.3f} | {torch_r['forward_50_s']:.3f} |")
    print(f"| end-to-end s/image (proposals, forward, aggregation, CRF) | {caffe_r['end_to_end_s']:.2f} | |")
    print(f"| peak GPU memory (MiB) | {caffe_r['peak_mib']:.0f} | {torch_r['peak_mib']:.0f} |")
    print()
    rate = caffe_r["train_samples_per_s"]
    achieved = rate * flops_per_sample / 1e12
    print(f"- paper, Titan X: about {PAPER_TITAN_X} samples/s; Caffe here is {rate / PAPER_TITAN_X:.1f}x that, "
          f"{rate / torch_r['train_samples_per_s']:.2f}x PyTorch on the same device")
    print(f"- {flops_per_sample / 1e9:.0f} GFLOP per training sample: Caffe sustains {achieved:.1f} TFLOPS"
          + (f" of the {peak} TFLOPS fp32 peak ({achieved / peak:.0%}), the physical limit being "
             f"{peak * 1e12 / flops_per_sample:.0f} samples/s" if peak else " (fp32 peak unknown: --peak-tflops)"))
    print("- end-to-end parts (s): " + ", ".join(f"{k} {v:.3f}" for k, v in caffe_r["end_to_end_parts"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
