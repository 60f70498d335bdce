"""Edge-box object proposals (Zitnick and Dollar 2014) with OpenCV contrib.

Edges come from the structured-edge model (``models/sed_model.yml.gz``,
fetched by ``tools/download.py sed-model``; no package ships it) when the
recipe asks for structured edges and the model is there; otherwise from
Sobel gradients thinned by a Canny mask, with the orientation taken from the
gradients (``resolve_edges`` decides, with a one-line warning on a fallback). Thinning matters: on a real
VOC photo unthinned gradients made EdgeBoxes take 16 s, thinned about 0.7 s.

Boxes are float32 (N, 4) rows ``x1, y1, x2, y2`` in pixels, end exclusive,
sorted by objectness score (N,), best first.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deconvnet.common.atomic import atomic_path
from deconvnet.common.cli import MODELS
from deconvnet.common.constants import STAGE2_PROPOSALS

LOG = logging.getLogger(__name__)
DEFAULT_SED_MODEL = MODELS / "sed_model.yml.gz"
# What OpenCV's StructuredEdgeDetection reads from the model (it divides by
# some of these without checking them: a zero tree count is a SIGFPE).
SED_OPTIONS = ("stride", "shrinkNumber", "patchSize", "patchInnerSize", "numberOfGradientOrientations",
               "gradientSmoothingRadius", "regFeatureSmoothingRadius", "ssFeatureSmoothingRadius",
               "gradientNormalizationRadius", "selfsimilarityGridSize", "numberOfTrees", "numberOfTreesToEvaluate")
SED_POSITIVE = ("stride", "shrinkNumber", "patchSize", "numberOfTrees", "numberOfTreesToEvaluate")
SED_ARRAYS = ("childs", "featureIds", "thresholds", "edgeBoundaries", "edgeBins")


class EdgeModelError(Exception):
    """A structured-edge model file that cannot be used; names the file."""


@dataclass(frozen=True)
class EdgeBoxParams:
    max_boxes: int = STAGE2_PROPOSALS
    alpha: float = 0.65          # step of the sliding window search
    beta: float = 0.75           # NMS threshold
    min_score: float = 0.01
    canny_low: int = 50          # Canny thresholds of the thinning mask
    canny_high: int = 150
    edge_model: str = ""         # structured-edge model.yml.gz; "" = gradients

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def _sobel(smooth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 Sobel derivatives (x, y) in float64, borders reflected as
    OpenCV's default (BORDER_REFLECT_101, numpy's "reflect")."""
    p = np.pad(smooth, 1, mode="reflect")
    rows = p[:-2] + 2 * p[1:-1] + p[2:]          # smoothing down the columns
    gx = rows[:, 2:] - rows[:, :-2]
    cols = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]  # smoothing along the rows
    gy = cols[2:] - cols[:-2]
    return gx, gy


def gradient_edges(image: np.ndarray, params: EdgeBoxParams) -> tuple[np.ndarray, np.ndarray]:
    """Thinned gradient magnitude in [0, 1] and gradient orientation in [0, pi).

    The float arithmetic is numpy's, in float64: OpenCV's float32 Sobel and
    magnitude gave results one ulp apart from call to call (their SIMD and
    scalar paths round differently, and which one runs depends on the
    buffer's alignment), and Edge Boxes turned that into other boxes, so
    two builds of a dataset differed. The blur and Canny work on integers."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    smooth = cv2.GaussianBlur(gray, (3, 3), 0).astype(np.float64) / 255.0
    gx, gy = _sobel(smooth)
    magnitude = np.sqrt(gx * gx + gy * gy)
    magnitude /= max(float(magnitude.max()), 1e-6)
    thin = cv2.Canny(gray, params.canny_low, params.canny_high) > 0
    edges = np.where(thin, magnitude, 0).astype(np.float32)
    orientation = np.mod(np.arctan2(gy, gx), np.pi).astype(np.float32)
    return edges, orientation


def check_sed_file(path: Path) -> None:
    """A complete gzip stream holding an OpenCV YAML file."""
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(64)
            while f.read(1 << 20):  # to the end: gzip checks its CRC and length
                pass
    except (OSError, EOFError) as err:
        raise EdgeModelError(f"{path}: not a complete gzip file ({err})") from err
    if not head.startswith(b"%YAML"):
        raise EdgeModelError(f"{path}: not an OpenCV YAML file (starts {head[:16]!r})")


def check_sed_model(path: Path) -> None:
    """Raises EdgeModelError, naming the file, unless ``path`` is a
    structured-edge model OpenCV can load without crashing: the file, the
    options it reads, and one array per tree."""
    path = Path(path)
    if not path.is_file():
        raise EdgeModelError(f"structured-edge model {path} not found (fetch it with tools/download.py sed-model)")
    check_sed_file(path)
    try:
        storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except Exception as err:  # cv2.error, raised as a SystemError by the bindings
        cause = err.__cause__ or err  # the bindings wrap cv2.error in a SystemError
        raise EdgeModelError(f"{path}: unreadable structured-edge model ({str(cause).strip()})") from err
    try:
        options = storage.getNode("options")
        missing = [k for k in SED_OPTIONS if options.getNode(k).empty()]
        missing += [k for k in SED_ARRAYS if storage.getNode(k).empty() or storage.getNode(k).size() == 0]
        if missing:
            raise EdgeModelError(f"{path}: not a structured-edge model (missing {', '.join(missing)})")
        bad = [k for k in SED_POSITIVE if options.getNode(k).real() < 1]
        if bad:
            raise EdgeModelError(f"{path}: not a structured-edge model ({', '.join(bad)} below 1)")
        trees = int(options.getNode("numberOfTrees").real())
        if storage.getNode("childs").size() != trees:
            raise EdgeModelError(f"{path}: not a structured-edge model ({storage.getNode('childs').size()} "
                                 f"child arrays for {trees} trees)")
    finally:
        storage.release()


def resolve_edges(edges: str, model: str | Path | None = None, default: Path | None = None) -> str:
    """The ``edge_model`` of EdgeBoxParams for a recipe's ``edges``: a checked
    structured-edge model, or "" for gradient edges. An explicit ``model``
    must be usable; a missing default falls back to gradient edges with a
    warning; a broken one raises EdgeModelError."""
    if edges == "gradient":
        return ""
    if edges != "structured":
        raise ValueError(f"edges must be structured or gradient, not {edges!r}")
    if model:
        check_sed_model(Path(model))
        return str(model)
    default = Path(default or DEFAULT_SED_MODEL)
    if not default.exists():
        LOG.warning("structured-edge model %s not found: using gradient edges (tools/download.py sed-model "
                    "fetches it)", default)
        return ""
    check_sed_model(default)
    return str(default)


def edges_record(params: EdgeBoxParams) -> dict[str, Any]:
    """Which edges proposals came from, for manifests and run records."""
    if not params.edge_model:
        return dict(edges="gradient")
    digest = hashlib.sha256(Path(params.edge_model).read_bytes()).hexdigest()
    return dict(edges="structured", model=params.edge_model, sha256=digest)


_STRUCTURED: dict[str, Any] = {}


def structured_edges(image: np.ndarray, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Edges and orientation from the structured-edge forest, with NMS."""
    if model not in _STRUCTURED:
        check_sed_model(Path(model))
        _STRUCTURED[model] = cv2.ximgproc.createStructuredEdgeDetection(model)
    sed = _STRUCTURED[model]
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    edges = sed.detectEdges(rgb)
    orientation = sed.computeOrientation(edges)
    return sed.edgesNms(edges, orientation, r=2, s=0, m=1.0, isParallel=True), orientation


def _as_arrays(boxes, scores) -> tuple[np.ndarray, np.ndarray]:
    """Normalises OpenCV 4.x and 5.x results: scores (N, 1) or (N,); an empty
    result () or None."""
    if boxes is None or len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if scores is None or len(scores) == 0:
        scores = np.linspace(1, 0, len(boxes), endpoint=False)
    return boxes, np.asarray(scores, dtype=np.float32).reshape(-1)


def edge_boxes(image: np.ndarray, params: EdgeBoxParams = EdgeBoxParams()) -> tuple[np.ndarray, np.ndarray]:
    """(boxes x1 y1 x2 y2, scores) for a BGR (or grayscale) uint8 image."""
    if params.edge_model:
        edges, orientation = structured_edges(image, params.edge_model)
    else:
        edges, orientation = gradient_edges(image, params)
    detector = cv2.ximgproc.createEdgeBoxes(alpha=params.alpha, beta=params.beta,
                                            minScore=params.min_score, maxBoxes=params.max_boxes)
    result = detector.getBoundingBoxes(edges, orientation)
    # Older 4.x bindings return the boxes alone, already in score order.
    xywh, scores = _as_arrays(*(result if isinstance(result, tuple) and len(result) == 2
                                else (result, None)))
    boxes = np.column_stack([xywh[:, 0], xywh[:, 1], xywh[:, 0] + xywh[:, 2], xywh[:, 1] + xywh[:, 3]])
    order = np.argsort(-scores, kind="stable")
    return boxes[order].astype(np.float32), scores[order]


def image_fingerprint(image: np.ndarray) -> str:
    """sha1 of an image's pixels and shape (about 1 ms for 500x375)."""
    digest = hashlib.sha1(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


class ProposalCache:
    """Per-image .npz files under ``folder/<params key>/``, written
    atomically. The folder is keyed by the proposal settings, and each file
    holds the fingerprint of the pixels it was computed from: an image
    replaced under the same name (another size, other content) gets new
    proposals, not the old image's boxes."""

    def __init__(self, folder: Path, params: EdgeBoxParams = EdgeBoxParams()) -> None:
        self.params = params
        self.folder = Path(folder) / params.key()

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.npz"

    def get(self, name: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        path = self.path(name)
        fingerprint = image_fingerprint(image)
        if path.exists():
            try:
                with np.load(path) as cached:
                    if "image" in cached and str(cached["image"]) == fingerprint:
                        return cached["boxes"], cached["scores"]
                LOG.info("recomputing %s: made from another image of that name (or before caches named "
                         "their image)", path)
            except (OSError, ValueError, KeyError):
                LOG.warning("recomputing unreadable proposal cache %s", path)
        boxes, scores = edge_boxes(image, self.params)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, boxes=boxes, scores=scores, image=np.array(fingerprint))
        return boxes, scores


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes a (N, 4) and b (M, 4), x1 y1 x2 y2 end exclusive."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
