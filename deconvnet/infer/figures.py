"""The paper's figures from our own runs, as PNG panels:

- Figure 4: the most active channel of each decoder layer (unpooling and
  deconvolution outputs) for one proposal;
- Figure 5: class probability maps of an image: DeconvNet's, and with an
  FCN-8s model also FCN-8s's and the ensemble's;
- Figure 6: progressive aggregation of proposals in decreasing size;
- Figure 7: image, ground truth, FCN-8s, DeconvNet and EDeconvNet + CRF.

Figures 5 and 7 return their maps as well as writing the PNG, so that tests
can check what is drawn.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from deconvnet.common.constants import CLASSES, MEAN_BGR
from deconvnet.common.recipes import RELEASE
from deconvnet.data.voc import colorize
from deconvnet.infer.aggregation import (
    paste_and_aggregate,
    progressive_aggregation,
    proposal_batch,
    select_boxes,
    softmax,
)
from deconvnet.infer.crf import CRFParams, dense_crf
from deconvnet.infer.models import DeconvNetModel, FCNModel
from deconvnet.infer.pipeline import ensemble

FIG6_COUNTS = (1, 2, 5, 10, 20, 50)


def _rgb(image_bgr: np.ndarray) -> np.ndarray:
    return image_bgr[:, :, ::-1]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return path


def figure6(model: DeconvNetModel, image: np.ndarray, boxes: np.ndarray, path: Path,
            counts=FIG6_COUNTS, mode: str = "max", padding: str = RELEASE.proposal_padding) -> Path:
    boxes = select_boxes(boxes, image.shape, max(counts))
    crops, enlarged = proposal_batch(image, boxes, model.size, padding=padding)
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


def figure4(model: DeconvNetModel, image: np.ndarray, box: np.ndarray, path: Path,
            padding: str = RELEASE.proposal_padding) -> Path:
    crops, _ = proposal_batch(image, np.asarray(box, np.float32).reshape(1, 4), model.size, padding=padding)
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


def _aggregated(model: DeconvNetModel, image: np.ndarray, boxes: np.ndarray, mode: str,
                padding: str) -> np.ndarray:
    """Aggregated DeconvNet scores of ``boxes`` (already selected)."""
    crops, enlarged = proposal_batch(image, boxes, model.size, padding=padding)
    return paste_and_aggregate(model.scores(crops), enlarged, image.shape, mode)


def figure5(model: DeconvNetModel, image: np.ndarray, boxes: np.ndarray, path: Path, top: int = 5,
            mode: str = "max", fcn: FCNModel | None = None, rule: str = RELEASE.ensemble,
            padding: str = RELEASE.proposal_padding) -> dict[str, np.ndarray]:
    """Probability maps of the ``top`` classes (by the last row's peak):
    DeconvNet's, and with ``fcn`` FCN-8s's and the ensemble's (``rule``).
    ``boxes`` are the proposals already selected. Returns row name -> (C, H, W)."""
    scores = _aggregated(model, image, boxes, mode, padding)
    rows = {"DeconvNet": softmax(scores)}
    if fcn is not None:
        fcn_scores = fcn.scores(image)
        rows["FCN-8s"] = softmax(fcn_scores)
        rows[f"ensemble ({rule})"] = ensemble(scores, fcn_scores, rule)
    last = list(rows.values())[-1]
    classes = np.argsort(-last.reshape(len(last), -1).max(1), kind="stable")[:top]
    fig = Figure(figsize=(3 * (len(classes) + 1), 3 * len(rows)))
    axes = np.asarray(fig.subplots(len(rows), len(classes) + 1)).reshape(len(rows), -1)
    for r, (name, probs) in enumerate(rows.items()):
        axes[r, 0].imshow(_rgb(image))
        axes[r, 0].set_title(name)
        for ax, c in zip(axes[r, 1:], classes, strict=True):
            ax.imshow(probs[c], cmap="jet", vmin=0, vmax=1)
            ax.set_title(f"{CLASSES[c]}" if r == 0 else "")
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("Figure 5: class probability maps" + (" (rows: DeconvNet, FCN-8s, ensemble)" if fcn else ""))
    _save(fig, path)
    return rows


def figure7(model: DeconvNetModel, fcn: FCNModel, image: np.ndarray, ground_truth: np.ndarray | None,
            boxes: np.ndarray, path: Path, mode: str = "max", rule: str = RELEASE.ensemble,
            crf: CRFParams = CRFParams(), padding: str = RELEASE.proposal_padding) -> dict[str, np.ndarray]:
    """The paper's Figure 7 for one image: input, ground truth, FCN-8s,
    DeconvNet and EDeconvNet + CRF label maps. ``boxes`` are the proposals
    already selected. Returns panel name -> (H, W) labels."""
    scores = _aggregated(model, image, boxes, mode, padding)
    fcn_scores = fcn.scores(image)
    # Labels as tools/infer.py takes them: the argmax of probabilities (ties
    # in float32 softmax can differ from the argmax of the scores).
    panels = {"FCN-8s": softmax(fcn_scores).argmax(0).astype(np.uint8),
              "DeconvNet": softmax(scores).argmax(0).astype(np.uint8),
              "EDeconvNet+CRF": dense_crf(image, ensemble(scores, fcn_scores, rule), crf).argmax(0).astype(np.uint8)}
    shown = {"input": None, "ground truth": ground_truth, **panels}
    fig = Figure(figsize=(3 * len(shown), 3))
    axes = fig.subplots(1, len(shown))
    for ax, (name, labels) in zip(axes, shown.items(), strict=True):
        if name == "input":
            ax.imshow(_rgb(image))
        elif labels is None:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center")
        else:
            ax.imshow(_rgb(colorize(labels)))
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(f"Figure 7: FCN-8s, DeconvNet and EDeconvNet+CRF (ensemble: {rule})")
    _save(fig, path)
    return panels
