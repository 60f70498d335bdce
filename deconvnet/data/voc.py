"""Readers for PASCAL VOC 2012 segmentation and SBD (Hariharan et al.).

Both give, per image id: the BGR image, the class map (uint8, 0..20 with 255
void) and the object instances (boolean mask, class). VOC reads
``VOCdevkit/VOC2012`` (JPEGImages, SegmentationClass, SegmentationObject,
ImageSets/Segmentation); SBD reads ``benchmark_RELEASE/dataset`` (img,
cls/*.mat with GTcls, inst/*.mat with GTinst, train.txt, val.txt).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from deconvnet.common.constants import VOID

LOG = logging.getLogger(__name__)


class DatasetError(Exception):
    """A dataset file is missing or malformed; the message names it."""


class AnnotationFormatError(DatasetError):
    """An annotation file exists but lacks the expected content: fatal."""


@dataclass
class Instance:
    mask: np.ndarray  # bool, image-sized
    cls: int          # 1..20


def voc_palette() -> np.ndarray:
    """The 256-entry PASCAL VOC colour map (bit-interleaved label bits)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        c, r, g, b = label, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[label] = (r, g, b)
    return palette


def read_split(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


# Pillow's modes of 16-bit grayscale (PNG, TIFF); "I" is 32-bit and holds them too.
GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _gray16_to_rgb(path: Path, img: Image.Image) -> np.ndarray:
    """16-bit gray as the eye sees it, in 8 bits: 0..65535 scaled to 0..255
    (Pillow's convert("RGB") clips it, so most of a photo reads as white)."""
    values = np.asarray(img).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise DatasetError(f"{path}: a {img.mode} image with values outside 0..65535; convert it to 8 bits per "
                           "channel (RGB or grayscale)")
    gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def read_image(path: Path) -> np.ndarray:
    """BGR uint8; grayscale (8 or 16 bits) and CMYK files are converted."""
    if path.is_dir():
        raise DatasetError(f"{path}: a folder, not an image")
    if not path.is_file():
        raise DatasetError(f"{path}: image not found")
    try:
        with Image.open(path) as img:
            if img.mode in GRAY16_MODES:
                rgb = _gray16_to_rgb(path, img)
            elif img.mode == "F":
                raise DatasetError(f"{path}: a floating-point image; convert it to 8 bits per channel")
            else:
                rgb = np.asarray(img.convert("RGB"))
    except OSError as err:  # truncated or not an image
        raise DatasetError(f"{path}: unreadable image ({err})") from err
    return np.ascontiguousarray(rgb[:, :, ::-1])


def read_indexed_png(path: Path) -> np.ndarray:
    """The palette indices of a VOC label PNG."""
    if not path.is_file():
        raise DatasetError(f"{path}: label PNG not found")
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise DatasetError(f"{path}: expected an indexed (palette) PNG, got mode {img.mode}")
            return np.array(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as err:  # truncated or not a PNG
        raise DatasetError(f"{path}: unreadable label PNG ({err})") from err


def _mat_field(path: Path, struct: str, field: str) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path}: .mat file not found")
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except (ValueError, OSError, TypeError) as err:
        raise AnnotationFormatError(f"{path}: unreadable .mat file ({err})") from err
    if struct not in mat or not hasattr(mat[struct], field):
        raise AnnotationFormatError(f"{path}: expected a struct '{struct}' with field '{field}' (SBD format)")
    return getattr(mat[struct], field)


class VOCReader:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not (self.root / "JPEGImages").is_dir():
            raise DatasetError(f"{self.root}: not a VOC2012 folder (no JPEGImages); expected "
                               "VOCdevkit/VOC2012")

    def ids(self, split: str) -> list[str]:
        return read_split(self.root / "ImageSets" / "Segmentation" / f"{split}.txt")

    def image(self, image_id: str) -> np.ndarray:
        return read_image(self.root / "JPEGImages" / f"{image_id}.jpg")

    def files(self, image_id: str) -> list[Path]:
        """Every file an image's example is made from."""
        return [self.root / "JPEGImages" / f"{image_id}.jpg", self.root / "SegmentationClass" / f"{image_id}.png",
                self.root / "SegmentationObject" / f"{image_id}.png"]

    def class_map(self, image_id: str) -> np.ndarray:
        return read_indexed_png(self.root / "SegmentationClass" / f"{image_id}.png")

    def instances(self, image_id: str) -> list[Instance]:
        object_path = self.root / "SegmentationObject" / f"{image_id}.png"
        objects = read_indexed_png(object_path)
        classes = self.class_map(image_id)
        if objects.shape != classes.shape:
            # A DatasetError: the builder skips the image (or fails with --strict).
            raise DatasetError(f"{object_path} is {objects.shape[1]}x{objects.shape[0]}, its SegmentationClass "
                               f"PNG {classes.shape[1]}x{classes.shape[0]}: the two must match")
        found = []
        for obj in np.unique(objects):
            if obj in (0, VOID):
                continue
            mask = objects == obj
            values = classes[mask]
            values = values[(values != 0) & (values != VOID)]
            if values.size:
                found.append(Instance(mask, int(np.bincount(values).argmax())))
        return found


class SBDReader:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not (self.root / "img").is_dir():
            raise DatasetError(f"{self.root}: not an SBD folder (no img/); expected "
                               "benchmark_RELEASE/dataset")

    def ids(self, split: str) -> list[str]:
        return read_split(self.root / f"{split}.txt")

    def image(self, image_id: str) -> np.ndarray:
        return read_image(self.root / "img" / f"{image_id}.jpg")

    def files(self, image_id: str) -> list[Path]:
        """Every file an image's example is made from."""
        return [self.root / "img" / f"{image_id}.jpg", self.root / "cls" / f"{image_id}.mat",
                self.root / "inst" / f"{image_id}.mat"]

    def class_map(self, image_id: str) -> np.ndarray:
        seg = _mat_field(self.root / "cls" / f"{image_id}.mat", "GTcls", "Segmentation")
        return np.asarray(seg, dtype=np.uint8)

    def instances(self, image_id: str) -> list[Instance]:
        path = self.root / "inst" / f"{image_id}.mat"
        seg = np.asarray(_mat_field(path, "GTinst", "Segmentation"))
        categories = np.atleast_1d(_mat_field(path, "GTinst", "Categories")).astype(int)
        found = []
        for index, cls in enumerate(categories, start=1):
            mask = seg == index
            if mask.any():
                found.append(Instance(mask, int(cls)))
        return found


def open_dataset(kind: str, root: Path) -> VOCReader | SBDReader:
    if kind == "voc":
        return VOCReader(root)
    if kind == "sbd":
        return SBDReader(root)
    raise DatasetError(f"unknown dataset kind '{kind}' (voc or sbd)")


def write_indexed_png(path: Path, labels: np.ndarray) -> None:
    """Writes labels (uint8) as a VOC palette PNG."""
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(voc_palette().flatten().tolist())
    img.save(path)


def colorize(labels: np.ndarray) -> np.ndarray:
    """BGR colours of a label map, for overlays (OpenCV order)."""
    return voc_palette()[labels][:, :, ::-1]


