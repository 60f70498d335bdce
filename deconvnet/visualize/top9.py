"""Zeiler and Fergus's top activations (ECCV 2014, Fig. 2): for each unit of
a layer, the images where it responds most, each image counted once at the
position of its strongest response, with that activation's projection and
the image patch it sees.

The search reads the layer's activations batch by batch and keeps, per
image and unit, only the strongest value and where it is (ties: the first
in raster order); the top k are the k images with the largest of those
(ties: the earlier image)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from deconvnet.visualize.projector import Projector, to_input

TOP = 9


@dataclass(frozen=True)
class Activation:
    image: int    # index in the image set
    unit: int
    value: float
    y: int        # position in the layer's map
    x: int


@dataclass(frozen=True)
class Peaks:
    """Each image's strongest activation of every unit: values and flat
    positions (N images, C units), over maps ``width`` wide."""

    values: np.ndarray
    positions: np.ndarray
    width: int

    def strongest_units(self, count: int) -> list[int]:
        """The ``count`` units with the highest peak over all images."""
        return [int(u) for u in np.argsort(-self.values.max(axis=0), kind="stable")[:count]]

    def top(self, units: Iterable[int], k: int = TOP) -> dict[int, list[Activation]]:
        found = {}
        for unit in units:
            order = np.argsort(-self.values[:, unit], kind="stable")[:k]
            found[unit] = [Activation(int(i), unit, float(self.values[i, unit]),
                                      int(self.positions[i, unit] // self.width),
                                      int(self.positions[i, unit] % self.width)) for i in order]
        return found


def peaks(projector: Projector, images: np.ndarray, batch: int = 16, progress=None) -> Peaks:
    """The Peaks of every unit of the projector's layer over ``images``
    ((N, H, W, 3) BGR); ``progress`` is called with each batch's size."""
    values = np.empty((len(images), projector.units), np.float32)
    positions = np.empty((len(images), projector.units), np.int64)
    width = 0
    for start in range(0, len(images), batch):
        features = projector.features(to_input(images[start:start + batch]))
        flat = features.reshape(*features.shape[:2], -1)
        positions[start:start + len(flat)] = flat.argmax(axis=2)
        values[start:start + len(flat)] = flat.max(axis=2)
        width = features.shape[3]
        if progress is not None:
            progress(len(flat))
    return Peaks(values, positions, width)


def project(projector: Projector, images: np.ndarray, found: dict[int, list[Activation]],
            batch: int = 16) -> dict[int, np.ndarray]:
    """The projection (k, 3, H, W) of each unit's activations: the
    projection net keeps the same strongest position the search found."""
    pairs = [a for activations in found.values() for a in activations]
    out = np.empty((len(pairs), 3, *projector.size), np.float32)
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        out[start:start + len(chunk)] = projector.project(to_input(images[[a.image for a in chunk]]),
                                                          [a.unit for a in chunk])
    result, start = {}, 0
    for unit, activations in found.items():
        result[unit] = out[start:start + len(activations)]
        start += len(activations)
    return result


def parse_units(text: str, peaks_: Peaks | None, units: int) -> list[int]:
    """Units named as "0,5,9-12", "strongest:K" (the K with the highest
    peaks) or "all"; ValueError names what is wrong."""
    if text == "all":
        return list(range(units))
    match = re.fullmatch(r"strongest:(\d+)", text)
    if match:
        if peaks_ is None:
            raise ValueError("strongest:K needs the search's peaks")
        return peaks_.strongest_units(int(match.group(1)))
    chosen: list[int] = []
    for part in text.split(","):
        bounds = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not bounds:
            raise ValueError(f"units {text!r}: give numbers and ranges like 0,5,9-12, strongest:K or all")
        low, high = int(bounds.group(1)), int(bounds.group(2) or bounds.group(1))
        chosen += range(low, high + 1)
    bad = [u for u in chosen if u >= units]
    if bad:
        raise ValueError(f"units {bad} do not exist: the layer has units 0..{units - 1}")
    return list(dict.fromkeys(chosen))
