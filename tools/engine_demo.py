#!/usr/bin/env python3
"""Engine demo: trains a tiny DeconvNet-style encoder-decoder with pycaffe.

The net has every layer type DeconvNet uses (Convolution, BatchNorm + Scale,
ReLU, MAX Pooling with a mask top, the native Unpooling layer, Deconvolution,
SoftmaxWithLoss with ignore_label 255). It learns to segment synthetic
squares and discs on CPU in about a minute, then reports pixel accuracy and
mean IoU on held-out images and writes a PNG of its predictions.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
import caffe  # noqa: E402
from caffe import layers as L  # noqa: E402
from caffe import params as P  # noqa: E402

LOG = logging.getLogger("engine_demo")
NUM_CLASSES = 3  # background, square, disc
PALETTE = np.array([[0, 0, 0], [128, 0, 0], [0, 128, 0], [255, 255, 255]], dtype=np.uint8)


def make_batch(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images with one square (class 1) and one disc (class 2) each;
    a one-pixel void (255) ring around every shape."""
    images = rng.normal(0.0, 0.3, (n, 3, size, size)).astype(np.float32)
    labels = np.zeros((n, 1, size, size), dtype=np.float32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for cls in (1, 2):
            r = rng.integers(size // 8, size // 4)
            cy, cx = rng.integers(r, size - r, size=2)
            if cls == 1:
                inside = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
                ring = (abs(yy - cy) <= r + 1) & (abs(xx - cx) <= r + 1) & ~inside
            else:
                d = np.hypot(yy - cy, xx - cx)
                inside, ring = d <= r, (d > r) & (d <= r + 1)
            labels[i, 0][ring] = 255
            labels[i, 0][inside] = cls
            images[i, :, inside] += np.array([1.0, -0.5, 0.5] if cls == 1 else [-0.5, 1.0, 0.5])
    return images, labels


def conv_bn_relu(bottom, num_output: int, deconv: bool = False):
    kind = L.Deconvolution if deconv else L.Convolution
    conv = kind(bottom, param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
                convolution_param=dict(num_output=num_output, kernel_size=3, pad=1,
                                       weight_filler=dict(type="msra"),
                                       bias_filler=dict(type="constant")))
    bn = L.BatchNorm(conv, in_place=True)
    scale = L.Scale(bn, scale_param=dict(bias_term=True), in_place=True)
    return conv, bn, scale, L.ReLU(scale, in_place=True)


def tiny_deconvnet(batch: int, size: int) -> caffe.proto.caffe_pb2.NetParameter:
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, size, size]))
    n.label = L.Input(shape=dict(dim=[batch, 1, size, size]))
    n.conv1, n.conv1_bn, n.conv1_scale, n.conv1_relu = conv_bn_relu(n.data, 16)
    n.pool1, n.pool1_mask = L.Pooling(n.conv1, ntop=2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2, n.conv2_bn, n.conv2_scale, n.conv2_relu = conv_bn_relu(n.pool1, 32)
    n.pool2, n.pool2_mask = L.Pooling(n.conv2, ntop=2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.unpool2 = L.Unpooling(n.pool2, n.pool2_mask, unpooling_param=dict(kernel_size=2, stride=2))
    n.deconv2, n.deconv2_bn, n.deconv2_scale, n.deconv2_relu = conv_bn_relu(n.unpool2, 16, True)
    n.unpool1 = L.Unpooling(n.deconv2, n.pool1_mask, unpooling_param=dict(kernel_size=2, stride=2))
    n.deconv1, n.deconv1_bn, n.deconv1_scale, n.deconv1_relu = conv_bn_relu(n.unpool1, 16, True)
    n.seg_score = L.Convolution(n.deconv1, num_output=NUM_CLASSES, kernel_size=1,
                                weight_filler=dict(type="gaussian", std=0.01),
                                bias_filler=dict(type="constant"))
    n.loss = L.SoftmaxWithLoss(n.seg_score, n.label, loss_param=dict(ignore_label=255))
    return n.to_proto()


def confusion(pred: np.ndarray, label: np.ndarray, k: int) -> np.ndarray:
    keep = label != 255
    return np.bincount(k * label[keep].astype(int) + pred[keep], minlength=k * k).reshape(k, k)


def colorize(labels: np.ndarray) -> np.ndarray:
    return PALETTE[np.where(labels == 255, 3, labels).astype(int)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=200, help="SGD iterations (default 200)")
    parser.add_argument("--batch", type=int, default=8, help="images per iteration (default 8)")
    parser.add_argument("--size", type=int, default=32, help="image side, a multiple of 4 (default 32)")
    parser.add_argument("--out", type=Path, default=Path("output/engine_demo"), help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.size % 4:
        parser.error("--size must be a multiple of 4 (two 2x2 poolings)")

    caffe.set_mode_cpu()
    caffe.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        net_path = Path(tmp) / "net.prototxt"
        net_path.write_text(str(tiny_deconvnet(args.batch, args.size)))
        solver_path = Path(tmp) / "solver.prototxt"
        solver_path.write_text(f'net: "{net_path}"\nbase_lr: 0.01\nlr_policy: "fixed"\n'
                               "momentum: 0.9\nweight_decay: 0.0005\nsolver_mode: CPU\n")
        solver = caffe.SGDSolver(str(solver_path))

    losses = []
    for it in range(1, args.iters + 1):
        images, labels = make_batch(rng, args.batch, args.size)
        solver.net.blobs["data"].data[...] = images
        solver.net.blobs["label"].data[...] = labels
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
        if it % 25 == 0 or it == 1:
            LOG.info("iter %4d  loss %.4f", it, np.mean(losses[-25:]))

    # Held-out images, scored with the training net (batch statistics).
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    images, labels = make_batch(np.random.default_rng(args.seed + 1), args.batch, args.size)
    solver.net.blobs["data"].data[...] = images
    solver.net.blobs["label"].data[...] = labels
    solver.net.forward()
    pred = solver.net.blobs["seg_score"].data.argmax(axis=1)
    cm += confusion(pred, labels[:, 0], NUM_CLASSES)
    iou = np.diag(cm) / np.maximum(cm.sum(0) + cm.sum(1) - np.diag(cm), 1)
    LOG.info("held-out pixel accuracy %.3f, mean IoU %.3f (bg %.3f, square %.3f, disc %.3f)",
             np.diag(cm).sum() / cm.sum(), iou.mean(), *iou)

    args.out.mkdir(parents=True, exist_ok=True)
    import cv2

    rows = []
    for i in range(min(4, args.batch)):
        img = images[i].transpose(1, 2, 0)
        img = ((img - img.min()) / (np.ptp(img) + 1e-6) * 255).astype(np.uint8)
        rows.append(np.hstack([img, colorize(labels[i, 0]), colorize(pred[i])]))
    grid = cv2.resize(np.vstack(rows), None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
    png = args.out / "predictions.png"
    cv2.imwrite(str(png), grid[:, :, ::-1])
    LOG.info("wrote %s (columns: image, ground truth, prediction)", png)
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    if not last < first:
        LOG.error("loss did not decrease (%.4f -> %.4f)", first, last)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
