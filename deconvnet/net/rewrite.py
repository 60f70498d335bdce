"""Exact rewrites of a deploy net's layers into forms Caffe runs faster on
the CPU, applied by tools/fold_bn.py after folding (measured in
docs/BENCHMARKS.md):

- ``deconv-as-conv``: a stride-1 Deconvolution is a Convolution with the
  kernel flipped and its input and output axes swapped, padded K - 1 - p.
  Caffe's Deconvolution scatters through col2im, which costs more than the
  Convolution's im2col; done where the input has at most as many channels
  as the output (otherwise im2col's buffer grows and the Deconvolution
  stays faster).
- ``conv-as-fc``: a Convolution whose kernel covers its whole input (fc6 on
  pool5, fc7 on 1x1) is an InnerProduct; Caffe runs a convolution one image
  at a time, reading fc6's 411 MB of weights once per proposal, and an
  InnerProduct once per batch.
- ``deconv-as-fc``: a Deconvolution of a 1x1 input (fc6_deconv) is a
  transposed InnerProduct (the same weight layout), its bias repeated over
  the kernel's positions, then a Reshape to (N, out, K, K) under its name.

The layers keep their names (deconv1_1 becomes a Convolution named
deconv1_1) and the blobs theirs, so figures and tools find them.
"""
from __future__ import annotations

import numpy as np

DECONV_AS_CONV, CONV_AS_FC, DECONV_AS_FC = "deconv-as-conv", "conv-as-fc", "deconv-as-fc"
# Layers that take an InnerProduct's (N, C) output as well as (N, C, 1, 1).
FLAT_READERS = ("ReLU", "Dropout", "InnerProduct")


def _pairs(values, default: int) -> tuple[int, int]:
    values = list(values)
    if not values:
        return default, default
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def geometry(param) -> dict[str, tuple[int, int]]:
    """Kernel, pad, stride and dilation of a ConvolutionParameter, each (h, w)."""
    kernel = (param.kernel_h, param.kernel_w) if param.kernel_h else _pairs(param.kernel_size, 1)
    pad = (param.pad_h, param.pad_w) if param.pad_h or param.pad_w else _pairs(param.pad, 0)
    stride = (param.stride_h, param.stride_w) if param.stride_h else _pairs(param.stride, 1)
    return dict(kernel=kernel, pad=pad, stride=stride, dilation=_pairs(param.dilation, 1))


def plan_rewrites(net, shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """Layer name -> rewrite, for NetParameter ``net`` (already folded);
    ``shapes``: each blob's shape (from a caffe.Net of the same layout)."""
    plan: dict[str, str] = {}
    layers = [layer for layer in net.layer if layer.type in ("Convolution", "Deconvolution")
              and layer.convolution_param.group == 1 and layer.convolution_param.axis == 1
              and geometry(layer.convolution_param)["dilation"] == (1, 1)]
    for layer in layers:
        if layer.type != "Deconvolution":
            continue
        geo, bottom = geometry(layer.convolution_param), shapes[layer.bottom[0]]
        if tuple(bottom[2:]) in ((1, 1), ()) and geo["pad"] == (0, 0):
            plan[layer.name] = DECONV_AS_FC
        elif (geo["stride"] == (1, 1) and bottom[1] <= layer.convolution_param.num_output
              and all(p <= k - 1 for p, k in zip(geo["pad"], geo["kernel"], strict=True))):
            plan[layer.name] = DECONV_AS_CONV
    # Back to front, so that fc6 sees whether fc7, which reads it, became an InnerProduct.
    for layer in reversed(layers):
        geo = geometry(layer.convolution_param)
        if layer.type != "Convolution" or tuple(shapes[layer.bottom[0]][2:]) != geo["kernel"] or geo["pad"] != (0, 0):
            continue
        readers = [other for other in net.layer if layer.top[0] in other.bottom]
        # Its output becomes (N, C): every reader must take that.
        if all(other.type in FLAT_READERS or plan.get(other.name) in (CONV_AS_FC, DECONV_AS_FC) for other in readers):
            plan[layer.name] = CONV_AS_FC
    return plan


def rewrite_net_param(net, plan: dict[str, str]):
    """A copy of NetParameter ``net`` with the planned layers rewritten."""
    from caffe.proto import caffe_pb2

    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    for layer in net.layer:
        new = out.layer.add()
        new.CopyFrom(layer)
        kind = plan.get(layer.name)
        if kind is None:
            continue
        conv = layer.convolution_param
        geo = geometry(conv)
        if kind == DECONV_AS_CONV:
            new.type = "Convolution"
            new.convolution_param.ClearField("pad")
            new.convolution_param.ClearField("pad_h")
            new.convolution_param.ClearField("pad_w")
            flipped = tuple(k - 1 - p for k, p in zip(geo["kernel"], geo["pad"], strict=True))
            if flipped[0] == flipped[1]:
                if flipped[0]:
                    new.convolution_param.pad.append(flipped[0])
            else:
                new.convolution_param.pad_h, new.convolution_param.pad_w = flipped
            continue
        new.type = "InnerProduct"
        new.ClearField("convolution_param")
        fc = new.inner_product_param
        if conv.HasField("bias_term"):
            fc.bias_term = conv.bias_term
        if conv.HasField("weight_filler"):
            fc.weight_filler.CopyFrom(conv.weight_filler)
        if conv.HasField("bias_filler"):
            fc.bias_filler.CopyFrom(conv.bias_filler)
        if kind == CONV_AS_FC:
            fc.num_output = conv.num_output
            continue
        kh, kw = geo["kernel"]
        fc.num_output = conv.num_output * kh * kw
        fc.transpose = True  # weights (in, out * kh * kw): the Deconvolution's (in, out, kh, kw)
        top = layer.top[0]
        new.top[0] = f"{top}_flat"
        reshape = out.layer.add()
        reshape.name, reshape.type = f"{layer.name}_reshape", "Reshape"
        reshape.bottom.append(f"{top}_flat")
        reshape.top.append(top)
        reshape.reshape_param.shape.dim.extend([0, conv.num_output, kh, kw])
    return out


def rewrite_params(params: dict[str, list[np.ndarray]], plan: dict[str, str]) -> dict[str, list[np.ndarray]]:
    """The rewritten layers' blobs (others unchanged). Shapes that only
    flatten are left to the caller's reshape into the new net's blobs."""
    out = dict(params)
    for name, kind in plan.items():
        blobs = list(params[name])
        if kind == DECONV_AS_CONV:
            blobs[0] = np.ascontiguousarray(blobs[0].transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        elif kind == DECONV_AS_FC and len(blobs) > 1:
            blobs[1] = np.repeat(blobs[1].ravel(), blobs[0].shape[2] * blobs[0].shape[3])
        out[name] = blobs
    return out
