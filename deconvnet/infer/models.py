"""The two networks inference runs, loaded from a deploy prototxt and a
caffemodel: DeconvNet on batches of proposal crops, FCN-8s on whole images.

Caffe copies weights by layer name and silently skips the net's layers the
caffemodel lacks, leaving them at their fillers; both loaders refuse that
(a 2014 FCN-8s caffemodel in the heavy layout would otherwise run with a
random score head)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deconvnet.infer.aggregation import MEAN


class WeightsMismatch(Exception):
    """The caffemodel does not hold weights for every learned layer of the net."""


def layers_with_weights(weights: Path) -> set[str]:
    """Names of the layers that carry blobs in a caffemodel (new or V1 format)."""
    from caffe.proto import caffe_pb2

    param = caffe_pb2.NetParameter()
    try:
        param.ParseFromString(Path(weights).read_bytes())
    except Exception as err:  # protobuf's DecodeError
        raise WeightsMismatch(f"{weights}: not a caffemodel ({err})") from err
    return {layer.name for layer in list(param.layer) + list(param.layers) if len(layer.blobs)}


def check_weights_cover(net, prototxt: Path, weights: Path) -> None:
    missing = [name for name in net.params if name not in layers_with_weights(weights)]
    if missing:
        raise WeightsMismatch(
            f"{weights} has no weights for {len(missing)} of the {len(net.params)} learned layers of {prototxt} "
            f"({', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''}): a model for another layout "
            "(for FCN-8s, --fcn-variant 2014 or heavy), or an incomplete file")


class DeconvNetModel:
    """The deploy net, run on proposal crops in batches."""

    def __init__(self, prototxt: Path, weights: Path, batch: int = 50) -> None:
        import caffe

        self.net = caffe.Net(str(prototxt), str(weights), caffe.TEST)
        check_weights_cover(self.net, prototxt, weights)
        self.size = self.net.blobs["data"].data.shape[2]
        self.batch = batch

    def scores(self, crops: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(crops), self.batch):
            chunk = crops[start:start + self.batch]
            if self.net.blobs["data"].data.shape[0] != len(chunk):
                self.net.blobs["data"].reshape(len(chunk), 3, self.size, self.size)
                self.net.reshape()
            self.net.blobs["data"].data[...] = chunk
            out.append(self.net.forward()["seg_score"].copy())
        return np.concatenate(out)


class FCNModel:
    """FCN-8s on the whole image (any size)."""

    def __init__(self, prototxt: Path, weights: Path) -> None:
        import caffe

        self.net = caffe.Net(str(prototxt), str(weights), caffe.TEST)
        check_weights_cover(self.net, prototxt, weights)

    def scores(self, image: np.ndarray) -> np.ndarray:
        data = (image.astype(np.float32) - MEAN).transpose(2, 0, 1)
        self.net.blobs["data"].reshape(1, *data.shape)
        self.net.reshape()
        self.net.blobs["data"].data[0] = data
        return self.net.forward()["score"][0].copy()
