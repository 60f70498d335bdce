"""Random caffemodels in the layout of the released files we cannot ship:
VGG16 (``VGG_ILSVRC_16_layers.caffemodel``) and the FCN authors' 2014
FCN-8s (``fcn-8s-pascal.caffemodel``), for the rehearsal of
docs/REPRODUCE.md and for tests.

Both originals predate Caffe's 2015 format change, so they are written here
the way they were: a V1 ``NetParameter`` (``layers``, field 2), each layer
with ``name`` (4), the ``type`` enum (5) and ``blobs`` (6), and each blob
with the legacy 4-D ``num/channels/height/width`` (1-4) and packed
``data`` (5). The wire format is written directly from these field numbers
(from caffe.proto), not through our prototxt, so a test that loads such a
file into our deploy nets checks their names and shapes against the
released layout. Today's Caffe upgrades V1 files as it reads them.

Layer names and shapes: VGG16 is configuration D of Simonyan and Zisserman
(2015), fc6 an InnerProduct over the 7x7x512 pool5; the 2014 FCN-8s (Long,
Shelhamer and Darrell) has fc6/fc7 as convolutions and its own score head
names (``score-fr``, ``score2``, ``score-pool4``, ``score4``,
``score-pool3``, ``upsample``), of which only ``score2`` of the
upsamplings has a bias.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO

import numpy as np

from deconvnet.common.atomic import atomic_path

LOG = logging.getLogger(__name__)

# V1LayerParameter.LayerType values (caffe.proto).
CONVOLUTION, INNER_PRODUCT, DECONVOLUTION = 4, 14, 39

Shapes = tuple[tuple[int, ...], ...]
# (name, V1 type, blob shapes), in the file's order.
Layer = tuple[str, int, Shapes]

_VGG_CONVS = (("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128), ("conv2_2", 128, 128),
              ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
              ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512),
              ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512))
_ENCODER: tuple[Layer, ...] = tuple((name, CONVOLUTION, ((out, inp, 3, 3), (out,))) for name, inp, out in _VGG_CONVS)

VGG16_LAYERS: tuple[Layer, ...] = _ENCODER + (
    ("fc6", INNER_PRODUCT, ((4096, 512 * 7 * 7), (4096,))),
    ("fc7", INNER_PRODUCT, ((4096, 4096), (4096,))),
    ("fc8", INNER_PRODUCT, ((1000, 4096), (1000,))),
)

FCN8S_2014_LAYERS: tuple[Layer, ...] = _ENCODER + (
    ("fc6", CONVOLUTION, ((4096, 512, 7, 7), (4096,))),
    ("fc7", CONVOLUTION, ((4096, 4096, 1, 1), (4096,))),
    ("score-fr", CONVOLUTION, ((21, 4096, 1, 1), (21,))),
    ("score2", DECONVOLUTION, ((21, 21, 4, 4), (21,))),
    ("score-pool4", CONVOLUTION, ((21, 512, 1, 1), (21,))),
    ("score4", DECONVOLUTION, ((21, 21, 4, 4),)),
    ("score-pool3", CONVOLUTION, ((21, 256, 1, 1), (21,))),
    ("upsample", DECONVOLUTION, ((21, 21, 16, 16),)),
)

STAND_INS = {"vgg16": ("VGG_ILSVRC_16", VGG16_LAYERS), "fcn8s-pascal-2014": ("FCN-8s", FCN8S_2014_LAYERS)}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _length_delimited(field: int, payload_size: int) -> bytes:
    """The key and length of a field whose payload follows."""
    return _key(field, 2) + _varint(payload_size)


def _legacy_dims(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """num, channels, height, width: shapes of under four axes padded in front."""
    return (1,) * (4 - len(shape)) + tuple(shape)  # type: ignore[return-value]


def _blob(shape: tuple[int, ...], values: np.ndarray) -> tuple[bytes, bytes]:
    """A BlobProto as (its header fields, its packed float data field)."""
    head = b"".join(_key(field, 0) + _varint(dim) for field, dim in enumerate(_legacy_dims(shape), 1))
    data = np.ascontiguousarray(values, dtype="<f4").tobytes()
    return head, _length_delimited(5, len(data)) + data


def _write_layer(out: BinaryIO, name: str, kind: int, blobs: list[tuple[bytes, bytes]]) -> None:
    encoded_name = name.encode()
    head = _length_delimited(4, len(encoded_name)) + encoded_name + _key(5, 0) + _varint(kind)
    sizes = [len(h) + len(d) for h, d in blobs]
    body = len(head) + sum(len(_length_delimited(6, s)) + s for s in sizes)
    out.write(_length_delimited(2, body) + head)
    for (blob_head, blob_data), size in zip(blobs, sizes, strict=True):
        out.write(_length_delimited(6, size) + blob_head)
        out.write(blob_data)


def random_values(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """He-scaled normal weights (activations neither vanish nor explode
    through 16 layers); small biases."""
    if len(shape) == 1:
        return rng.normal(0, 0.01, shape).astype(np.float32)
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)))


def write_v1_caffemodel(path: Path, net_name: str, layers: tuple[Layer, ...], seed: int = 0) -> Path:
    """A V1 caffemodel with these layers and random values, written whole
    (a temporary file renamed into place)."""
    rng = np.random.default_rng(seed)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        encoded = net_name.encode()
        out.write(_length_delimited(1, len(encoded)) + encoded)
        for name, kind, shapes in layers:
            _write_layer(out, name, kind, [_blob(s, random_values(s, rng)) for s in shapes])
    LOG.info("%s: random %s stand-in, %.0f MiB", path, net_name, path.stat().st_size / 2 ** 20)
    return path


def write_stand_in(which: str, path: Path, seed: int = 0) -> Path:
    """``which``: a key of STAND_INS (named as tools/download.py's assets)."""
    net_name, layers = STAND_INS[which]
    return write_v1_caffemodel(path, net_name, layers, seed)

