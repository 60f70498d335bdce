"""Whole-image data layer for FCN-8s training and validation (batch 1).

``param_str`` is JSON:

| key | meaning |
|---|---|
| ``dataset`` | ``voc`` (VOCdevkit/VOC2012) or ``sbd`` (benchmark_RELEASE/dataset) |
| ``root`` | that folder; relative paths resolve from the working directory |
| ``split`` | a split file name without ``.txt`` (VOC: ImageSets/Segmentation) |
| ``mean`` | BGR mean to subtract (default VGG16's) |
| ``shuffle`` | random order (TRAIN) or the file's order |
| ``seed`` | random seed |

Tops: ``data`` (1, 3, H, W) float32 BGR mean-subtracted; ``label`` (1, 1, H, W)
with 255 void. Each image keeps its own size, so the net reshapes per image.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import caffe
import numpy as np

from deconvnet.architecture import MEAN_BGR
from deconvnet.voc import open_dataset

KEYS = {"dataset", "root", "split", "mean", "shuffle", "seed"}


class WholeImageDataLayer(caffe.Layer):
    def setup(self, bottom, top) -> None:
        try:
            params = json.loads(self.param_str or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"WholeImageDataLayer: param_str is not JSON: {err}") from err
        unknown = set(params) - KEYS
        if unknown:
            raise ValueError(f"WholeImageDataLayer: unknown param_str key(s) {sorted(unknown)}; "
                             f"known: {sorted(KEYS)}")
        for key in ("dataset", "root", "split"):
            if key not in params:
                raise ValueError(f"WholeImageDataLayer: param_str needs '{key}'")
        if len(top) != 2 or bottom:
            raise ValueError("WholeImageDataLayer: no bottoms, two tops (data, label)")
        self.reader = open_dataset(params["dataset"], Path(params["root"]))
        self.ids = self.reader.ids(params["split"])
        self.mean = np.array(params.get("mean", MEAN_BGR), dtype=np.float32)
        self.shuffle = bool(params.get("shuffle", False))
        self.rng = random.Random(params.get("seed", 0))
        self.order: list[str] = []
        self.pending: tuple[np.ndarray, np.ndarray] | None = None

    def _next_id(self) -> str:
        if not self.order:
            self.order = list(self.ids)
            if self.shuffle:
                self.rng.shuffle(self.order)
        return self.order.pop(0)

    def reshape(self, bottom, top) -> None:
        # Caffe reshapes once at set-up and again before every forward: load
        # an image only when the previous one has been consumed.
        if self.pending is None:
            image_id = self._next_id()
            image = self.reader.image(image_id).astype(np.float32) - self.mean
            label = self.reader.class_map(image_id).astype(np.float32)
            self.pending = (image.transpose(2, 0, 1)[None], label[None, None])
        top[0].reshape(*self.pending[0].shape)
        top[1].reshape(*self.pending[1].shape)

    def forward(self, bottom, top) -> None:
        top[0].data[...], top[1].data[...] = self.pending
        self.pending = None

    def backward(self, top, propagate_down, bottom) -> None:
        pass
