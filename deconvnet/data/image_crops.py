"""DeepLab-LargeFOV's examples: whole images, mean-subtracted, padded up to
the crop side (mean colour, so 0, in the image; void in the label) at the
bottom and right, then cropped: a random window with a random flip for
training, the top-left window (the whole image when it fits) for testing."""
from __future__ import annotations

import numpy as np

from deconvnet.common.constants import VOID


def pad_and_crop(image: np.ndarray, label: np.ndarray, size: int, mean: np.ndarray,
                 rng: np.random.Generator | None = None,
                 mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (H, W, 3) BGR uint8 and ``label`` (H, W) uint8 -> a (3, size,
    size) float32 image and a (size, size) float32 label. ``rng`` draws the
    window and, with ``mirror``, a flip; without it the window is top-left."""
    h, w = label.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image {image.shape[:2]} and label {(h, w)} differ in size")
    ph, pw = max(h, size), max(w, size)
    padded = np.zeros((ph, pw, 3), np.float32)
    padded[:h, :w] = image.astype(np.float32) - mean
    padded_label = np.full((ph, pw), VOID, np.float32)
    padded_label[:h, :w] = label
    y = x = 0
    flip = False
    if rng is not None:
        y = int(rng.integers(ph - size + 1))
        x = int(rng.integers(pw - size + 1))
        flip = mirror and bool(rng.integers(2))
    window = padded[y:y + size, x:x + size]
    window_label = padded_label[y:y + size, x:x + size]
    if flip:
        window, window_label = window[:, ::-1], window_label[:, ::-1]
    return np.ascontiguousarray(window.transpose(2, 0, 1)), np.ascontiguousarray(window_label)
