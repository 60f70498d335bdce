"""Whole-image data layer for FCN-8s training and validation (batch 1).

``param_str`` is the JSON of ``deconvnet.data.layer_params.FCNDataParams``:
``dataset`` (voc or sbd), ``root`` (that dataset's folder; relative paths
resolve from the working directory), ``split`` (a split file name without
.txt), ``mean`` (BGR), ``shuffle`` and ``seed``.

Tops: ``data`` (1, 3, H, W) float32 BGR mean-subtracted; ``label`` (1, 1, H, W)
with 255 void. Each image keeps its own size, so the net reshapes per image.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from deconvnet.data.layer_params import FCNDataParams
from deconvnet.data.voc import open_dataset

import caffe


class WholeImageDataLayer(caffe.Layer):
    def setup(self, bottom, top) -> None:
        params = FCNDataParams.from_param_str(self.param_str)
        if len(top) != 2 or bottom:
            raise ValueError("WholeImageDataLayer: no bottoms, two tops (data, label)")
        self.reader = open_dataset(params.dataset, Path(params.root))
        self.ids = self.reader.ids(params.split)
        self.mean = np.array(params.mean, dtype=np.float32)
        self.shuffle = params.shuffle
        self.rng = random.Random(params.seed)
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
        assert self.pending is not None, "reshape() loads the image before forward()"
        top[0].data[...], top[1].data[...] = self.pending
        self.pending = None

    def backward(self, top, propagate_down, bottom) -> None:
        pass
