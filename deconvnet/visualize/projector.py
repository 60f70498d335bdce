"""A projection net (deconvnet.net.projection) loaded with a forward net's
weights: activations of the chosen layer, projections of chosen units back
to pixels, and where in the input each position looks."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from deconvnet.infer.aggregation import MEAN
from deconvnet.net.fold_bn import fold_in_memory, read_net_param
from deconvnet.net.projection import PROJECTION, UNITS, chosen_blob, descent, projection_net, receptive_field
from deconvnet.net.weights import load_net

LOG = logging.getLogger(__name__)


def to_input(images: np.ndarray) -> np.ndarray:
    """(N, 3, S, S) float32 net input of (N, S, S, 3) BGR uint8 images."""
    return (np.asarray(images, np.float32) - MEAN).transpose(0, 3, 1, 2)


class Projector:
    """``layer`` of the deploy net ``model`` with ``weights`` (BatchNorm
    folded in memory when the net has it); ``keep``: "max" projects each
    unit's strongest activation, "map" its whole map."""

    def __init__(self, model: Path, weights: Path, layer: str, keep: str = "max") -> None:
        import caffe

        forward = read_net_param(model)
        source = load_net(model, weights, caffe.TEST)  # strict: every layer needs its weights
        params = {name: [b.data.copy() for b in blobs] for name, blobs in source.params.items()}
        if any(item.type == "BatchNorm" for item in forward.layer):
            shapes = {name: tuple(blob.data.shape) for name, blob in source.blobs.items()}
            forward, params, _, _ = fold_in_memory(forward, params, shapes, model, weights, rewrite=False)
        del source
        self.layer = layer
        self.steps = descent(forward, layer)
        self.blob, end = chosen_blob(list(forward.layer), layer)
        self.last_forward = forward.layer[end].name
        with tempfile.TemporaryDirectory(prefix="projection-") as folder:
            path = Path(folder) / "projection.prototxt"
            path.write_text(str(projection_net(forward, layer, keep)))
            self.net = caffe.Net(str(path), caffe.TEST)
        # The Deconvolutions share the convolutions' weights: filling the convolutions fills them.
        for name, blobs in self.net.params.items():
            if name in params:
                for blob, value in zip(blobs, params[name], strict=True):
                    blob.data[...] = value.reshape(blob.data.shape)
        self.size = self.net.blobs["data"].data.shape[2:]
        self.units = self.net.blobs[self.blob].data.shape[1]

    def _load(self, inputs: np.ndarray) -> None:
        if self.net.blobs["data"].data.shape != inputs.shape:
            self.net.blobs["data"].reshape(*inputs.shape)
            self.net.blobs[UNITS].reshape(len(inputs))
            self.net.reshape()
        self.net.blobs["data"].data[...] = inputs

    def features(self, inputs: np.ndarray) -> np.ndarray:
        """The chosen layer's activations (N, C, H, W) of net inputs (N, 3, H, W)."""
        self._load(inputs)
        self.net.forward(end=self.last_forward)
        return self.net.blobs[self.blob].data.copy()

    def project(self, inputs: np.ndarray, units: np.ndarray | list[int]) -> np.ndarray:
        """Each example's unit projected to pixel space, (N, 3, H, W)."""
        units = np.asarray(units)
        if units.shape != (len(inputs),) or units.min(initial=0) < 0 or units.max(initial=0) >= self.units:
            raise ValueError(f"{self.layer} has units 0..{self.units - 1}; got {units.tolist()} for {len(inputs)} "
                             "inputs")
        self._load(inputs)
        self.net.blobs[UNITS].data[...] = units
        self.net.forward()
        return self.net.blobs[PROJECTION].data.copy()

    def receptive_field(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of the input pixels position (y, x) sees."""
        return receptive_field(self.steps, y, x)
