"""The images a visualisation looks through, resized to the net's input as
DeconvNet's proposals are (the whole image warped to S x S; Zeiler and
Fergus crop the centre of a 256-px image instead).

An image set is named by one of:
  ``demo:RUN``     the val images of a tools/demo.py run folder
  ``voc:SPLIT``    a split of the VOC 2012 segmentation set (--voc-root)
  ``ids:FILE``     VOC image ids listed in FILE (--voc-root)
  a folder         every .jpg, .jpeg, .png and .bmp in it, by name
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deconvnet.data.voc import DatasetError, VOCReader, read_image, read_split

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
DEMO_VOC = Path("data") / "synthetic" / "VOCdevkit" / "VOC2012"


@dataclass(frozen=True)
class ImageSet:
    names: list[str]
    images: np.ndarray  # (N, H, W, 3) BGR uint8 at the net's input size


def _paths(spec: str, voc_root: Path | None) -> list[tuple[str, Path]]:
    kind, _, rest = spec.partition(":")
    if kind == "demo" and rest:
        reader = VOCReader(Path(rest) / DEMO_VOC)
        return [(i, reader.files(i)[0]) for i in reader.ids("val")]
    if kind in ("voc", "ids") and rest:
        if voc_root is None:
            raise DatasetError(f"image set {spec!r} needs --voc-root (the VOC2012 folder)")
        reader = VOCReader(voc_root)
        ids = reader.ids(rest) if kind == "voc" else read_split(Path(rest))
        return [(i, reader.files(i)[0]) for i in ids]
    folder = Path(spec)
    if folder.is_dir():
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DatasetError(f"{folder}: no {', '.join(IMAGE_SUFFIXES)} images in this folder")
        return [(p.stem, p) for p in paths]
    raise DatasetError(f"image set {spec!r}: give demo:RUN_FOLDER, voc:SPLIT, ids:FILE or a folder of images")


def load_images(spec: str, size: tuple[int, int], voc_root: Path | None = None, limit: int | None = None) -> ImageSet:
    """The images of ``spec`` (the first ``limit``), resized to ``size`` (h, w)."""
    paths = _paths(spec, voc_root)[:limit]
    images = np.empty((len(paths), *size, 3), np.uint8)
    for k, (_, path) in enumerate(paths):
        images[k] = cv2.resize(read_image(path), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return ImageSet([name for name, _ in paths], images)
