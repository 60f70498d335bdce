"""Pictures of what the network sees, as BGR uint8 arrays: projections and
image patches cut to a unit's receptive field, grids of them with labels,
first-layer filters; and the files they are written to (PNG and JSON, each
whole or not at all)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from deconvnet.common.atomic import atomic_path
from deconvnet.data.crops import crop_padded
from deconvnet.infer.aggregation import MEAN
from deconvnet.infer.outputs import write_png

CELL = 64          # side of one projection or patch in a grid
GAP = 2
WHITE = 255
LABEL_HEIGHT = 16


def projection_image(projection: np.ndarray) -> np.ndarray:
    """(H, W, 3) BGR uint8 of a (3, H, W) projection: zero is grey and the
    99.5th percentile of the non-zero magnitudes reaches black or white, the
    few larger values clipped (Zeiler and Fergus show contrast-normalised
    projections; a handful of extreme pixels would leave the rest grey)."""
    magnitude = np.abs(projection)
    peak = float(np.percentile(magnitude[magnitude > 0], 99.5)) if magnitude.any() else 0.0
    scaled = projection / peak * 127 if peak > 0 else np.zeros_like(projection)
    return np.clip(128 + scaled, 0, 255).round().astype(np.uint8).transpose(1, 2, 0)


def cut(image: np.ndarray, box: tuple[int, int, int, int], fill, side: int = CELL) -> np.ndarray:
    """The (y0, x0, y1, x1) box of an (H, W, 3) array, ``fill`` outside it,
    resized to side x side (nearest: small receptive fields stay sharp)."""
    y0, x0, y1, x1 = box
    patch = crop_padded(image, (x0, y0, x1, y1), fill)
    return cv2.resize(patch, (side, side), interpolation=cv2.INTER_NEAREST)


def projection_cell(projection: np.ndarray, box, side: int = CELL) -> np.ndarray:
    return cut(projection_image(projection), box, 128, side)


def patch_cell(image: np.ndarray, box, side: int = CELL) -> np.ndarray:
    return cut(image, box, MEAN.round().astype(np.uint8), side)


def tile(cells: list[np.ndarray], columns: int, gap: int = GAP) -> np.ndarray:
    """Equal-sized cells in rows of ``columns``, on white."""
    h, w = cells[0].shape[:2]
    rows = -(-len(cells) // columns)
    out = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), WHITE, np.uint8)
    for k, cell in enumerate(cells):
        r, c = divmod(k, columns)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = cell
    return out


def side_by_side(parts: list[np.ndarray], gap: int = 3 * GAP) -> np.ndarray:
    h = max(p.shape[0] for p in parts)
    padded = [np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)), constant_values=WHITE) for p in parts]
    spacer = np.full((h, gap, 3), WHITE, np.uint8)
    out = [padded[0]]
    for p in padded[1:]:
        out += [spacer, p]
    return np.concatenate(out, axis=1)


def stacked(parts: list[np.ndarray], gap: int = 3 * GAP) -> np.ndarray:
    w = max(p.shape[1] for p in parts)
    padded = [np.pad(p, ((0, 0), (0, w - p.shape[1]), (0, 0)), constant_values=WHITE) for p in parts]
    spacer = np.full((gap, w, 3), WHITE, np.uint8)
    out = [padded[0]]
    for p in padded[1:]:
        out += [spacer, p]
    return np.concatenate(out, axis=0)


def labelled(picture: np.ndarray, text: str) -> np.ndarray:
    """``picture`` under a strip with ``text`` in black."""
    width = max(picture.shape[1], 7 * len(text) + 4)
    strip = np.full((LABEL_HEIGHT, width, 3), WHITE, np.uint8)
    cv2.putText(strip, text, (2, LABEL_HEIGHT - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return stacked([strip, picture], gap=0)


def unit_block(projections: list[np.ndarray], patches: list[np.ndarray], title: str) -> np.ndarray:
    """Zeiler and Fergus's panel of one unit: its 3 x 3 projections, then
    the 3 x 3 image patches they come from."""
    return labelled(side_by_side([tile(projections, 3), tile(patches, 3)]), title)


def blocks_grid(blocks: list[np.ndarray], columns: int = 2) -> np.ndarray:
    rows = [side_by_side(blocks[k:k + columns], gap=6 * GAP) for k in range(0, len(blocks), columns)]
    return stacked(rows, gap=6 * GAP)


def filter_cells(weights: np.ndarray, side: int = 4 * 8) -> list[np.ndarray]:
    """First-layer filters (O, 3, kh, kw), each stretched to 0..255 on its own
    and enlarged (nearest) to side x side; Caffe's inputs are BGR, so the
    filters are BGR images already."""
    cells = []
    for f in weights.astype(np.float64):
        low, high = f.min(), f.max()
        scaled = (f - low) / (high - low) * 255 if high > low else np.full_like(f, 128)
        cells.append(cv2.resize(scaled.round().astype(np.uint8).transpose(1, 2, 0), (side, side),
                                interpolation=cv2.INTER_NEAREST))
    return cells


def write_picture(path: Path, picture: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, picture)
    return path


def write_json(path: Path, record: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return path
