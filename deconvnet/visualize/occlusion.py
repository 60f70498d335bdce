"""Zeiler and Fergus's occlusion sensitivity (ECCV 2014, section 4.2, Fig. 7)
for DeconvNet: a grey square slid over the image and, at each of its
positions, (1) the class's score and (2) the total activity of the feature
map of the chosen layer that responds most to the whole image.

The square is the mean colour, so the net sees zeros there (Zeiler and
Fergus's grey). The class's score is the mean of its softmax probability
over DeconvNet's output: of one proposal (the whole image, or a box, warped
to the net's input: ``mode`` "proposal"), or of the image's proposals
aggregated as inference does (``mode`` "aggregated", the boxes fixed while
the square moves). The activity is read from the proposal's forward pass."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deconvnet.common.atomic import atomic_path
from deconvnet.common.constants import CLASSES
from deconvnet.data.crops import crop_padded
from deconvnet.infer.aggregation import MEAN, softmax
from deconvnet.infer.models import DeconvNetModel
from deconvnet.infer.pipeline import Pipeline
from deconvnet.net.fold_bn import read_net_param
from deconvnet.net.projection import chosen_blob
from deconvnet.visualize import render
from deconvnet.visualize.projector import Projector, to_input

LOG = logging.getLogger(__name__)
MODES = ("proposal", "aggregated")


@dataclass(frozen=True)
class Occlusion:
    centres_y: list[int]
    centres_x: list[int]
    class_score: np.ndarray   # (len(centres_y), len(centres_x))
    activity: np.ndarray      # the same grid
    unit: int                 # the feature map whose activity is shown
    unoccluded_score: float
    unoccluded_activity: float


def occlude(image: np.ndarray, cy: int, cx: int, square: int) -> np.ndarray:
    """A copy of ``image`` with a mean-colour square centred on (cy, cx)."""
    out = image.copy()
    half = square // 2
    out[max(cy - half, 0):max(cy - half + square, 0), max(cx - half, 0):max(cx - half + square, 0)] = \
        MEAN.round().astype(np.uint8)
    return out


def proposal_crop(image: np.ndarray, box: tuple[int, int, int, int] | None, size: int) -> np.ndarray:
    """The box (x1, y1, x2, y2; None: the whole image) warped to size x size."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box or (0, 0, w, h)
    return cv2.resize(crop_padded(image, (x1, y1, x2, y2), 0), (size, size), interpolation=cv2.INTER_LINEAR)


class OcclusionProbe:
    """DeconvNet's deploy net ``model`` with ``weights``, read at ``layer``."""

    def __init__(self, model: Path, weights: Path, layer: str) -> None:
        self.model = DeconvNetModel(model, weights, batch=16)
        self.blob, _ = chosen_blob(list(read_net_param(model).layer), layer)
        if self.blob not in self.model.net.blobs:
            raise ValueError(f"{model}: no blob {self.blob!r}")

    def forward(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(softmax probabilities (N, C, S, S), the layer's activations)."""
        net = self.model.net
        if net.blobs["data"].data.shape != crops.shape:
            net.blobs["data"].reshape(*crops.shape)
            net.reshape()
        net.blobs["data"].data[...] = crops
        net.forward()
        return softmax(net.blobs["seg_score"].data, axis=1), net.blobs[self.blob].data.copy()


def occlusion(probe: OcclusionProbe, image: np.ndarray, cls: int, square: int, stride: int, mode: str = "proposal",
              box: tuple[int, int, int, int] | None = None, proposals: np.ndarray | None = None,
              batch: int = 16, progress=None) -> Occlusion:
    """The two heat maps over square centres every ``stride`` pixels."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "aggregated" and proposals is None:
        raise ValueError("the aggregated score needs the image's proposals")
    boxes = np.zeros((0, 4), np.float32) if proposals is None else proposals
    size = probe.model.size
    h, w = image.shape[:2]
    pipeline = Pipeline(probe.model, crf=None, min_box_side=0) if mode == "aggregated" else None

    def class_scores(images: list[np.ndarray], probs: np.ndarray) -> np.ndarray:
        if pipeline is None:
            return probs[:, cls].mean(axis=(1, 2))
        return np.array([softmax(pipeline.net_scores(img, boxes)["deconvnet"])[cls].mean() for img in images])

    whole_probs, whole_features = probe.forward(to_input(proposal_crop(image, box, size)[None]))
    unit = int(whole_features[0].reshape(len(whole_features[0]), -1).max(axis=1).argmax())
    unoccluded_score = float(class_scores([image], whole_probs)[0])
    ys, xs = list(range(stride // 2, h, stride)), list(range(stride // 2, w, stride))
    centres = [(y, x) for y in ys for x in xs]
    scores, activity = np.empty(len(centres)), np.empty(len(centres))
    for start in range(0, len(centres), batch):
        images = [occlude(image, y, x, square) for y, x in centres[start:start + batch]]
        crops = to_input(np.stack([proposal_crop(img, box, size) for img in images]))
        probs, features = probe.forward(crops)
        scores[start:start + len(images)] = class_scores(images, probs)
        activity[start:start + len(images)] = features[:, unit].sum(axis=(1, 2))
        if progress is not None:
            progress(len(images))
    return Occlusion(ys, xs, scores.reshape(len(ys), len(xs)), activity.reshape(len(ys), len(xs)), unit,
                     unoccluded_score, float(whole_features[0, unit].sum()))


def figure(image: np.ndarray, result: Occlusion, projection: np.ndarray, cls: int, square: int, layer: str,
           path: Path) -> Path:
    """The image with one square, the class-score and activity heat maps,
    and the strongest map's projection (Zeiler and Fergus, Fig. 7 a-c)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = image.shape[:2]
    shown = occlude(image, result.centres_y[len(result.centres_y) // 2], result.centres_x[len(result.centres_x) // 2],
                    square)
    step = result.centres_y[1] - result.centres_y[0] if len(result.centres_y) > 1 else h
    extent = (0, len(result.centres_x) * step, len(result.centres_y) * step, 0)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    axes[0].imshow(shown[:, :, ::-1])
    axes[0].set_title(f"input, one {square}-px square")
    for ax, grid, title in ((axes[1], result.class_score, f"p({CLASSES[cls]}) with the square there"),
                            (axes[2], result.activity, f"{layer} map {result.unit}: total activity")):
        im = ax.imshow(grid, extent=extent, cmap="jet", interpolation="nearest")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    axes[3].imshow(cv2.resize(render.projection_image(projection), (w, h))[:, :, ::-1])
    axes[3].set_title(f"{layer} map {result.unit}, strongest activation projected", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def run(model: Path, weights: Path, image: np.ndarray, name: str, cls: int, layer: str, square: int, stride: int,
        out: Path, mode: str = "proposal", box=None, proposals=None, progress=None) -> dict:
    """occlusion_<name>_<class>.png and .json in ``out``; the JSON record."""
    probe = OcclusionProbe(model, weights, layer)
    result = occlusion(probe, image, cls, square, stride, mode, box, proposals, progress=progress)
    del probe
    projector = Projector(model, weights, layer)
    crop = proposal_crop(image, box, projector.size[0])
    projection = projector.project(to_input(crop[None]), [result.unit])[0]
    stem = f"occlusion_{name}_{CLASSES[cls]}"
    picture = figure(image, result, projection, cls, square, layer, out / f"{stem}.png")
    record = dict(image=name, image_size=list(image.shape[:2]), class_index=cls, class_name=CLASSES[cls], mode=mode,
                  box=list(box) if box else None, layer=layer, square=square, stride=stride, unit=result.unit,
                  unoccluded_score=result.unoccluded_score, unoccluded_activity=result.unoccluded_activity,
                  centres_y=result.centres_y, centres_x=result.centres_x,
                  class_score=result.class_score.round(6).tolist(), activity=result.activity.round(6).tolist(),
                  picture=picture.name)
    render.write_json(out / f"{stem}.json", record)
    return record
