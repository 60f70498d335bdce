"""Strict loading of trained weights. Caffe copies a caffemodel into a net by
layer name and silently skips the net's layers the file lacks, leaving them
at their fillers, so a 0-byte file or one for another layout runs with
random weights; and a shape mismatch aborts the process. Here every learned
layer must be in the file with the net's shapes, or the tool stops naming
them (``allow_missing`` lists the missing ones and goes on)."""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)


class WeightsMismatch(Exception):
    """The caffemodel does not fit the net; the message names the layers."""


NORMALISATION = ("BatchNorm", "Scale")


def stored_layers(weights: Path) -> dict[str, tuple[str, list[tuple[int, ...]]]]:
    """Layer name -> (type, blob shapes) in a caffemodel (new or V1 format;
    V1 types are numbers, as text)."""
    from caffe.proto import caffe_pb2

    weights = Path(weights)
    if not weights.is_file():
        raise WeightsMismatch(f"{weights}: not found")
    param = caffe_pb2.NetParameter()
    try:
        param.ParseFromString(weights.read_bytes())
    except Exception as err:  # protobuf's DecodeError
        raise WeightsMismatch(f"{weights}: not a caffemodel ({err})") from err
    layers: dict[str, tuple[str, list[tuple[int, ...]]]] = {}
    for layer in list(param.layer) + list(param.layers):
        if len(layer.blobs):
            layers[layer.name] = (str(layer.type), [tuple(b.shape.dim) if b.HasField("shape")
                                                    else (b.num, b.channels, b.height, b.width)
                                                    for b in layer.blobs])
    return layers


def _fits(net_shape: tuple[int, ...], stored: tuple[int, ...], legacy: bool) -> bool:
    # Legacy 4-D blobs (num, channels, height, width) fit any shape of the same count, as in Caffe.
    return net_shape == stored or (legacy and int(np.prod(net_shape)) == int(np.prod(stored)))


def check_weights(net, prototxt: Path, weights: Path, allow_missing: bool = False) -> list[str]:
    """The learned layers of ``net`` that ``weights`` lacks (only when
    allow_missing); raises WeightsMismatch on missing layers (unless
    allowed) and on any shape mismatch."""
    layers = stored_layers(weights)
    stored = {name: shapes for name, (_, shapes) in layers.items()}
    missing = [name for name in net.params if name not in stored]
    net_types = {name: layer.type for name, layer in zip(net._layer_names, net.layers, strict=True)}
    unfolded = [name for name, (kind, _) in layers.items() if kind in NORMALISATION and name not in net_types]
    if unfolded and not any(kind in NORMALISATION for kind in net_types.values()):
        # Its convolutions would load and run without the BatchNorm and Scale they need.
        raise WeightsMismatch(
            f"{weights} has BatchNorm/Scale layers ({', '.join(unfolded[:3])}, ...) that {prototxt} lacks: weights "
            "for the unfolded net. Use them with prototxt/deconvnet_deploy.prototxt, or fold them with "
            "tools/fold_bn.py")
    file_normalises = any(kind in NORMALISATION for kind, _ in layers.values())
    if missing and not allow_missing and not file_normalises and all(
            net_types[name] in NORMALISATION for name in missing):
        # Checked before the shapes: the folded net's fc layers have other shapes too.
        raise WeightsMismatch(
            f"{weights} has no BatchNorm/Scale weights for {prototxt} ({', '.join(missing[:4])}, ...): a folded "
            "caffemodel (tools/fold_bn.py)? Use it with its folded prototxt, such as "
            "prototxt/deconvnet_deploy_folded.prototxt")
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


# A prototxt written with its weights (tools/fold_bn.py) names them on its first line.
PAIR_LINE = re.compile(r"^# weights fingerprint: ([0-9a-f]{64}) \((\d+) bytes\)$", re.M)
_SAMPLES, _BLOCK = 64, 1 << 16


def weights_fingerprint(path: Path) -> str:
    """sha256 of a caffemodel's size and 64 evenly spaced 64 KiB blocks (the
    whole file when smaller): any other fold differs in it, and it costs
    milliseconds for the full net's 1 GB, not a full read."""
    size = Path(path).stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _SAMPLES * _BLOCK:
            digest.update(f.read())
        else:
            for k in range(_SAMPLES):
                f.seek(k * (size - _BLOCK) // (_SAMPLES - 1))
                digest.update(f.read(_BLOCK))
    return digest.hexdigest()


def pair_header(weights: Path) -> str:
    """The prototxt's first line for a net written together with ``weights``."""
    return f"# weights fingerprint: {weights_fingerprint(weights)} ({Path(weights).stat().st_size} bytes)\n"


def check_pair(prototxt: Path, weights: Path) -> None:
    """WeightsMismatch when ``prototxt`` names other weights than ``weights``."""
    with open(prototxt, errors="replace") as f:
        match = PAIR_LINE.match(f.readline())
    if match and Path(weights).is_file() and match.group(1) != weights_fingerprint(weights):
        raise WeightsMismatch(
            f"{prototxt} was written by tools/fold_bn.py for other weights than {weights} (a fold stopped between "
            "renaming its two files, or files of two folds mixed); rerun tools/fold_bn.py to write the pair again")


def load_net(prototxt: Path, weights: Path, phase: int, allow_missing: bool = False):
    """A caffe.Net of ``prototxt`` with ``weights``, checked first."""
    import caffe

    check_pair(prototxt, weights)
    net = caffe.Net(str(prototxt), phase)
    check_weights(net, prototxt, weights, allow_missing)
    net.copy_from(str(weights))
    return net
