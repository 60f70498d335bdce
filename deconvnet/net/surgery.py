"""Weight surgery: DeconvNet, FCN-8s and DeepLab-LargeFOV starting weights
from VGG16.

The VGG16 caffemodel is first checked with protobuf alone (Caffe's own loader
aborts the process on bad input), then loaded through Caffe with the VGG16
deploy prototxt, so legacy (V1) models are upgraded as Caffe does. Nothing is
written until every check has passed, and the output appears atomically.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError

from deconvnet.common.atomic import save_net
from deconvnet.net.architecture import VGG_BLOCKS
from deconvnet.net.nets import DEEPLAB_UPSAMPLE

import caffe
from caffe.proto import caffe_pb2

LOG = logging.getLogger(__name__)

VGG_CONVS = [f"conv{stage}_{k}" for stage, convs, _ in VGG_BLOCKS for k in range(1, convs + 1)]
FC_LAYERS = ("fc6", "fc7")
FCN_UPSAMPLE = ("upscore2", "upscore_pool4", "upscore8")
FCN_SCORES = ("score_fr", "score_pool4", "score_pool3")
NETS = ("deconvnet", "fcn8s", "deeplab-largefov")
# DeepLab-LargeFOV keeps every 4th of VGG16's 4096 fc6/fc7 filters (and
# fc7's inputs) and every 3rd tap of fc6's 7x7 kernel (taps 0, 3, 6): the
# DeepLab authors' init model.
DEEPLAB_FILTER_STEP = 4
DEEPLAB_TAP_STEP = 3
VGG_FC6_SIDE = 7


class SurgeryError(Exception):
    """Bad input to the surgery; the message says what and how to fix it."""


def _blob_shape(blob: caffe_pb2.BlobProto) -> tuple[int, ...]:
    if blob.HasField("shape"):
        return tuple(blob.shape.dim)
    # Legacy 4-D blobs (V1 models such as the public VGG16).
    return (blob.num, blob.channels, blob.height, blob.width)


def read_blob_shapes(path: Path) -> dict[str, list[tuple[int, ...]]]:
    """Layer name -> shapes of its blobs, from a caffemodel file."""
    if not path.is_file():
        raise SurgeryError(f"{path}: no such file")
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeError, ValueError) as err:
        raise SurgeryError(f"{path} is not a Caffe model (protobuf parse failed: {err})") from err
    shapes = {layer.name: [_blob_shape(b) for b in layer.blobs]
              for layer in list(net.layer) + list(net.layers) if layer.blobs}
    if not shapes:
        raise SurgeryError(f"{path} is not a Caffe model with weights (no layer has blobs)")
    return shapes


def _squeeze_legacy(shape: tuple[int, ...]) -> tuple[int, ...]:
    """V1 InnerProduct blobs are stored as (1, 1, out, in) and biases as
    (1, 1, 1, out); Caffe reshapes them on load."""
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def required_vgg_shapes(target: caffe.Net, net: str = "deconvnet") -> dict[str, list[tuple[int, ...]]]:
    """The VGG16 blob shapes the target's encoder needs, as Caffe loads them."""
    needed: dict[str, list[tuple[int, ...]]] = {}
    for name in VGG_CONVS:
        needed[name] = [p.data.shape for p in target.params[name]]
    for name in FC_LAYERS:
        weight, bias = target.params[name]
        out_ch, in_ch = weight.data.shape[:2]
        if net == "deeplab-largefov":
            inputs = in_ch * VGG_FC6_SIDE ** 2 if name == "fc6" else in_ch * DEEPLAB_FILTER_STEP
            needed[name] = [(out_ch * DEEPLAB_FILTER_STEP, inputs), (out_ch * DEEPLAB_FILTER_STEP,)]
        else:
            needed[name] = [(out_ch, int(np.prod(weight.data.shape[1:]))), bias.data.shape]
    return needed


def check_vgg_model(path: Path, have: dict[str, list[tuple[int, ...]]], target: caffe.Net,
                    net: str = "deconvnet") -> None:
    """Raises SurgeryError listing every missing layer and wrong shape."""
    needed = required_vgg_shapes(target, net)
    missing = [name for name in needed if name not in have]
    wrong = []
    for name, shapes in needed.items():
        if name in have:
            got = [_squeeze_legacy(s) for s in have[name]]
            if got != [_squeeze_legacy(tuple(s)) for s in shapes]:
                wrong.append(f"{name}: model has {got}, target needs {[tuple(s) for s in shapes]}")
    problems = []
    if missing:
        problems.append(f"missing layers: {', '.join(missing)}")
    if wrong:
        problems.append("wrong shapes: " + "; ".join(wrong))
    if problems:
        raise SurgeryError(f"{path} does not fit the target net ({'; '.join(problems)}). "
                           "Expected the VGG_ILSVRC_16_layers model (or one of the same "
                           "reduced size as the target).")


def check_prototxt(path: Path, what: str) -> None:
    """Caffe aborts on an unparsable prototxt: parse it here first."""
    if not path.is_file():
        raise SurgeryError(f"{path}: no such file ({what})")
    try:
        text_format.Merge(path.read_text(), caffe_pb2.NetParameter())
    except (text_format.ParseError, UnicodeDecodeError) as err:
        raise SurgeryError(f"{path} is not a valid prototxt ({what}): {err}") from err


def load_vgg(prototxt: Path, model: Path, have: dict[str, list[tuple[int, ...]]]) -> caffe.Net:
    """Loads VGG16 through Caffe after checking the prototxt agrees with the model."""
    check_prototxt(prototxt, "the VGG16 deploy prototxt")
    net = caffe.Net(str(prototxt), caffe.TEST)
    mismatched = [name for name, params in net.params.items()
                  if name in have and [_squeeze_legacy(tuple(p.data.shape)) for p in params]
                  != [_squeeze_legacy(s) for s in have[name]]]
    if mismatched:
        raise SurgeryError(f"{prototxt} and {model} disagree on the shapes of "
                           f"{', '.join(mismatched)}; use the matching deploy prototxt")
    net.copy_from(str(model))  # Caffe's loader, upgrading V1 models; shapes already checked
    return net


def transplant_encoder(vgg: caffe.Net, target: caffe.Net, fc: bool = True) -> None:
    """conv1_1 ... conv5_3 as they are; fc6/fc7 reshaped into convolutions
    (unless ``fc`` is false)."""
    for name in VGG_CONVS + (list(FC_LAYERS) if fc else []):
        for src, dst in zip(vgg.params[name], target.params[name], strict=True):
            dst.data[...] = src.data.reshape(dst.data.shape)


def subsample_fc(vgg: caffe.Net, target: caffe.Net) -> None:
    """DeepLab-LargeFOV's fc6 (3x3, 1/4 of the filters) and fc7 (1/4 of
    the filters and inputs) taken from VGG16's fully connected layers."""
    step, tap = DEEPLAB_FILTER_STEP, DEEPLAB_TAP_STEP
    weight6, bias6 = (p.data for p in vgg.params["fc6"])
    in6 = target.params["fc6"][0].data.shape[1]
    fc6 = weight6.reshape(weight6.shape[0], in6, VGG_FC6_SIDE, VGG_FC6_SIDE)[::step, :, ::tap, ::tap]
    target.params["fc6"][0].data[...] = fc6
    target.params["fc6"][1].data[...] = bias6[::step]
    weight7, bias7 = (p.data for p in vgg.params["fc7"])
    target.params["fc7"][0].data[...] = weight7[::step, ::step].reshape(target.params["fc7"][0].data.shape)
    target.params["fc7"][1].data[...] = bias7[::step]


def identity_batchnorm(target: caffe.Net) -> None:
    """BatchNorm global statistics mean 0, variance 1 (with weight 1), so that
    the untrained net in TEST mode passes values through unchanged."""
    for name, layer in zip(target._layer_names, target.layers, strict=True):
        if layer.type == "BatchNorm":
            mean, var, factor = target.params[name]
            mean.data[...] = 0
            var.data[...] = 1
            factor.data[...] = 1
        elif layer.type == "Scale" and name in target.params:
            target.params[name][0].data[...] = 1
            if len(target.params[name]) > 1:
                target.params[name][1].data[...] = 0


def bilinear_kernel(size: int) -> np.ndarray:
    """The 2-D bilinear interpolation kernel of a size x size upsampling."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)


def bilinear_upsampling(target: caffe.Net, names: tuple[str, ...]) -> None:
    """Each class's bilinear kernel on the diagonal of these Deconvolutions."""
    for name in names:
        weight = target.params[name][0].data
        out_ch, in_ch, kh, kw = weight.shape
        if out_ch != in_ch or kh != kw:
            raise SurgeryError(f"{name}: expected a square per-class kernel, got {weight.shape}")
        weight[...] = 0
        weight[range(out_ch), range(in_ch)] = bilinear_kernel(kh)


def fcn_heads(target: caffe.Net) -> None:
    """Per-class bilinear upsampling and zero-initialised score layers."""
    bilinear_upsampling(target, FCN_UPSAMPLE)
    for name in FCN_SCORES:
        for p in target.params[name]:
            p.data[...] = 0


def build_init_model(net: str, target_prototxt: Path, vgg_model: Path, vgg_prototxt: Path,
                     out: Path, seed: int = 0) -> Path:
    """Writes ``out``: the target net's starting weights. ``net`` is one
    of NETS. New layers keep their prototxt fillers, seeded by ``seed``."""
    if net not in NETS:
        raise SurgeryError(f"unknown net '{net}' ({', '.join(NETS)})")
    check_prototxt(target_prototxt, "the target net's prototxt")
    have = read_blob_shapes(vgg_model)
    caffe.set_random_seed(seed)  # the decoder's (DeepLab: fc8's) Gaussian fillers
    target = caffe.Net(str(target_prototxt), caffe.TEST)
    missing = [name for name in VGG_CONVS + list(FC_LAYERS) if name not in target.params]
    if missing:
        raise SurgeryError(f"{target_prototxt} lacks the VGG16 layers {', '.join(missing)}")
    check_vgg_model(vgg_model, have, target, net)
    vgg = load_vgg(vgg_prototxt, vgg_model, have)
    LOG.info("transplanting VGG16 %s into %s", vgg_model, target_prototxt)
    transplant_encoder(vgg, target, fc=net != "deeplab-largefov")
    if net == "deeplab-largefov":
        subsample_fc(vgg, target)
    del vgg
    if net == "deconvnet":
        identity_batchnorm(target)
    elif net == "fcn8s":
        fcn_heads(target)
    else:
        bilinear_upsampling(target, (DEEPLAB_UPSAMPLE,))
    save_net(target, out)
    LOG.info("wrote %s (%.1f MiB)", out, out.stat().st_size / 2**20)
    return out
