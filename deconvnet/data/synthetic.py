"""A deterministic synthetic dataset in the exact PASCAL VOC 2012 layout, with
SBD-style .mat annotations for part of it, for the demo and the tests.

Each image has a textured background and one to four objects of a few
classes, each class with its own shape, colour and texture. Later objects
occlude earlier ones; every object has an instance id; a 5-pixel void (255)
band runs along object borders in the VOC annotations, as in VOC. SBD
annotations carry no void, as in SBD.

Layout written under ``root``:
  VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,SegmentationObject}/
  VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
  benchmark_RELEASE/dataset/{img,cls,inst}/ and {train,val}.txt
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from deconvnet.common.constants import VOID
from deconvnet.data.voc import write_indexed_png

LOG = logging.getLogger(__name__)

# class id -> (BGR base colour, texture)
CLASS_STYLE = {
    1: ((200, 170, 60), "stripes"),     # aeroplane: triangle
    6: ((40, 180, 230), "checker"),     # bus: box with windows
    8: ((70, 110, 190), "dots"),        # cat: ellipse with ears
    15: ((150, 60, 200), "noise"),      # person: body and head
    20: ((90, 90, 90), "grid"),         # tvmonitor: framed screen
}
SYNTHETIC_CLASSES = tuple(CLASS_STYLE)
VOID_BAND = 5


@dataclass(frozen=True)
class SyntheticSpec:
    num_images: int = 48
    seed: int = 0
    min_side: int = 160
    max_side: int = 256
    val_fraction: float = 0.25   # of the VOC images
    voc_fraction: float = 0.75   # images with VOC annotations (the rest: SBD only)
    sbd_start: float = 0.4       # SBD covers images from here on (overlapping VOC)
    # (width, height) of image i is sizes[i % len(sizes)]; empty: random sides
    # in [min_side, max_side].
    sizes: tuple[tuple[int, int], ...] = ()
    # Image ids: "synthetic" (2011_000000, 2011_000001, ...) or "voc" (VOC's
    # pattern over several years and sparse numbers, such as 2008_000123).
    ids: str = "synthetic"
    # SBD's boundary cells (a sparse map per class, and per instance) as the
    # real .mat files have them; off, an empty field (faster).
    sbd_boundaries: bool = False


def _texture(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A [0, 1] pattern of the given kind."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    period = rng.integers(6, 12)
    if kind == "stripes":
        t = (np.sin((xx + yy) * 2 * np.pi / period) > 0).astype(np.float32)
    elif kind == "checker":
        t = (((xx // period) + (yy // period)) % 2).astype(np.float32)
    elif kind == "dots":
        t = ((np.hypot((xx % period) - period / 2, (yy % period) - period / 2) < period / 4)
             .astype(np.float32))
    elif kind == "grid":
        t = (((xx % period) < 2) | ((yy % period) < 2)).astype(np.float32)
    else:
        t = rng.random((h, w), dtype=np.float32)
    return t


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    base = rng.integers(60, 200, size=3)
    other = rng.integers(60, 200, size=3)
    yy, xx = np.mgrid[:h, :w]
    angle = rng.uniform(0, np.pi)
    wave = 0.5 + 0.5 * np.sin((np.cos(angle) * xx + np.sin(angle) * yy) / rng.uniform(8, 30))
    img = base[None, None] * wave[..., None] + other[None, None] * (1 - wave[..., None])
    img += rng.normal(0, 12, (h, w, 3))
    return img


def _shape_mask(cls: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """The class's shape at a random place and size, as a uint8 mask."""
    mask = np.zeros((h, w), np.uint8)
    size = int(rng.uniform(0.25, 0.55) * min(h, w))
    cy = int(rng.uniform(size / 2, h - size / 2))
    cx = int(rng.uniform(size / 2, w - size / 2))
    half = size // 2
    if cls == 1:  # aeroplane: a wide triangle with a tail
        pts = np.array([[cx - half, cy + half // 3], [cx + half, cy], [cx - half, cy - half // 3]])
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
        cv2.rectangle(mask, (cx - half, cy - half // 2), (cx - half + half // 4, cy), 1, -1)
    elif cls == 6:  # bus: a long box
        cv2.rectangle(mask, (cx - half, cy - half // 2), (cx + half, cy + half // 2), 1, -1)
    elif cls == 8:  # cat: an ellipse with two ears
        cv2.ellipse(mask, (cx, cy), (half, int(half * 0.6)), 0, 0, 360, 1, -1)
        for dx in (-half // 2, half // 2):
            ear = np.array([[cx + dx - half // 5, cy - half // 2], [cx + dx + half // 5, cy - half // 2],
                            [cx + dx, cy - half]])
            cv2.fillPoly(mask, [ear.astype(np.int32)], 1)
    elif cls == 15:  # person: a tall body and a head
        cv2.ellipse(mask, (cx, cy + half // 4), (half // 3, int(half * 0.7)), 0, 0, 360, 1, -1)
        cv2.circle(mask, (cx, cy - int(half * 0.6)), max(half // 4, 2), 1, -1)
    else:  # tvmonitor: a square screen on a stand
        cv2.rectangle(mask, (cx - half // 2 - 3, cy - half // 2), (cx + half // 2 + 3, cy + half // 3), 1, -1)
        cv2.rectangle(mask, (cx - 2, cy + half // 3), (cx + 2, cy + half // 2), 1, -1)
    return mask.astype(bool)


def render(index: int, spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(BGR image, VOC class map, VOC object map, class of each object id)."""
    rng = np.random.default_rng([spec.seed, index])
    h = int(rng.integers(spec.min_side, spec.max_side + 1))
    w = int(rng.integers(spec.min_side, spec.max_side + 1))
    if spec.sizes:
        w, h = spec.sizes[index % len(spec.sizes)]
    image = _background(h, w, rng)
    objects = np.zeros((h, w), np.uint8)
    classes = []
    for obj_id in range(1, int(rng.integers(1, 5)) + 1):
        cls = int(rng.choice(SYNTHETIC_CLASSES))
        mask = _shape_mask(cls, h, w, rng)
        colour, texture = CLASS_STYLE[cls]
        pattern = _texture(texture, (h, w), rng)[..., None]
        shade = np.array(colour, np.float32) * (0.6 + 0.4 * pattern) + rng.normal(0, 8, (h, w, 3))
        image[mask] = shade[mask]
        objects[mask] = obj_id  # later objects occlude earlier ones
        classes.append(cls)
    class_of = np.zeros(256, np.uint8)
    class_of[1:len(classes) + 1] = classes
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, class_of[objects], objects, class_of


def void_band(objects: np.ndarray, width: int = VOID_BAND) -> np.ndarray:
    """Pixels within about width/2 of any object border."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))
    band = np.zeros(objects.shape, bool)
    for obj in np.unique(objects):
        if obj == 0:
            continue
        mask = (objects == obj).astype(np.uint8)
        band |= (cv2.dilate(mask, kernel) > 0) & (cv2.erode(mask, kernel) == 0)
    return band


def image_id(index: int, ids: str = "synthetic") -> str:
    if ids == "voc":
        return f"{2007 + index % 5}_{123 + 211 * index:06d}"
    return f"2011_{index:06d}"


def _boundaries(label_map: np.ndarray, values: range | list[int]) -> np.ndarray:
    """A column cell array of sparse boundary maps, one per value, as in
    SBD's ``Boundaries`` fields."""
    cells = np.empty((len(values), 1), dtype=object)
    for row, value in enumerate(values):
        mask = (label_map == value).astype(np.uint8)
        edge = mask - cv2.erode(mask, np.ones((3, 3), np.uint8)) if mask.any() else mask
        cells[row, 0] = scipy.sparse.csc_matrix(edge.astype(bool))
    return cells


def write_dataset(root: Path, spec: SyntheticSpec = SyntheticSpec()) -> dict[str, list[str]]:
    """Writes the dataset under ``root``; returns the id lists by split."""
    voc = root / "VOCdevkit" / "VOC2012"
    sbd = root / "benchmark_RELEASE" / "dataset"
    for folder in (voc / "JPEGImages", voc / "SegmentationClass", voc / "SegmentationObject",
                   voc / "ImageSets" / "Segmentation", sbd / "img", sbd / "cls", sbd / "inst"):
        folder.mkdir(parents=True, exist_ok=True)
    n_voc = int(round(spec.num_images * spec.voc_fraction))
    n_val = int(round(n_voc * spec.val_fraction))
    first_sbd = int(round(spec.num_images * spec.sbd_start))
    splits: dict[str, list[str]] = {"voc_train": [], "voc_val": [], "sbd_train": [], "sbd_val": []}
    for index in range(spec.num_images):
        iid = image_id(index, spec.ids)
        image, cls_map, obj_map, class_of = render(index, spec)
        if index < n_voc:
            band = void_band(obj_map)
            Image.fromarray(image[:, :, ::-1]).save(voc / "JPEGImages" / f"{iid}.jpg", quality=95)
            write_indexed_png(voc / "SegmentationClass" / f"{iid}.png", np.where(band, VOID, cls_map))
            write_indexed_png(voc / "SegmentationObject" / f"{iid}.png", np.where(band, VOID, obj_map))
            splits["voc_val" if index >= n_voc - n_val else "voc_train"].append(iid)
        if index >= first_sbd:
            Image.fromarray(image[:, :, ::-1]).save(sbd / "img" / f"{iid}.jpg", quality=95)
            n_obj = int(obj_map.max())
            empty = np.empty((0,))
            scipy.io.savemat(sbd / "cls" / f"{iid}.mat", {"GTcls": {
                "Segmentation": cls_map,
                "Boundaries": _boundaries(cls_map, range(1, 21)) if spec.sbd_boundaries else empty,
                "CategoriesPresent": np.unique(cls_map[cls_map > 0])}})
            scipy.io.savemat(sbd / "inst" / f"{iid}.mat", {"GTinst": {
                "Segmentation": obj_map,
                "Boundaries": _boundaries(obj_map, range(1, n_obj + 1)) if spec.sbd_boundaries else empty,
                "Categories": class_of[1:n_obj + 1].astype(np.uint8)}})
            splits["sbd_val" if index % 5 == 0 else "sbd_train"].append(iid)
    seg = voc / "ImageSets" / "Segmentation"
    lists = {seg / "train.txt": splits["voc_train"], seg / "val.txt": splits["voc_val"],
             seg / "trainval.txt": splits["voc_train"] + splits["voc_val"],
             sbd / "train.txt": splits["sbd_train"], sbd / "val.txt": splits["sbd_val"]}
    for path, ids in lists.items():  # sorted, as VOC's and SBD's lists are
        path.write_text("".join(f"{i}\n" for i in sorted(ids)))
    LOG.info("wrote %d synthetic images under %s (VOC %d, SBD %d)", spec.num_images, root, n_voc,
             spec.num_images - first_sbd)
    return splits
