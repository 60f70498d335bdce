"""What inference writes: label PNGs in the VOC palette, float16 probability
maps, overlays for people to look at, and the VOC server's submission
layout. Every file is written under a temporary name and renamed, so an
interrupted run never leaves a half-written result that looks done."""
from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deconvnet.common.atomic import atomic_path
from deconvnet.data.voc import colorize, write_indexed_png

SUBMISSION_DIR = Path("results") / "VOC2012" / "Segmentation" / "comp6_test_cls"


def write_labels(path: Path, labels: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        write_indexed_png(tmp, labels)


def write_probs(path: Path, probs: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, probs.astype(np.float16))


def overlay(image: np.ndarray, labels: np.ndarray, boxes: np.ndarray | None = None,
            alpha: float = 0.55) -> np.ndarray:
    """The image with its labels in VOC colours (background left as is) and
    the proposal boxes drawn."""
    colours = colorize(labels)
    out = np.where((labels == 0)[..., None], image,
                   ((1 - alpha) * image + alpha * colours).astype(np.uint8)).copy()
    if boxes is not None:
        for x1, y1, x2, y2 in np.asarray(boxes).round().astype(int):
            cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), (0, 255, 255), 1)
    return out


def write_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"could not write {path}")


def submission_archive(out: Path) -> Path:
    """results.tgz of the comp6 folder, as the VOC evaluation server wants."""
    folder = out / SUBMISSION_DIR
    archive = out / "results.tgz"

    with atomic_path(archive) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for png in sorted(folder.glob("*.png")):
            tar.add(png, arcname=str(SUBMISSION_DIR / png.name))
    return archive



@dataclass(frozen=True)
class OutputOptions:
    """What tools/infer.py writes for each image under ``out``."""

    out: Path
    save_probs: bool = False
    overlays: bool = False
    voc_submission: bool = False

    def label_path(self, image_id: str) -> Path:
        """The labels PNG, written last: it marks the image done."""
        return self.out / "labels" / f"{image_id}.png"

    def folders(self) -> list[Path]:
        """Every folder an image's files go to."""
        return [self.out / "labels", self.out / "probs", self.out / "overlays", self.out / SUBMISSION_DIR]


def write_outputs(options: OutputOptions, image_id: str, image: np.ndarray, labels: np.ndarray,
                  probs: np.ndarray, boxes: np.ndarray) -> None:
    """One image's files, each atomically, the labels last."""
    if options.save_probs:
        write_probs(options.out / "probs" / f"{image_id}.npy", probs)
    if options.overlays:
        write_png(options.out / "overlays" / f"{image_id}.png", overlay(image, labels, boxes))
    if options.voc_submission:
        write_labels(options.out / SUBMISSION_DIR / f"{image_id}.png", labels)
    write_labels(options.label_path(image_id), labels)
