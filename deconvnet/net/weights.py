"""Strict loading of trained weights. Caffe copies a caffemodel into a net by
layer name and silently skips the net's layers the file lacks, leaving them
at their fillers, so a 0-byte file or one for another layout runs with
random weights; and a shape mismatch aborts the process. Here every learned
layer must be in the file with the net's shapes, or the tool stops naming
them (``allow_missing`` lists the missing ones and goes on)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)


class WeightsMismatch(Exception):
    """The caffemodel does not fit the net; the message names the layers."""


def stored_shapes(weights: Path) -> dict[str, list[tuple[int, ...]]]:
    """Layer name -> blob shapes in a caffemodel (new or V1 format)."""
    from caffe.proto import caffe_pb2

    weights = Path(weights)
    if not weights.is_file():
        raise WeightsMismatch(f"{weights}: not found")
    param = caffe_pb2.NetParameter()
    try:
        param.ParseFromString(weights.read_bytes())
    except Exception as err:  # protobuf's DecodeError
        raise WeightsMismatch(f"{weights}: not a caffemodel ({err})") from err
    shapes: dict[str, list[tuple[int, ...]]] = {}
    for layer in list(param.layer) + list(param.layers):
        if len(layer.blobs):
            shapes[layer.name] = [tuple(b.shape.dim) if b.HasField("shape")
                                  else (b.num, b.channels, b.height, b.width) for b in layer.blobs]
    return shapes


def _fits(net_shape: tuple[int, ...], stored: tuple[int, ...], legacy: bool) -> bool:
    # Legacy 4-D blobs (num, channels, height, width) fit any shape of the same count, as in Caffe.
    return net_shape == stored or (legacy and int(np.prod(net_shape)) == int(np.prod(stored)))


def check_weights(net, prototxt: Path, weights: Path, allow_missing: bool = False) -> list[str]:
    """The learned layers of ``net`` that ``weights`` lacks (only when
    allow_missing); raises WeightsMismatch on missing layers (unless
    allowed) and on any shape mismatch."""
    stored = stored_shapes(weights)
    missing = [name for name in net.params if name not in stored]
    wrong = []
    for name, blobs in net.params.items():
        if name not in stored:
            continue
        have = [tuple(b.data.shape) for b in blobs]
        legacy = all(len(s) == 4 for s in stored[name])
        if len(have) != len(stored[name]) or not all(
                _fits(h, s, legacy) for h, s in zip(have, stored[name], strict=True)):
            wrong.append(f"{name} (net {have}, file {stored[name]})")
    if wrong:
        raise WeightsMismatch(f"{weights} does not fit {prototxt}: other shapes for {', '.join(wrong[:6])}"
                              f"{' ...' if len(wrong) > 6 else ''}")
    if missing and not allow_missing:
        shown = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
        raise WeightsMismatch(
            f"{weights} has no weights for {len(missing)} of the {len(net.params)} learned layers of {prototxt} "
            f"({shown}): a model for another layout (for FCN-8s, --fcn-variant 2014 or heavy), or an "
            "incomplete file. --allow-missing-weights runs them with their initial fillers")
    if missing:
        LOG.warning("%s lacks %d learned layers of %s; they keep their fillers: %s", weights, len(missing),
                    prototxt, ", ".join(missing))
    return missing


def load_net(prototxt: Path, weights: Path, phase: int, allow_missing: bool = False):
    """A caffe.Net of ``prototxt`` with ``weights``, checked first."""
    import caffe

    net = caffe.Net(str(prototxt), phase)
    check_weights(net, prototxt, weights, allow_missing)
    net.copy_from(str(weights))
    return net
