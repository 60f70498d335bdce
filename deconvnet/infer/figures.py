"""The paper's figures from our own runs, as PNG panels:

- Figure 4: the most active channel of each decoder layer (unpooling and
  deconvolution outputs) for one proposal;
- Figure 5: class probability maps of an image;
- Figure 6: progressive aggregation of proposals in decreasing size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from deconvnet.common.constants import CLASSES, MEAN_BGR
from deconvnet.data.voc import colorize
from deconvnet.infer.aggregation import (
    paste_and_aggregate,
    progressive_aggregation,
    proposal_batch,
    select_boxes,
    softmax,
)
from deconvnet.infer.models import DeconvNetModel

FIG6_COUNTS = (1, 2, 5, 10, 20, 50)


def _rgb(image_bgr: np.ndarray) -> np.ndarray:
    return image_bgr[:, :, ::-1]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return path


def figure6(model: DeconvNetModel, image: np.ndarray, boxes: np.ndarray, path: Path,
            counts=FIG6_COUNTS, mode: str = "max") -> Path:
    boxes = select_boxes(boxes, image.shape, max(counts))
    crops, enlarged = proposal_batch(image, boxes, model.size)
    maps = model.scores(crops)
    steps = progressive_aggregation(maps, enlarged, image.shape, counts, mode)
    fig = Figure(figsize=(3 * (len(steps) + 1), 3))
    axes = fig.subplots(1, len(steps) + 1)
    axes[0].imshow(_rgb(image))
    axes[0].set_title("input")
    for ax, (n, agg) in zip(axes[1:], steps.items(), strict=True):
        ax.imshow(_rgb(colorize(softmax(agg).argmax(0).astype(np.uint8))))
        ax.set_title(f"{n} proposal{'s' if n > 1 else ''}")
    for ax in axes:
        ax.axis("off")
    fig.suptitle("Figure 6: aggregation of proposals in decreasing size")
    return _save(fig, path)


def decoder_blobs(net) -> list[str]:
    names = [n for n in net.blobs if n == "fc6_deconv" or n.startswith(("unpool", "deconv"))]
    return names


def figure4(model: DeconvNetModel, image: np.ndarray, box: np.ndarray, path: Path) -> Path:
    crops, _ = proposal_batch(image, np.asarray(box, np.float32).reshape(1, 4), model.size)
    model.scores(crops)
    names = decoder_blobs(model.net)
    cols = 6
    rows = int(np.ceil((len(names) + 1) / cols))
    fig = Figure(figsize=(2.2 * cols, 2.4 * rows))
    axes = fig.subplots(rows, cols)
    axes = axes.ravel()
    crop = crops[0].transpose(1, 2, 0) + np.asarray(MEAN_BGR)
    axes[0].imshow(np.clip(crop, 0, 255).astype(np.uint8)[:, :, ::-1])
    axes[0].set_title("proposal")
    for ax, name in zip(axes[1:], names, strict=False):
        act = model.net.blobs[name].data[0]
        channel = int(act.reshape(len(act), -1).sum(1).argmax())
        ax.imshow(act[channel], cmap="gray")
        ax.set_title(f"{name} #{channel}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle("Figure 4: most active channel of each decoder layer")
    return _save(fig, path)


def figure5(model: DeconvNetModel, image: np.ndarray, boxes: np.ndarray, path: Path, top: int = 5,
            mode: str = "max") -> Path:
    boxes = select_boxes(boxes, image.shape, 50)
    crops, enlarged = proposal_batch(image, boxes, model.size)
    probs = softmax(paste_and_aggregate(model.scores(crops), enlarged, image.shape, mode))
    classes = np.argsort(-probs.reshape(len(probs), -1).max(1))[:top]
    fig = Figure(figsize=(3 * (len(classes) + 1), 3))
    axes = fig.subplots(1, len(classes) + 1)
    axes[0].imshow(_rgb(image))
    axes[0].set_title("input")
    for ax, c in zip(axes[1:], classes, strict=True):
        ax.imshow(probs[c], cmap="jet", vmin=0, vmax=1)
        ax.set_title(CLASSES[c])
    for ax in axes:
        ax.axis("off")
    fig.suptitle("Figure 5: class probability maps")
    return _save(fig, path)
