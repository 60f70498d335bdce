"""Unpooling written as a Caffe Python layer, in numpy.

It computes what the native C++ ``Unpooling`` layer computes and exists as a
baseline for the engine benchmark (tools/benchmark_unpooling.py) and to
exercise Python layers under ``caffe train``. Networks should use the native
layer.

Bottoms: values, the MAX pooling mask, and optionally a blob whose spatial
size is the output size. The output size is required, as the native layer
requires it: ``param_str`` a JSON object with ``unpool_h`` and ``unpool_w``,
or bottom[2] (2x the input would be wrong for odd pooling inputs).
"""
from __future__ import annotations

import json

import numpy as np

import caffe


class UnpoolingLayer(caffe.Layer):
    """top[n, c, mask[n, c, i]] = bottom[n, c, i]; the gradient gathers back."""

    def setup(self, bottom, top) -> None:
        if len(bottom) not in (2, 3):
            raise ValueError(f"Python Unpooling layer takes 2 or 3 bottoms, got {len(bottom)}")
        params = json.loads(self.param_str) if self.param_str else {}
        self.unpool_h = params.get("unpool_h")
        self.unpool_w = params.get("unpool_w")

    def reshape(self, bottom, top) -> None:
        if bottom[0].data.shape != bottom[1].data.shape:
            raise ValueError("mask shape differs from input shape")
        n, c, h, w = bottom[0].data.shape
        if self.unpool_h:
            self.out_h, self.out_w = self.unpool_h, self.unpool_w
        elif len(bottom) == 3:
            self.out_h, self.out_w = bottom[2].data.shape[-2:]
        else:
            raise ValueError("Python Unpooling layer needs its output size: param_str "
                             '{"unpool_h": H, "unpool_w": W} or a third bottom (inputs of 7 and 8 both pool to 4)')
        top[0].reshape(n, c, self.out_h, self.out_w)

    def _flat_indices(self, mask: np.ndarray) -> np.ndarray:
        n, c = mask.shape[:2]
        return mask.reshape(n * c, -1).astype(np.int64)

    def forward(self, bottom, top) -> None:
        n, c = bottom[0].data.shape[:2]
        idx = self._flat_indices(bottom[1].data)
        out = np.zeros((n * c, self.out_h * self.out_w), dtype=bottom[0].data.dtype)
        np.put_along_axis(out, idx, bottom[0].data.reshape(n * c, -1), axis=1)
        top[0].data[...] = out.reshape(top[0].data.shape)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        n, c = bottom[0].data.shape[:2]
        idx = self._flat_indices(bottom[1].data)
        grad = np.take_along_axis(top[0].diff.reshape(n * c, -1), idx, axis=1)
        bottom[0].diff[...] = grad.reshape(bottom[0].diff.shape)
