"""Random caffemodels in the layout of the released files we cannot ship:
VGG16 (``VGG_ILSVRC_16_layers.caffemodel``), the FCN authors' 2014
FCN-8s (``fcn-8s-pascal.caffemodel``, with its CROP layers) and the
DeconvNet authors' inference model and stage-2 training snapshot
(``DeconvNet_trainval_inference.caffemodel``,
``stage_2_train_result.caffemodel``, with their fork's BN and UNPOOLING
layers), for the rehearsal of docs/REPRODUCE.md, for tests and for the
conversion benchmark.

Both originals predate Caffe's 2015 format change, so they are written here
the way they were: a V1 ``NetParameter`` (``layers``, field 2), each layer
with ``name`` (4), the ``type`` enum (5) and ``blobs`` (6), and each blob
with the legacy 4-D ``num/channels/height/width`` (1-4) and packed
``data`` (5). The wire format is written directly from these field numbers
(from caffe.proto and the DeconvNet fork's caffe.proto: BN 43 with
``bn_param`` 45, UNPOOLING 42 with ``unpooling_param`` 44, CROP 40), not
through our prototxt or our reader (deconvnet.net.v1_wire), so a test that
loads or converts such a file checks our names and shapes against the
released layout.

The DeconvNet files follow the release's prototxts: its inference model
was saved by ``BN_make_INFERENCE_script.py`` from a net whose BN layers
have three tops (the output, ``bnN_K-mean`` and ``bnN_K-var``) and hold
the folded scale and shift, each (1, C, 1, 1); its snapshot's BN layers
have one top; neither stores a ``bn_mode``.

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
from typing import BinaryIO, NamedTuple

import numpy as np

from deconvnet.common.atomic import atomic_path
from deconvnet.common.constants import NUM_CLASSES
from deconvnet.net.architecture import DECODER_BLOCKS, FC_WIDTH, VGG_BLOCKS, Size

LOG = logging.getLogger(__name__)

# V1LayerParameter.LayerType values (caffe.proto; the last four only the forks').
DROPOUT, CONVOLUTION, INNER_PRODUCT, POOLING, RELU, ELTWISE = 6, 4, 14, 17, 18, 25
DECONVOLUTION, CROP, UNPOOLING, BN, WINDOW_SEG_DATA = 39, 40, 42, 43, 47

Shapes = tuple[tuple[int, ...], ...]


class Layer(NamedTuple):
    """One V1 layer, in the file's order."""
    name: str
    kind: int                   # the V1 type enum
    shapes: Shapes = ()         # its blobs
    bottoms: tuple[str, ...] = ()
    tops: tuple[str, ...] = ()
    params: bytes = b""         # further encoded fields (bn_param, unpooling_param)

_VGG_CONVS = (("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128), ("conv2_2", 128, 128),
              ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
              ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512),
              ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512))
_ENCODER: tuple[Layer, ...] = tuple(Layer(name, CONVOLUTION, ((out, inp, 3, 3), (out,)))
                                    for name, inp, out in _VGG_CONVS)

VGG16_LAYERS: tuple[Layer, ...] = _ENCODER + (
    Layer("fc6", INNER_PRODUCT, ((4096, 512 * 7 * 7), (4096,))),
    Layer("fc7", INNER_PRODUCT, ((4096, 4096), (4096,))),
    Layer("fc8", INNER_PRODUCT, ((1000, 4096), (1000,))),
)

FCN8S_2014_LAYERS: tuple[Layer, ...] = _ENCODER + (
    Layer("fc6", CONVOLUTION, ((4096, 512, 7, 7), (4096,))),
    Layer("fc7", CONVOLUTION, ((4096, 4096, 1, 1), (4096,))),
    Layer("score-fr", CONVOLUTION, ((21, 4096, 1, 1), (21,))),
    Layer("score2", DECONVOLUTION, ((21, 21, 4, 4), (21,))),
    Layer("score-pool4", CONVOLUTION, ((21, 512, 1, 1), (21,))),
    Layer("score4", DECONVOLUTION, ((21, 21, 4, 4),)),
    Layer("score-pool3", CONVOLUTION, ((21, 256, 1, 1), (21,))),
    Layer("upsample", DECONVOLUTION, ((21, 21, 16, 16),)),
)


def _fcn8s_2014_file() -> tuple[Layer, ...]:
    """The learned layers with the layers between them as the 2014 file has
    them: ReLU, pooling, dropout, and the CROP (fork type 40) and ELTWISE
    layers of the skip connections, which hold no weights."""
    learned = {layer.name: layer for layer in FCN8S_2014_LAYERS}
    out: list[Layer] = []
    bottom = "data"
    for stage, convs, _ in VGG_BLOCKS:
        for k in range(1, convs + 1):
            name = f"conv{stage}_{k}"
            out += [learned[name]._replace(bottoms=(bottom,), tops=(name,)),
                    Layer(f"relu{stage}_{k}", RELU, bottoms=(name,), tops=(name,))]
            bottom = name
        out.append(Layer(f"pool{stage}", POOLING, bottoms=(bottom,), tops=(f"pool{stage}",)))
        bottom = f"pool{stage}"
    for fc in ("6", "7"):
        out += [learned[f"fc{fc}"]._replace(bottoms=(bottom,), tops=(f"fc{fc}",)),
                Layer(f"relu{fc}", RELU, bottoms=(f"fc{fc}",), tops=(f"fc{fc}",)),
                Layer(f"drop{fc}", DROPOUT, bottoms=(f"fc{fc}",), tops=(f"fc{fc}",))]
        bottom = f"fc{fc}"
    out += [learned["score-fr"]._replace(bottoms=("fc7",), tops=("score",)),
            learned["score2"]._replace(bottoms=("score",), tops=("score2",)),
            learned["score-pool4"]._replace(bottoms=("pool4",), tops=("score-pool4",)),
            Layer("crop", CROP, bottoms=("score-pool4", "score2"), tops=("score-pool4c",)),
            Layer("fuse", ELTWISE, bottoms=("score2", "score-pool4c"), tops=("score-fused",)),
            learned["score4"]._replace(bottoms=("score-fused",), tops=("score4",)),
            learned["score-pool3"]._replace(bottoms=("pool3",), tops=("score-pool3",)),
            Layer("crop", CROP, bottoms=("score-pool3", "score4"), tops=("score-pool3c",)),
            Layer("fuse", ELTWISE, bottoms=("score4", "score-pool3c"), tops=("score-final",)),
            learned["upsample"]._replace(bottoms=("score-final",), tops=("bigscore",)),
            Layer("crop", CROP, bottoms=("bigscore", "data"), tops=("upscore",))]
    return tuple(out)


FCN8S_2014_FILE = _fcn8s_2014_file()


def _message(field: int, payload: bytes) -> bytes:
    return _length_delimited(field, len(payload)) + payload


def deconvnet_release_layers(size: Size = Size(), snapshot: bool = False,
                             bn_mode: int | None = None) -> tuple[Layer, ...]:
    """The DeconvNet release's layers (``snapshot``: the stage-2 training
    snapshot's BN layers, with one top), with the release's names, for the
    paper's net (Size()) or a reduced one; ``bn_mode`` (0 LEARN, 1
    INFERENCE) is stored in each BN's ``bn_param`` when given."""
    mode = b"" if bn_mode is None else _message(45, _key(3, 0) + _varint(bn_mode))

    def bn(name: str, blob: str, channels: int) -> Layer:
        tops = (blob,) if snapshot else (blob, f"{name}-mean", f"{name}-var")
        return Layer(name, BN, ((1, channels, 1, 1), (1, channels, 1, 1)), (blob,), tops, mode)

    def conv(name: str, kind: int, bottom: str, cin: int, cout: int, kernel: int) -> Layer:
        weight = (cin, cout, kernel, kernel) if kind == DECONVOLUTION else (cout, cin, kernel, kernel)
        return Layer(name, kind, (weight, (cout,)), (bottom,), (name,))

    out: list[Layer] = [Layer("data", WINDOW_SEG_DATA, tops=("data", "seg-label"))]
    bottom, cin = "data", 3
    for stage, convs, channels in VGG_BLOCKS:
        for k in range(1, convs + 1):
            name, width = f"conv{stage}_{k}", size.width(channels)
            out += [conv(name, CONVOLUTION, bottom, cin, width, 3), bn(f"bn{stage}_{k}", name, width),
                    Layer(f"relu{stage}_{k}", RELU, bottoms=(name,), tops=(name,))]
            bottom, cin = name, width
        out.append(Layer(f"pool{stage}", POOLING, bottoms=(bottom,), tops=(f"pool{stage}", f"pool{stage}_mask")))
        bottom = f"pool{stage}"
    fc, k = size.width(FC_WIDTH), size.fc6_kernel
    out += [conv("fc6", CONVOLUTION, bottom, cin, fc, k), bn("bnfc6", "fc6", fc),
            Layer("relu6", RELU, bottoms=("fc6",), tops=("fc6",)),
            conv("fc7", CONVOLUTION, "fc6", fc, fc, 1), bn("bnfc7", "fc7", fc),
            Layer("relu7", RELU, bottoms=("fc7",), tops=("fc7",)),
            conv("fc6-deconv", DECONVOLUTION, "fc7", fc, size.width(512), k),
            bn("fc6-deconv-bn", "fc6-deconv", size.width(512)),
            Layer("fc6-deconv-relu", RELU, bottoms=("fc6-deconv",), tops=("fc6-deconv",))]
    bottom, cin = "fc6-deconv", size.width(512)
    for stage, widths in DECODER_BLOCKS:
        unpool_size = size.input_size >> (stage - 1)
        out.append(Layer(f"unpool{stage}", UNPOOLING, bottoms=(bottom, f"pool{stage}_mask"), tops=(f"unpool{stage}",),
                         params=_message(44, _key(12, 0) + _varint(unpool_size))))
        bottom = f"unpool{stage}"
        for j, channels in enumerate(widths, start=1):
            name, width = f"deconv{stage}_{j}", size.width(channels)
            out += [conv(name, DECONVOLUTION, bottom, cin, width, 3), bn(f"debn{stage}_{j}", name, width),
                    Layer(f"derelu{stage}_{j}", RELU, bottoms=(name,), tops=(name,))]
            bottom, cin = name, width
    out.append(Layer("seg-score-voc", CONVOLUTION, ((NUM_CLASSES, cin, 1, 1), (NUM_CLASSES,)),
                     (bottom,), ("seg-score",)))
    return tuple(out)



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


def _write_layer(out: BinaryIO, layer: Layer, blobs: list[tuple[bytes, bytes]]) -> None:
    head = b"".join(_message(field, text.encode()) for field, texts in ((2, layer.bottoms), (3, layer.tops))
                    for text in texts)
    head += _message(4, layer.name.encode()) + _key(5, 0) + _varint(layer.kind) + layer.params
    sizes = [len(h) + len(d) for h, d in blobs]
    body = len(head) + sum(len(_length_delimited(6, s)) + s for s in sizes)
    out.write(_length_delimited(2, body) + head)
    for (blob_head, blob_data), size in zip(blobs, sizes, strict=True):
        out.write(_length_delimited(6, size) + blob_head)
        out.write(blob_data)


def random_values(shape: tuple[int, ...], rng: np.random.Generator, kind: int = CONVOLUTION,
                  index: int = 0) -> np.ndarray:
    """He-scaled normal weights (activations neither vanish nor explode
    through 16 layers); small biases; BN scales around 1 and shifts around 0
    (blobs 0 and 1 of a BN), each (1, C, 1, 1)."""
    if kind == BN:
        return (rng.uniform(0.5, 1.5, shape) if index == 0 else rng.normal(0, 0.2, shape)).astype(np.float32)
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
        for layer in (Layer(*spec) for spec in layers):
            _write_layer(out, layer, [_blob(shape, random_values(shape, rng, layer.kind, i))
                                      for i, shape in enumerate(layer.shapes)])
    LOG.info("%s: random %s stand-in, %.0f MiB", path, net_name, path.stat().st_size / 2 ** 20)
    return path


def write_stand_in(which: str, path: Path, seed: int = 0) -> Path:
    """``which``: a key of STAND_INS (named as tools/download.py's assets)."""
    net_name, layers = STAND_INS[which]
    return write_v1_caffemodel(path, net_name, layers, seed)


STAND_INS = {"vgg16": ("VGG_ILSVRC_16", VGG16_LAYERS), "fcn8s-pascal-2014": ("FCN-8s", FCN8S_2014_FILE),
             "deconvnet-inference": ("DeconvNet_make_bn_layer_testable", deconvnet_release_layers()),
             "deconvnet-stage2": ("stage_2_train", deconvnet_release_layers(snapshot=True))}
