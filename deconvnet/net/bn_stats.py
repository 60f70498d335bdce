"""Population statistics for BatchNorm, as the authors computed them after
training: run the trained net in TRAIN mode (batch statistics, as during
training) over N batches of the training data, accumulate each BatchNorm
layer's input mean and variance per channel over all of them, and store
those as the layer's global statistics (scale factor 1)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deconvnet.common.atomic import save_net
from deconvnet.net.weights import load_net

import caffe

LOG = logging.getLogger(__name__)


def batchnorm_layers(net: caffe.Net) -> list[str]:
    return [name for name, layer in zip(net._layer_names, net.layers, strict=True) if layer.type == "BatchNorm"]


def estimate(net: caffe.Net, batches: int, progress: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{BatchNorm layer: (mean, variance)} over ``batches`` forward passes of
    ``net`` (a TRAIN-phase net whose first layer supplies data)."""
    names = list(net._layer_names)
    bns = set(batchnorm_layers(net))
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for _ in tqdm(range(batches), desc="BatchNorm statistics", unit="batch", disable=not progress):
        # One layer at a time: BatchNorm runs in place, so its input is only
        # visible just before it runs.
        for name in names:
            if name in bns:
                x = net.blobs[net.bottom_names[name][0]].data.astype(np.float64)
                per_channel = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1)
                sums[name] = sums.get(name, 0) + per_channel.sum(axis=1)
                squares[name] = squares.get(name, 0) + (per_channel ** 2).sum(axis=1)
                counts[name] = counts.get(name, 0) + per_channel.shape[1]
            net.forward(start=name, end=name)
    stats = {}
    for name in bns:
        m = counts[name]
        mean = sums[name] / m
        var = np.maximum(squares[name] / m - mean ** 2, 0) * (m / max(m - 1, 1))  # unbiased, as Caffe
        stats[name] = (mean, var)
    return stats


def write_statistics(model: Path, weights: Path, out: Path, batches: int, progress: bool = True,
                     allow_missing: bool = False) -> Path:
    """Re-estimates the BatchNorm statistics of ``weights`` with the data of
    ``model`` (a train prototxt) and writes the inference caffemodel."""
    net = load_net(model, weights, caffe.TRAIN, allow_missing)
    stats = estimate(net, batches, progress)
    for name, (mean, var) in stats.items():
        blobs = net.params[name]
        blobs[0].data[...] = mean
        blobs[1].data[...] = var
        blobs[2].data[...] = 1
    save_net(net, out)
    LOG.info("wrote %s: %d BatchNorm layers over %d batches", out, len(stats), batches)
    return out
