"""Zeiler and Fergus's deconvnet (ECCV 2014, section 2.1) as a Caffe net
generated from any of our forward nets: the projection of one unit of a
chosen layer back to pixel space.

The generated net runs the forward net up to the chosen layer (max pooling
also writes its switches), keeps one unit (python_layers/unit_selection.py:
its strongest activation, or its whole map), then descends: ReLU where the
forward net has one, a Deconvolution with the forward convolution's own
weights (tied by a shared ``param`` name: the transposed filters; no bias),
and the native Unpooling layer with the pooling's switches, down to the
input. BatchNorm and Scale layers are folded into the convolutions first
(deconvnet.net.fold_bn), so the descent runs on the equivalent plain
convolutions.

Only convolution, ReLU and max pooling can be reversed this way (with
Dropout, the identity at test time): a layer above anything else (an
InnerProduct, a Deconvolution of DeconvNet's decoder) is refused.
"""
from __future__ import annotations

from dataclasses import dataclass

from deconvnet.net.fold_bn import fold_net_param
from deconvnet.net.rewrite import geometry

import caffe
from caffe import layers as L
from caffe.proto import caffe_pb2

# What the selection keeps: the unit's strongest activation, or its whole map.
KEEP = ("max", "map")
SELECTION_MODULE = "python_layers.unit_selection"
UNITS = "units"            # Input blob: the unit each example projects
SELECTED = "selected"      # the chosen blob with all but that unit zeroed
PROJECTION = "projection"  # the pixel-space result, the shape of ``data``
PASS_THROUGH = ("Dropout",)  # the identity in a deploy net


class ProjectionError(ValueError):
    """The layer cannot be projected; the message names it and why."""


@dataclass(frozen=True)
class Step:
    """One step of the descent: ``kind`` is "rectify", "filter" or
    "unpool", reversing forward layer ``layer``, whose input blob ``bottom``
    the step projects into; the geometry maps output to input positions."""

    kind: str
    layer: str
    bottom: str
    kernel: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    group: int = 1
    mask: str = ""


def tied_weights(layer: str) -> str:
    """The shared param name of a convolution's weights."""
    return f"{layer}_w"


def pooling_geometry(param) -> dict[str, tuple[int, int]]:
    kernel = (param.kernel_h, param.kernel_w) if param.kernel_h else (param.kernel_size,) * 2
    pad = (param.pad_h, param.pad_w) if param.pad_h or param.pad_w else (param.pad,) * 2
    stride = (param.stride_h, param.stride_w) if param.stride_h else (param.stride,) * 2
    return dict(kernel=kernel, pad=pad, stride=stride, dilation=(1, 1))


def chosen_blob(layers: list, layer: str) -> tuple[str, int]:
    """(the blob of ``layer``, the index of the last forward layer to run:
    ``layer`` and the in-place layers right after it, its ReLU)."""
    names = [item.name for item in layers]
    if layer not in names:
        convs = [item.name for item in layers if item.type in ("Convolution", "Pooling")]
        raise ProjectionError(f"no layer {layer!r} in the net; its convolutions and poolings: {', '.join(convs)}")
    start = names.index(layer)
    if not layers[start].top:
        raise ProjectionError(f"layer {layer!r} writes no blob")
    blob, end = layers[start].top[0], start
    while end + 1 < len(layers) and list(layers[end + 1].bottom) == [blob] == list(layers[end + 1].top):
        end += 1
    return blob, end


def _refuse(layer, why: str) -> ProjectionError:
    return ProjectionError(f"{layer.type} layer {layer.name!r} {why}: Zeiler and Fergus's deconvnet reverses "
                           "only convolution, ReLU and max pooling; choose a layer of the encoder below it "
                           "(e.g. conv5_3 or pool5)")


def _step(kind: str, layer, geo: dict[str, tuple[int, int]], group: int = 1, mask: str = "") -> Step:
    return Step(kind, layer.name, layer.bottom[0], geo["kernel"], geo["pad"], geo["stride"], geo["dilation"],
                group, mask)


def descent(forward, layer: str) -> list[Step]:
    """The steps from ``layer``'s blob down to the input of NetParameter
    ``forward`` (its BatchNorm and Scale folded), top first."""
    layers = list(fold_if_needed(forward).layer)
    current, end = chosen_blob(layers, layer)
    steps: list[Step] = []
    for item in reversed(layers[:end + 1]):
        if current not in item.top:
            continue
        if not item.bottom:
            if item.type != "Input":
                raise ProjectionError(f"the input of the net is written by {item.type} layer {item.name!r}; "
                                      "give a deploy prototxt, whose input is an Input layer")
            return steps
        if item.type == "ReLU":
            if item.relu_param.negative_slope:
                raise _refuse(item, "has a negative slope")
            steps.append(Step("rectify", item.name, item.bottom[0]))
        elif item.type == "Convolution":
            steps.append(_step("filter", item, geometry(item.convolution_param), group=item.convolution_param.group))
        elif item.type == "Pooling":
            param = item.pooling_param
            if param.pool != caffe_pb2.PoolingParameter.MAX or param.global_pooling or current != item.top[0]:
                raise _refuse(item, "is not a max pooling with switches")
            mask = item.top[1] if len(item.top) > 1 else f"{item.name}_switches"
            steps.append(_step("unpool", item, pooling_geometry(param), mask=mask))
        elif item.type not in PASS_THROUGH:
            raise _refuse(item, "lies between the chosen layer and the input")
        current = item.bottom[0]
    raise ProjectionError(f"blob {current!r} has no layer writing it below {layer!r}")


def blob_channels(forward) -> dict[str, int]:
    """Channels of every blob on the way up, from the Input's shape and the
    convolutions' outputs (the other layers the descent allows keep them)."""
    channels: dict[str, int] = {}
    for item in forward.layer:
        if item.type == "Input":
            shape = item.input_param.shape[0].dim if item.input_param.shape else []
            if len(shape) != 4:
                raise ProjectionError(f"Input layer {item.name!r} must give a 4-axis shape (N, C, H, W)")
            channels[item.top[0]] = shape[1]
        elif item.type == "Convolution":
            channels[item.top[0]] = item.convolution_param.num_output
        elif item.bottom and item.bottom[0] in channels:
            for top in item.top:
                channels.setdefault(top, channels[item.bottom[0]])
    return channels


def fold_if_needed(forward):
    """``forward`` with its BatchNorm and Scale layers folded (the same
    NetParameter when it has none)."""
    if any(item.type == "BatchNorm" for item in forward.layer):
        return fold_net_param(forward)[0]
    return forward


def projection_net(forward, layer: str, keep: str = "max") -> caffe_pb2.NetParameter:
    """The projection net of ``layer`` (a layer name of NetParameter
    ``forward``, a deploy net): inputs ``data`` and ``units`` (one unit per
    example), output ``projection`` (the shape of ``data``)."""
    if keep not in KEEP:
        raise ProjectionError(f"keep must be one of {', '.join(KEEP)}, not {keep!r}")
    forward = fold_if_needed(forward)
    layers = list(forward.layer)
    chosen, end = chosen_blob(layers, layer)
    steps = descent(forward, layer)
    if not steps or steps[-1].kind == "rectify":
        raise ProjectionError(f"{layer!r} is not above a convolution or a pooling of the input")
    channels = blob_channels(forward)
    batch = next(item.input_param.shape[0].dim[0] for item in layers if item.type == "Input")

    net = caffe_pb2.NetParameter()
    net.name = f"{forward.name or 'net'}_projection_{layer}"
    # The forward part, as it is; the convolutions' weights get a name to share, the poolings a switches top.
    for item in layers[:end + 1]:
        new = net.layer.add()
        new.CopyFrom(item)
        if item.type == "Convolution":
            if not new.param:
                new.param.add()
            new.param[0].name = tied_weights(item.name)
        if item.type == "Pooling" and len(item.top) == 1 and item.pooling_param.pool == caffe_pb2.PoolingParameter.MAX:
            new.top.append(f"{item.name}_switches")

    # The selection and the descent, written with NetSpec; the forward blobs they read
    # are stand-in Inputs, dropped below (the forward part above writes them).
    n = caffe.NetSpec()
    forward_blobs: set[str] = set()

    def forward_blob(name: str):
        if name not in forward_blobs:
            forward_blobs.add(name)
            n[name] = L.Input()
        return n[name]

    n[UNITS] = L.Input(shape=dict(dim=[batch]))
    n[SELECTED] = L.Python(forward_blob(chosen), n[UNITS], name="unit_selection",
                           python_param=dict(module=SELECTION_MODULE, layer="UnitSelectionLayer", param_str=keep))
    top = n[SELECTED]
    for i, step in enumerate(steps):
        key, name = (PROJECTION if i == len(steps) - 1 else f"{step.layer}_proj"), f"{step.layer}_proj"
        if step.kind == "rectify":
            n[name] = L.ReLU(top, in_place=True)
        elif step.kind == "filter":
            # Caffe's Deconvolution is the convolution's transpose, and its weights have the
            # convolution's shape: (forward outputs, forward inputs / group, kh, kw).
            n[key] = L.Deconvolution(top, name=name, param=[dict(name=tied_weights(step.layer))],
                                     convolution_param=dict(
                                         num_output=channels[step.bottom], bias_term=False, group=step.group,
                                         kernel_h=step.kernel[0], kernel_w=step.kernel[1],
                                         pad_h=step.pad[0], pad_w=step.pad[1],
                                         stride_h=step.stride[0], stride_w=step.stride[1],
                                         dilation=list(dict.fromkeys(step.dilation))))
            top = n[key]
        else:
            # The pooling's input as the size reference: odd sizes unpool exactly.
            n[key] = L.Unpooling(top, forward_blob(step.mask), forward_blob(step.bottom), name=name,
                                 unpooling_param=dict(kernel_h=step.kernel[0], kernel_w=step.kernel[1],
                                                      stride_h=step.stride[0], stride_w=step.stride[1]))
            top = n[key]
    for item in n.to_proto().layer:
        if not (item.type == "Input" and item.name in forward_blobs):
            net.layer.add().CopyFrom(item)
    return net


def receptive_field(steps: list[Step], y: int, x: int) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1), ends exclusive, of the input pixels that position
    (y, x) of the chosen blob sees; may reach outside the image (padding)."""
    (y0, y1), (x0, x1) = (y, y), (x, x)
    for step in steps:
        (kh, kw), (ph, pw), (sh, sw), (dh, dw) = step.kernel, step.pad, step.stride, step.dilation
        y0, y1 = y0 * sh - ph, y1 * sh - ph + dh * (kh - 1)
        x0, x1 = x0 * sw - pw, x1 * sw - pw + dw * (kw - 1)
    return y0, x0, y1 + 1, x1 + 1
