"""The unit selection of a projection net (deconvnet/net/projection.py): of
the chosen layer's activations, it keeps one unit per example and zeroes
everything else, as Zeiler and Fergus do before descending.

Bottoms: the activations (N, C, H, W) and the unit of each example (N,).
``param_str``: "max" keeps the unit's strongest activation alone (the first
in raster order where several are equal), "map" its whole feature map.
Forward only: nothing learns through a projection net.
"""
from __future__ import annotations

import numpy as np

import caffe


class UnitSelectionLayer(caffe.Layer):
    def setup(self, bottom, top) -> None:
        if len(bottom) != 2 or len(top) != 1:
            raise ValueError("UnitSelectionLayer takes 2 bottoms (activations, units) and gives 1 top")
        self.keep = self.param_str or "max"
        if self.keep not in ("max", "map"):
            raise ValueError(f'UnitSelectionLayer param_str must be "max" or "map", not {self.keep!r}')

    def reshape(self, bottom, top) -> None:
        if bottom[0].data.ndim != 4 or bottom[1].data.shape != bottom[0].data.shape[:1]:
            raise ValueError(f"UnitSelectionLayer: activations {bottom[0].data.shape} need one unit per example, "
                             f"got units {bottom[1].data.shape}")
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top) -> None:
        values, units = bottom[0].data, bottom[1].data
        n, channels = values.shape[:2]
        unit = units.astype(np.int64)
        if np.any(unit != units) or np.any((unit < 0) | (unit >= channels)):
            raise ValueError(f"UnitSelectionLayer: units {units.tolist()} must be whole numbers in [0, {channels})")
        out = top[0].data
        out[...] = 0
        maps = values[np.arange(n), unit]                      # (N, H, W)
        if self.keep == "map":
            out[np.arange(n), unit] = maps
            return
        flat = maps.reshape(n, -1)
        best = flat.argmax(axis=1)
        kept = np.zeros_like(flat)
        kept[np.arange(n), best] = flat[np.arange(n), best]
        out[np.arange(n), unit] = kept.reshape(maps.shape)

    def backward(self, top, propagate_down, bottom) -> None:
        pass
