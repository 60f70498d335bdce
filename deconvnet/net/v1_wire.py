"""A reader of V1 caffemodels as the authors' 2015 Caffe fork wrote them,
straight from the protobuf wire format.

Today's ``caffe_pb2`` parses such files as ``V1LayerParameter`` but reads
the fork's own layer types (BN 43, UNPOOLING 42, CROP 40) as 0 and drops
their parameters (``bn_param`` 45, ``unpooling_param`` 44), and Caffe's C++
loader aborts the process on a broken file. This reader keeps what the
conversion needs and nothing else, and stops on any inconsistency with a
message that names the file and the byte:

- ``NetParameter``: ``name`` 1, ``layers`` 2 (V1); ``layer`` 100 is the
  V2 format, which needs no conversion;
- ``V1LayerParameter``: ``bottom`` 2, ``top`` 3, ``name`` 4, ``type`` 5
  (the enum), ``blobs`` 6, ``unpooling_param`` 44 (``unpool_size`` 12),
  ``bn_param`` 45 (``bn_mode`` 3);
- ``BlobProto``: ``num``, ``channels``, ``height``, ``width`` 1-4, packed
  float ``data`` 5 (or one float per field), ``shape`` 7 (``dim`` 1),
  ``double_data`` 8.

Blob data stays a read-only numpy view into the file's bytes (no copy).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The fork's LayerType values (its caffe.proto); the first five are today's too.
CONVOLUTION, INNER_PRODUCT, POOLING, RELU, SOFTMAX = 4, 14, 17, 18, 20
DECONVOLUTION, CROP, UNPOOLING, BN = 39, 40, 42, 43
DROPOUT, ELTWISE = 6, 25
TYPE_NAMES = {DROPOUT: "DROPOUT", ELTWISE: "ELTWISE", CONVOLUTION: "CONVOLUTION", INNER_PRODUCT: "INNER_PRODUCT",
              POOLING: "POOLING", RELU: "RELU", SOFTMAX: "SOFTMAX", DECONVOLUTION: "DECONVOLUTION", CROP: "CROP",
              UNPOOLING: "UNPOOLING", BN: "BN"}
BN_LEARN, BN_INFERENCE = 0, 1

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class V1FormatError(Exception):
    """The file is not a readable V1 caffemodel; the message says why."""


@dataclass
class V1Blob:
    shape: tuple[int, ...]
    data: np.ndarray            # float32 or float64, flat

    @property
    def count(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 0


@dataclass
class V1Layer:
    name: str = ""
    kind: int = 0
    bottoms: list[str] = field(default_factory=list)
    tops: list[str] = field(default_factory=list)
    blobs: list[V1Blob] = field(default_factory=list)
    bn_mode: int | None = None          # None: no bn_mode stored (the fork's default, LEARN)
    unpool_size: int | None = None

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.kind, f"type {self.kind}")


@dataclass
class V1Net:
    path: Path
    name: str
    layers: list[V1Layer]

    def learned(self) -> dict[str, V1Layer]:
        """The layers that hold blobs, by name."""
        return {layer.name: layer for layer in self.layers if layer.blobs}


class _Reader:
    """Fields of one message in ``buf[start:end]``."""

    def __init__(self, path: Path, buf: memoryview, start: int, end: int) -> None:
        self.path, self.buf, self.pos, self.end = path, buf, start, end

    def _fail(self, what: str) -> V1FormatError:
        return V1FormatError(f"{self.path}: {what} at byte {self.pos} of {len(self.buf)}: a truncated or "
                             "damaged file (download it again), or not a caffemodel")

    def varint(self) -> int:
        value = shift = 0
        while True:
            if self.pos >= self.end:
                raise self._fail("the file ends inside a number")
            byte = self.buf[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise self._fail("a number longer than 10 bytes")

    def fields(self):
        """(field number, wire type, value): an int for numbers, (start, end)
        for length-delimited and fixed-width payloads."""
        while self.pos < self.end:
            key = self.varint()
            number, wire = key >> 3, key & 7
            if number == 0:
                raise self._fail("field number 0")
            if wire == _VARINT:
                yield number, wire, self.varint()
                continue
            size = {_FIXED64: 8, _FIXED32: 4}.get(wire)
            if size is None and wire == _LENGTH:
                size = self.varint()
            if size is None:
                raise self._fail(f"wire type {wire} (groups are not used by Caffe)")
            if self.pos + size > self.end:
                raise self._fail(f"field {number} claims {size} bytes, {self.end - self.pos} are left")
            yield number, wire, (self.pos, self.pos + size)
            self.pos += size

    def sub(self, span: tuple[int, int]) -> _Reader:
        return _Reader(self.path, self.buf, *span)

    def text(self, span: tuple[int, int]) -> str:
        return bytes(self.buf[span[0]:span[1]]).decode("utf-8", errors="replace")


def _blob(reader: _Reader) -> V1Blob:
    dims = [0, 0, 0, 0]
    shape: list[int] | None = None
    chunks: list[np.ndarray] = []
    for number, wire, value in reader.fields():
        if 1 <= number <= 4 and wire == _VARINT:
            dims[number - 1] = value
        elif number == 5 and wire == _LENGTH:
            start, end = value
            if (end - start) % 4:
                raise reader._fail("packed float data whose length is not a multiple of 4")
            chunks.append(np.frombuffer(reader.buf, "<f4", (end - start) // 4, start))
        elif number == 5 and wire == _FIXED32:
            chunks.append(np.frombuffer(reader.buf, "<f4", 1, value[0]))
        elif number == 8 and wire == _LENGTH:
            start, end = value
            chunks.append(np.frombuffer(reader.buf, "<f8", (end - start) // 8, start))
        elif number == 7 and wire == _LENGTH:
            shape = []
            for dim_number, dim_wire, dim in reader.sub(value).fields():
                if dim_number == 1 and dim_wire == _VARINT:
                    shape.append(dim)
                elif dim_number == 1 and dim_wire == _LENGTH:
                    packed = reader.sub(dim)
                    while packed.pos < packed.end:
                        shape.append(packed.varint())
    data = chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    blob = V1Blob(tuple(shape) if shape is not None else tuple(dims), data)
    if blob.count != data.size:
        raise V1FormatError(f"{reader.path}: a blob of shape {blob.shape} holds {data.size} values, not "
                            f"{blob.count}: a damaged file")
    return blob


def _layer(reader: _Reader) -> V1Layer:
    layer = V1Layer()
    for number, wire, value in reader.fields():
        if wire == _LENGTH and number in (2, 3, 4):
            text = reader.text(value)
            if number == 4:
                layer.name = text
            else:
                (layer.bottoms if number == 2 else layer.tops).append(text)
        elif number == 5 and wire == _VARINT:
            layer.kind = value
        elif number == 6 and wire == _LENGTH:
            layer.blobs.append(_blob(reader.sub(value)))
        elif number in (44, 45) and wire == _LENGTH:
            for inner, inner_wire, inner_value in reader.sub(value).fields():
                if number == 45 and inner == 3 and inner_wire == _VARINT:
                    layer.bn_mode = inner_value
                elif number == 44 and inner == 12 and inner_wire == _VARINT:
                    layer.unpool_size = inner_value
    return layer


def read_v1_net(path: Path) -> V1Net:
    """The V1 net in caffemodel ``path``; V1FormatError when it is not one
    (a V2 file, a truncated or damaged file, or another kind of file)."""
    path = Path(path)
    if not path.is_file():
        raise V1FormatError(f"{path}: not found")
    data = memoryview(path.read_bytes())
    reader = _Reader(path, data, 0, len(data))
    name, layers, v2_layers = "", [], 0
    for number, wire, value in reader.fields():
        if number == 1 and wire == _LENGTH:
            name = reader.text(value)
        elif number == 2 and wire == _LENGTH:
            layers.append(_layer(reader.sub(value)))
        elif number == 100 and wire == _LENGTH:
            v2_layers += 1
    if v2_layers:
        raise V1FormatError(f"{path}: a caffemodel in today's (V2) format, with {v2_layers} layers: it needs no "
                            "conversion; give it to tools/infer.py --weights with the prototxt it was trained "
                            "with")
    if not layers:
        raise V1FormatError(f"{path}: no V1 layers: an empty file, or not a caffemodel")
    return V1Net(path, name, layers)
