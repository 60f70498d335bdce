#!/usr/bin/env python3
"""Benchmark: per-image CPU inference of one 500x375 image with 50 edge-box
proposals and the full-size DeconvNet, in one run:

  caffe unfolded per image, batch 10
                             the deploy net with BatchNorm and Scale, its
                             convolutions image by image (CAFFE_CPU_CONV_BATCH_MIB=0:
                             the code before patches 0018 and 0019, bit for bit)
  caffe folded without rewrites, batch 10
                             tools/fold_bn.py --no-rewrite: BatchNorm folded only
  caffe folded, batch 10     tools/fold_bn.py's net and weights (folded and rewritten)
  caffe folded, batch 50     one image's proposals in one pass
  caffe folded per image, batch 10 and 50
                             the same image by image, as before patch 0018
  caffe folded im2col, batch 10 and 50
                             the same with CAFFE_CPU_CONV_WINOGRAD=0: groups of
                             images by im2col (patch 0018 without 0019)
  torch BN, batch 50         the same architecture in PyTorch, eval mode
  torch fused, batch 10 and 50
                             the same with BatchNorm fused into the convolutions

Each runs in its own process (its peak RSS is its own) on the same crops and
the same weights (random, He-initialised, with non-trivial BatchNorm
statistics and Scale parameters); each records the forward seconds (the
faster of --repeats), the peak RSS, the scores' largest difference from the
unfolded Caffe net's, and the per-image total: proposals (measured once),
crops, forward, paste-back and aggregation, softmax and the dense CRF. Then
`caffe time` at batch 10 gives the per-layer forward times of both Caffe
nets: the top ten layers and the Unpooling layers' share, and for the
folded net each layer image by image (before patch 0018), in groups by
im2col (0018) and as shipped (0019's Winograd for 3x3 layers). Training:
`caffe time` forward-backward of prototxt/benchmark_train_b8.prototxt (batch
8) the same three ways, against a PyTorch SGD step at batch 8. Each
rate is also given in GFLOP/s (deconvnet.net.architecture.forward_macs; a
training step counted as three forward passes) against the machine's peak
(cores x clock x 32 float operations a cycle with AVX2 FMA, 64 with
AVX-512: two FMA units assumed). The vectorised paste-back is also timed
against a per-proposal, per-channel loop.

Prints Markdown for docs/BENCHMARKS.md; --json writes the numbers. PyTorch
is needed for its two rows (.venv/bin/pip install torch==2.13.0+cpu; without
it they are left out with a note).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from deconvnet.common.cli import PROTOTXT, ROOT, run_tool
from deconvnet.common.machine import cpu_name, peak_gflops
from deconvnet.data.proposals import EdgeBoxParams, edge_boxes
from deconvnet.data.synthetic import SyntheticSpec, render
from deconvnet.infer.aggregation import paste_and_aggregate, proposal_batch, select_boxes, softmax
from deconvnet.infer.crf import CRFParams, dense_crf
from deconvnet.net.architecture import forward_macs

CAFFE = ROOT / ".venv" / "bin" / "caffe"
# How Caffe's CPU convolutions run: as shipped (patch 0019's Winograd for 3x3
# stride-1 layers, 0018's groups of images for the rest), by im2col in groups
# (0018 alone), or image by image (the unpatched code).
CONV_ENV = {"shipped": {}, "im2col": {"CAFFE_CPU_CONV_WINOGRAD": "0"}, "per image": {"CAFFE_CPU_CONV_BATCH_MIB": "0"}}
CONFIGS = {  # name: (side, batch, model: unfolded, fold_only, folded; torch: BN kept or fused; CONV_ENV key)
    "caffe unfolded per image, batch 10": ("caffe", 10, "unfolded", "per image"),
    "caffe folded without rewrites, batch 10": ("caffe", 10, "fold_only", "shipped"),
    "caffe folded per image, batch 10": ("caffe", 10, "folded", "per image"),
    "caffe folded im2col, batch 10": ("caffe", 10, "folded", "im2col"),
    "caffe folded, batch 10": ("caffe", 10, "folded", "shipped"),
    "caffe folded per image, batch 50": ("caffe", 50, "folded", "per image"),
    "caffe folded im2col, batch 50": ("caffe", 50, "folded", "im2col"),
    "caffe folded, batch 50": ("caffe", 50, "folded", "shipped"),
    "torch BN, batch 50": ("torch", 50, "unfolded", "shipped"),
    "torch fused, batch 10": ("torch", 10, "folded", "shipped"),
    "torch fused, batch 50": ("torch", 50, "folded", "shipped"),
}
REFERENCE = "caffe unfolded per image, batch 10"
FACTOR = 0.5  # BatchNorm's stored moving-average factor


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


# --- the parent: inputs, weights, children, report ----------------------------

def make_inputs(folder: Path, proposals: int) -> float:
    """image.png and boxes.npy in ``folder``; returns the proposals' seconds."""
    image = cv2.resize(render(0, SyntheticSpec(min_side=375, max_side=375, seed=4))[0], (500, 375))
    cv2.imwrite(str(folder / "image.png"), image)
    start = time.perf_counter()
    boxes, _ = edge_boxes(image, EdgeBoxParams())
    boxes = select_boxes(boxes, image.shape, proposals)
    seconds = time.perf_counter() - start
    np.save(folder / "boxes.npy", boxes)
    return seconds


def make_weights(folder: Path) -> None:
    """unfolded.caffemodel (random, with statistics), its fold, and the same
    weights as .npy files for PyTorch (BatchNorm statistics already divided
    by the factor; Scale as the BatchNorm's affine)."""
    from deconvnet.net.fold_bn import fold

    import caffe

    caffe.set_mode_cpu()
    deploy = PROTOTXT / "deconvnet_deploy.prototxt"
    net = caffe.Net(str(deploy), caffe.TEST)
    rng = np.random.default_rng(0)
    kinds = {name: layer.type for name, layer in zip(net._layer_names, net.layers, strict=True)}
    arrays = folder / "arrays"
    arrays.mkdir()
    for name, blobs in net.params.items():
        shape = blobs[0].data.shape
        if kinds[name] == "BatchNorm":
            blobs[0].data[...] = rng.normal(0, 0.1, shape) * FACTOR
            blobs[1].data[...] = rng.uniform(0.5, 2, shape) * FACTOR
            blobs[2].data[...] = FACTOR
        elif kinds[name] == "Scale":
            blobs[0].data[...] = rng.uniform(0.5, 1.5, shape)
            blobs[1].data[...] = rng.normal(0, 0.1, shape)
        else:
            fan_in = np.prod(shape[1:]) if kinds[name] == "Convolution" else shape[0] * np.prod(shape[2:])
            blobs[0].data[...] = rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)
            blobs[1].data[...] = 0
        for i, blob in enumerate(blobs):
            value = blob.data / FACTOR if kinds[name] == "BatchNorm" and i < 2 else blob.data
            np.save(arrays / f"{name}.{i}.npy", value)
    net.save(str(folder / "unfolded.caffemodel"))
    del net
    fold(deploy, folder / "unfolded.caffemodel", folder / "folded.prototxt", folder / "folded.caffemodel")
    fold(deploy, folder / "unfolded.caffemodel", folder / "fold_only.prototxt", folder / "fold_only.caffemodel",
         rewrite=False)


def run_child(folder: Path, config: str, repeats: int) -> dict | None:
    env = dict(os.environ, **CONV_ENV[CONFIGS[config][3]])
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", config, "--folder",
                             str(folder), "--repeats", str(repeats)], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        print(f"benchmark: {config} failed:\n{result.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


LAYER_LINE = re.compile(r"\]\s+(\S+)\s+forward: ([\d.]+) ms\.")


def layer_times(model: Path, batch: int, folder: Path, conv: str = "shipped") -> dict[str, float]:
    """Per-layer forward ms from ``caffe time`` on ``model`` at ``batch``
    (its fillers: zero input, so the values do not matter); ``conv``: a
    CONV_ENV key."""
    from google.protobuf import text_format

    from caffe.proto import caffe_pb2

    param = caffe_pb2.NetParameter()
    text_format.Merge(model.read_text(), param)
    param.layer[0].input_param.shape[0].dim[0] = batch
    timed = folder / f"time_{model.stem}.prototxt"
    timed.write_text(str(param))
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1", **CONV_ENV[conv])
    result = subprocess.run([str(CAFFE), "time", "-model", str(timed), "-iterations", "1"],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"benchmark: caffe time failed:\n{result.stderr[-3000:]}")
    times = {m.group(1): float(m.group(2)) for m in LAYER_LINE.finditer(result.stderr + result.stdout)}
    types = {layer.name: layer.type for layer in param.layer}
    return {f"{name} ({types.get(name, '?')})": ms for name, ms in times.items()}


FORWARD_BACKWARD = re.compile(r"Average Forward-Backward: ([\d.]+) ms")


def caffe_training_seconds(conv: str, iterations: int = 2) -> float:
    """Seconds of one forward-backward pass of the full net at batch 8
    (prototxt/benchmark_train_b8.prototxt: DummyData, train-mode BatchNorm);
    ``conv``: a CONV_ENV key."""
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1", **CONV_ENV[conv])
    result = subprocess.run([str(CAFFE), "time", "-model", str(PROTOTXT / "benchmark_train_b8.prototxt"),
                             "-iterations", str(iterations)], capture_output=True, text=True, env=env)
    found = FORWARD_BACKWARD.search(result.stderr + result.stdout)
    if result.returncode != 0 or not found:
        raise SystemExit(f"benchmark: caffe time (training) failed:\n{result.stderr[-3000:]}")
    return float(found.group(1)) / 1e3


def torch_training_seconds(iterations: int = 2) -> float:
    """Seconds of one PyTorch SGD step of the same net at batch 8 (one pass)."""
    from deconvnet.bench.torch_benchmark import run

    return 8 / run("cpu", batch=8, iter_size=1, iterations=iterations, forward=False)["train_samples_per_s"]


def aggregation_ratio(folder: Path, repeats: int) -> tuple[float, float]:
    """(vectorised, loop) seconds of paste-back + max aggregation, same results."""
    image = cv2.imread(str(folder / "image.png"))
    maps = np.load(folder / "reference_maps.npy")
    _, enlarged = proposal_batch(image, np.load(folder / "boxes.npy"), maps.shape[-1])
    vec, loop = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        aggregated = paste_and_aggregate(maps, enlarged, image.shape, "max")
        vec.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference = loop_aggregate(maps, enlarged, image.shape, "max")
        loop.append(time.perf_counter() - start)
    np.testing.assert_allclose(aggregated, reference, atol=1e-4 * float(np.abs(maps).max()))
    return min(vec), min(loop)


# --- a child: one configuration -----------------------------------------------

def caffe_model(folder: Path, variant: str) -> tuple[Path, Path]:
    """(prototxt, caffemodel) of a Caffe variant."""
    if variant == "unfolded":
        return PROTOTXT / "deconvnet_deploy.prototxt", folder / "unfolded.caffemodel"
    return folder / f"{variant}.prototxt", folder / f"{variant}.caffemodel"


def caffe_scorer(folder: Path, batch: int, variant: str):
    from deconvnet.infer.models import DeconvNetModel

    import caffe

    caffe.set_mode_cpu()
    return DeconvNetModel(*caffe_model(folder, variant), batch=batch).scores


def torch_scorer(folder: Path, batch: int, fused: bool):
    """The PyTorch twin with the Caffe weights; Caffe's Deconvolution blob
    is (in, out, kh, kw), as ConvTranspose2d's weight."""
    import torch

    from deconvnet.net.architecture import DECODER_BLOCKS, VGG_BLOCKS
    from deconvnet.net.torch_reference import DeconvNet, fuse_batchnorm

    torch.set_num_threads(os.cpu_count() or 1)
    net = DeconvNet().eval()
    blocks = [(f"conv{stage}_{k}", net.encoder[i][k - 1]) for i, (stage, convs, _) in enumerate(VGG_BLOCKS)
              for k in range(1, convs + 1)]
    blocks += [(name, net.fc[i]) for i, name in enumerate(("fc6", "fc7", "fc6_deconv"))]
    blocks += [(f"deconv{stage}_{k}", net.decoder[i][k - 1]) for i, (stage, widths) in enumerate(DECODER_BLOCKS)
               for k in range(1, len(widths) + 1)]

    def load(name: str, i: int) -> torch.Tensor:
        return torch.from_numpy(np.load(folder / "arrays" / f"{name}.{i}.npy"))

    with torch.no_grad():
        for name, block in blocks:
            conv, bn = block[0], block[1]
            conv.weight.copy_(load(name, 0).reshape(conv.weight.shape))
            conv.bias.copy_(load(name, 1))
            bn.running_mean.copy_(load(f"{name}_bn", 0))
            bn.running_var.copy_(load(f"{name}_bn", 1))
            bn.weight.copy_(load(f"{name}_scale", 0))
            bn.bias.copy_(load(f"{name}_scale", 1))
        net.seg_score.weight.copy_(load("seg_score", 0).reshape(net.seg_score.weight.shape))
        net.seg_score.bias.copy_(load("seg_score", 1))
    if fused:
        fuse_batchnorm(net)

    def scores(crops: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(crops), batch):
                out.append(net(torch.from_numpy(crops[start:start + batch])).numpy())
        return np.concatenate(out)

    return scores


def child(config: str, folder: Path, repeats: int) -> dict:
    side, batch, variant, _ = CONFIGS[config]
    image = cv2.imread(str(folder / "image.png"))
    boxes = np.load(folder / "boxes.npy")
    scores = (caffe_scorer(folder, batch, variant) if side == "caffe"
              else torch_scorer(folder, batch, fused=variant == "folded"))
    times: dict[str, float] = {}
    start = time.perf_counter()
    crops, enlarged = proposal_batch(image, boxes, 224)
    times["crops"] = time.perf_counter() - start
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        maps = scores(crops)
        rounds.append(time.perf_counter() - start)
    times["forward"] = min(rounds)
    start = time.perf_counter()
    probs = softmax(paste_and_aggregate(maps, enlarged, image.shape, "max"))
    times["aggregation + softmax"] = time.perf_counter() - start
    start = time.perf_counter()
    labels = dense_crf(image, probs, CRFParams()).argmax(axis=0)
    times["crf"] = time.perf_counter() - start
    result: dict = dict(times=times, peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if config == REFERENCE:
        np.save(folder / "reference_maps.npy", maps)
        np.save(folder / "reference_labels.npy", labels)
    else:
        reference = np.load(folder / "reference_maps.npy")
        diff = np.abs(maps - reference) / (reference.max() - reference.min())
        # A few max-pooling switches flip between near-equal values (float rounding differs),
        # which moves single unpooled values: the maximum alone would hide that the rest agree.
        result["max_diff_rel"] = float(diff.max())
        result["share_within_1e-4"] = float((diff <= 1e-4).mean())
        result["label_agreement"] = float((np.load(folder / "reference_labels.npy") == labels).mean())
    if side == "caffe":
        from deconvnet.infer.memory import bytes_per_example

        import caffe

        model = caffe_model(folder, variant)[0]
        result["counted_mib_per_proposal"] = bytes_per_example(caffe.Net(str(model), caffe.TEST)) / 2**20
    else:
        import torch

        result["torch"] = f"{torch.__version__}, {torch.get_num_threads()} threads"
    return result


# --- the report -----------------------------------------------------------------

def report(results: dict, layers: dict, proposal_s: float, aggregation: tuple[float, float], repeats: int,
           training: dict | None = None, proposals: int = 50) -> str:
    torch_info = next((f"; PyTorch {r['torch']}" for r in results.values() if r and "torch" in r), "")
    peak, counted = peak_gflops()
    image_gflop = 2 * forward_macs() * proposals / 1e9
    lines = [f"Inference of one 500x375 image, 50 proposals, full DeconvNet (Table 2), CPU; forward: the faster "
             f"of {repeats}", f"Machine: {cpu_name()}, {os.cpu_count()} cores; Caffe with OpenBLAS{torch_info}; "
             f"peak {peak:.0f} GFLOP/s ({counted}); the forward pass of the image's proposals is "
             f"{image_gflop:.0f} GFLOP", "",
             "| configuration | forward (s) | GFLOP/s (of peak) | peak RSS (MiB) | per-image total (s) | scores "
             "within 1e-4 of the range of the unfolded's (largest difference) | labels agree |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if r is None:
            lines.append(f"| {name} | not run | | | | | |")
            continue
        total = proposal_s + sum(r["times"].values())
        diff = ("reference" if name == REFERENCE
                else f"{r['share_within_1e-4'] * 100:.3f}% ({r['max_diff_rel']:.1e})")
        agree = "" if name == REFERENCE else f"{r['label_agreement'] * 100:.3f}%"
        rate = image_gflop / r["times"]["forward"]
        lines.append(f"| {name} | {r['times']['forward']:.2f} | {rate:.0f} ({rate / peak * 100:.0f}%) | "
                     f"{r['peak_rss_mib']:.0f} | {total:.2f} | {diff} | {agree} |")
    lines += ["", f"Per-image total: proposals {proposal_s:.2f} s (edge boxes, once) + crops + forward + "
              "paste-back/aggregation/softmax + dense CRF (10 iterations).", ""]

    def ratio(a: str, b: str, key: str) -> str:
        ra, rb = results.get(a), results.get(b)
        if not ra or not rb:
            return "n/a"
        va = ra["times"]["forward"] if key == "forward" else ra["peak_rss_mib"]
        vb = rb["times"]["forward"] if key == "forward" else rb["peak_rss_mib"]
        return f"{va / vb:.2f}"

    lines += ["| ratio | value |", "|---|---|",
              f"| forward, unfolded / folded, batch 10, both image by image (target >= 1.3) | "
              f"{ratio(REFERENCE, 'caffe folded per image, batch 10', 'forward')} |",
              f"| forward, folded batch 10 / folded batch 50 | "
              f"{ratio('caffe folded, batch 10', 'caffe folded, batch 50', 'forward')} |",
              f"| peak RSS, folded batch 50 / unfolded batch 10 | "
              f"{ratio('caffe folded, batch 50', REFERENCE, 'rss')} |",
              f"| forward, Caffe folded batch 50 / PyTorch fused batch 50 (target <= 1.0) | "
              f"{ratio('caffe folded, batch 50', 'torch fused, batch 50', 'forward')} |",
              f"| forward, Caffe folded per image batch 50 / PyTorch fused batch 50 (before patch 0018) | "
              f"{ratio('caffe folded per image, batch 50', 'torch fused, batch 50', 'forward')} |",
              f"| forward, Caffe folded batch 10 / PyTorch fused batch 10 | "
              f"{ratio('caffe folded, batch 10', 'torch fused, batch 10', 'forward')} |",
              f"| forward, Caffe folded im2col batch 50 / PyTorch fused batch 50 (before patch 0019) | "
              f"{ratio('caffe folded im2col, batch 50', 'torch fused, batch 50', 'forward')} |",
              f"| forward, folded per image / im2col in groups, batch 10 (patch 0018's gain) | "
              f"{ratio('caffe folded per image, batch 10', 'caffe folded im2col, batch 10', 'forward')} |",
              f"| forward, folded per image / im2col in groups, batch 50 (patch 0018's gain) | "
              f"{ratio('caffe folded per image, batch 50', 'caffe folded im2col, batch 50', 'forward')} |",
              f"| forward, folded im2col / shipped, batch 10 (patch 0019's gain) | "
              f"{ratio('caffe folded im2col, batch 10', 'caffe folded, batch 10', 'forward')} |",
              f"| forward, folded im2col / shipped, batch 50 (patch 0019's gain) | "
              f"{ratio('caffe folded im2col, batch 50', 'caffe folded, batch 50', 'forward')} |",
              f"| forward, folded per image / shipped, batch 50 (both patches) | "
              f"{ratio('caffe folded per image, batch 50', 'caffe folded, batch 50', 'forward')} |",
              f"| forward, PyTorch BN / PyTorch fused | "
              f"{ratio('torch BN, batch 50', 'torch fused, batch 50', 'forward')} |"]
    r50, ref = results.get("caffe folded, batch 50"), results.get(REFERENCE)
    if r50 and ref:
        # Peaks where the forward pass dominates: what the count leaves is the batch-independent part.
        fixed = {name: r["peak_rss_mib"] - CONFIGS[name][1] * r["counted_mib_per_proposal"]
                 for name, r in ((REFERENCE, ref), ("caffe folded, batch 50", r50))}
        lines += ["", f"Memory per proposal, counted by deconvnet/infer/memory.py: unfolded "
                  f"{ref['counted_mib_per_proposal']:.0f} MiB, folded {r50['counted_mib_per_proposal']:.0f} MiB. "
                  "Peak RSS minus batch x count (the part that does not grow with the batch: weights, buffers, "
                  f"Python): unfolded batch 10 {fixed[REFERENCE]:.0f} MiB, folded batch 50 "
                  f"{fixed['caffe folded, batch 50']:.0f} MiB. Unfolded at batch 50 would peak near "
                  f"{fixed[REFERENCE] + 50 * ref['counted_mib_per_proposal']:.0f} MiB (not run: more than this "
                  "machine has)."]
    if training:
        step_gflop = 3 * 2 * forward_macs() * 8 / 1e9
        lines += ["", f"Training, forward + backward at batch 8 ({step_gflop:.0f} GFLOP a step, counted as three "
                  "forward passes):", "", "| trainer | s per step | GFLOP/s (of peak) |", "|---|---|---|"]
        for name, seconds in training.items():
            rate = step_gflop / seconds
            lines.append(f"| {name} | {seconds:.2f} | {rate:.0f} ({rate / peak * 100:.0f}%) |")
    vec, loop = aggregation
    lines += ["", f"Paste-back + aggregation: vectorised {vec * 1e3:.0f} ms vs per-proposal, per-channel loop "
              f"{loop * 1e3:.0f} ms (same results): {loop / vec:.1f}x faster", ""]
    for name, times in layers.items():
        total = sum(times.values())
        unpool = sum(v for k, v in times.items() if "(Unpooling)" in k)
        lines += [f"`caffe time` forward per layer, {name}, batch 10: total {total / 1e3:.2f} s; Unpooling layers "
                  f"{unpool / total * 100:.1f}%", "", "| layer | ms | share |", "|---|---|---|"]
        for layer, ms in sorted(times.items(), key=lambda kv: -kv[1])[:10]:
            lines.append(f"| {layer} | {ms:.0f} | {ms / total * 100:.1f}% |")
        kinds: dict[str, float] = {}
        for layer, ms in times.items():
            kind = layer.rsplit("(", 1)[-1].rstrip(")")
            kinds[kind] = kinds.get(kind, 0) + ms
        lines += ["", "By type: " + ", ".join(f"{k} {v / total * 100:.1f}%"
                                            for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])), ""]
    before, middle, after = (layers.get(k) for k in ("folded, per image", "folded, im2col", "folded"))
    if before and middle and after:
        lines += ["`caffe time` of the folded net at batch 10, each layer image by image (before patch 0018), by "
                  "im2col in groups (0018) and as shipped (0019: Winograd for 3x3 layers), the ten slowest before:",
                  "", "| layer | per image ms | im2col ms | shipped ms | per image / shipped |",
                  "|---|---|---|---|---|"]
        for layer, ms in sorted(before.items(), key=lambda kv: -kv[1])[:10]:
            lines.append(f"| {layer} | {ms:.0f} | {middle.get(layer, float('nan')):.0f} | "
                         f"{after.get(layer, float('nan')):.0f} | {ms / after.get(layer, float('nan')):.2f} |")
        lines += ["", f"Total: {sum(before.values()) / 1e3:.2f} s per image, {sum(middle.values()) / 1e3:.2f} s "
                  f"im2col in groups, {sum(after.values()) / 1e3:.2f} s shipped.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proposals", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2, help="forward passes timed per configuration")
    parser.add_argument("--only", nargs="*", choices=list(CONFIGS), help="run only these (the reference always)")
    parser.add_argument("--no-layers", action="store_true", help="skip the `caffe time` breakdown")
    parser.add_argument("--no-training", action="store_true", help="skip the training steps")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.folder, args.repeats)))
        return 0
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
        print("benchmark: no PyTorch; its rows are left out (.venv/bin/pip install torch==2.13.0+cpu)",
              file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proposal_s = make_inputs(folder, args.proposals)
        make_weights(folder)
        results = {}
        for name, (side, _, _, _) in CONFIGS.items():
            wanted = name == REFERENCE or not args.only or name in args.only
            if wanted and (side == "caffe" or have_torch):
                print(f"benchmark: {name} ...", file=sys.stderr)
                results[name] = run_child(folder, name, args.repeats)
        layers = {} if args.no_layers else {
            "unfolded": layer_times(PROTOTXT / "deconvnet_deploy.prototxt", 10, folder),
            "folded": layer_times(folder / "folded.prototxt", 10, folder),
            "folded, im2col": layer_times(folder / "folded.prototxt", 10, folder, "im2col"),
            "folded, per image": layer_times(folder / "folded.prototxt", 10, folder, "per image")}
        aggregation = aggregation_ratio(folder, 3)
    training = None
    if not args.no_training:
        print("benchmark: training steps ...", file=sys.stderr)
        training = {"Caffe, per image (before patch 0018)": caffe_training_seconds("per image"),
                    "Caffe, im2col in groups (patch 0018)": caffe_training_seconds("im2col"),
                    "Caffe, shipped (0019: Winograd forward and backward)": caffe_training_seconds("shipped")}
        if have_torch:
            training["PyTorch"] = torch_training_seconds()
    text = report(results, layers, proposal_s, aggregation, args.repeats, training, args.proposals)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(dict(results=results, layers=layers, proposal_s=proposal_s,
                                             aggregation=aggregation, training=training), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "inference"))
