"""Whole-image crop data layer of DeepLab-LargeFOV (batches of equal crops).

``param_str`` is the JSON of ``deconvnet.data.layer_params.ImageCropParams``:
``image_set`` (deconvnet.data.image_sets: ``union-minus-voc-val`` is
DeepLab's train_aug, ``voc:val`` the validation images), ``voc_root`` and
``sbd_root``, ``batch_size``, ``crop_size``, ``random_crop``, ``mirror``,
``shuffle``, ``mean`` and ``seed``.

Tops: ``data`` (B, 3, S, S) float32 BGR mean-subtracted; ``label`` (B, 1, S,
S) with 255 void (deconvnet.data.image_crops says how a crop is made).

Under data-parallel training (deconvnet/train/data_parallel.py) rank r of N
takes images r, r + N, ... of every epoch's order (the same order on every
rank: the same seed) and draws its crops and flips from its own stream.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deconvnet.data.image_crops import pad_and_crop
from deconvnet.data.image_sets import ImageRef, ImageSource
from deconvnet.data.layer_params import ImageCropParams

import caffe


class ImageCropDataLayer(caffe.Layer):
    def setup(self, bottom, top) -> None:
        params = ImageCropParams.from_param_str(self.param_str)
        if len(top) != 2 or bottom:
            raise ValueError("ImageCropDataLayer: no bottoms, two tops (data, label)")
        self.params = params
        self.source = ImageSource(Path(params.voc_root) if params.voc_root else None,
                                  Path(params.sbd_root) if params.sbd_root else None)
        self.refs = self.source.resolve(params.image_set)
        if not self.refs:
            raise ValueError(f"ImageCropDataLayer: image set {params.image_set!r} has no images")
        self.mean = np.array(params.mean, dtype=np.float32)
        # Caffe's solver count and rank: set by data-parallel training, 1 and 0 otherwise.
        train = self.phase == caffe.TRAIN
        self.ranks: int = caffe.solver_count() if train else 1
        self.rank: int = caffe.solver_rank() if train else 0
        self.order_rng = np.random.default_rng(params.seed)
        self.rng = np.random.default_rng([params.seed, self.rank])
        self.order: list[ImageRef] = []
        top[0].reshape(params.batch_size, 3, params.crop_size, params.crop_size)
        top[1].reshape(params.batch_size, 1, params.crop_size, params.crop_size)

    def _next_ref(self) -> ImageRef:
        while not self.order:  # a rank's share of a tiny epoch may be empty
            order = list(self.refs)
            if self.params.shuffle:
                order = [order[i] for i in self.order_rng.permutation(len(order))]
            self.order = order[self.rank::self.ranks]
        return self.order.pop(0)

    def reshape(self, bottom, top) -> None:
        pass  # every batch has the shape set up above

    def forward(self, bottom, top) -> None:
        for b in range(self.params.batch_size):
            ref = self._next_ref()
            image, label = pad_and_crop(self.source.image(ref), self.source.class_map(ref),
                                        self.params.crop_size, self.mean,
                                        self.rng if self.params.random_crop else None, self.params.mirror)
            top[0].data[b] = image
            top[1].data[b, 0] = label

    def backward(self, top, propagate_down, bottom) -> None:
        pass
