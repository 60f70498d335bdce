"""The networks inference runs, loaded from a deploy prototxt and a
caffemodel: DeconvNet on batches of proposal crops; FCN-8s and
DeepLab-LargeFOV on whole images (``WholeImageModel``), alone or as
ensemble members.

Both load their weights strictly (deconvnet.net.weights): a caffemodel that
lacks learned layers of the net, or has other shapes, stops the tool (a 2014
FCN-8s caffemodel in the heavy layout would otherwise run with a random
score head)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deconvnet.common.cli import PROTOTXT
from deconvnet.common.constants import TEST_PROPOSALS
from deconvnet.infer.aggregation import MEAN
from deconvnet.infer.memory import bytes_per_example, cpu_batch, gpu_batch, parameter_bytes
from deconvnet.net.weights import WeightsMismatch, load_net

__all__ = ["DeconvNetModel", "FCNModel", "WholeImageModel", "WeightsMismatch"]


# The deploy prototxt of each FCN-8s variant (recipe field fcn_variant), whose
# layer names match that variant's caffemodel.
FCN_DEPLOY = {"2014": PROTOTXT / "fcn8s_2014_deploy.prototxt", "heavy": PROTOTXT / "fcn8s_deploy.prototxt"}
DEEPLAB_DEPLOY = PROTOTXT / "deeplab_largefov_deploy.prototxt"
# The ensemble members, by the names tools use for them.
MEMBERS = ("deconvnet", "fcn8s", "deeplab-largefov")
MEMBER_TITLES = {"deconvnet": "DeconvNet", "fcn8s": "FCN-8s", "deeplab-largefov": "DeepLab-LargeFOV"}

class DeconvNetModel:
    """The deploy net (folded or not), run on proposal crops in batches of
    ``batch``; None: as many of ``proposals`` as this machine's memory
    holds (deconvnet.infer.memory; for the CPU: tools/infer.py calls
    ``choose_batch`` for a GPU)."""

    def __init__(self, prototxt: Path, weights: Path, batch: int | None = TEST_PROPOSALS,
                 allow_missing: bool = False, proposals: int = TEST_PROPOSALS) -> None:
        import caffe

        self.net = load_net(prototxt, weights, caffe.TEST, allow_missing)
        self.size = self.net.blobs["data"].data.shape[2]
        self.batch = self.choose_batch(proposals, gpu=False) if batch is None else batch

    def choose_batch(self, proposals: int, gpu: bool, reserved: int = 0) -> int:
        """The batch the memory holds (logged): host memory less ``reserved``
        bytes on the CPU, the device's free memory less ``reserved`` device
        bytes on the GPU."""
        return gpu_batch(self.net, proposals, reserved) if gpu else cpu_batch(self.net, proposals, reserved)

    @property
    def classes(self) -> int:
        return self.net.blobs["seg_score"].data.shape[1]

    def scores(self, crops: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(N, C, S, S) score maps of (N, 3, S, S) crops, in the first N of
        ``out`` when given (a buffer shared with other processes)."""
        if out is None:
            out = np.empty((len(crops), self.classes, self.size, self.size), np.float32)
        out = out[:len(crops)]
        for start in range(0, len(crops), self.batch):
            chunk = crops[start:start + self.batch]
            if self.net.blobs["data"].data.shape[0] != len(chunk):
                self.net.blobs["data"].reshape(len(chunk), 3, self.size, self.size)
                self.net.reshape()
            self.net.blobs["data"].data[...] = chunk
            out[start:start + len(chunk)] = self.net.forward()["seg_score"]
        return out


class WholeImageModel:
    """A net whose ``score`` covers the whole image it is given (any size):
    FCN-8s, or DeepLab-LargeFOV (run at the image's own size; its release
    pads to 513x513 instead, which changes only the borders' context)."""

    def __init__(self, prototxt: Path, weights: Path, allow_missing: bool = False, name: str = "fcn8s") -> None:
        import caffe

        self.name = name
        self.net = load_net(prototxt, weights, caffe.TEST, allow_missing)

    def scores(self, image: np.ndarray) -> np.ndarray:
        data = (image.astype(np.float32) - MEAN).transpose(2, 0, 1)
        self.net.blobs["data"].reshape(1, *data.shape)
        self.net.reshape()
        self.net.blobs["data"].data[0] = data
        return self.net.forward()["score"][0].copy()

    def device_bytes(self) -> int:
        """Weights and blobs at the deploy prototxt's input size (the largest
        image it expects): what it holds on a GPU it shares with DeconvNet."""
        return parameter_bytes(self.net) + bytes_per_example(self.net)


FCNModel = WholeImageModel
