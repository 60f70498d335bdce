"""Folds each BatchNorm (global statistics) and the Scale after it into the
Convolution or Deconvolution before them, for inference.

At inference BatchNorm and Scale are one affine map per output channel c:
``y = (x - m_c) * g_c / sqrt(v_c + eps) + beta_c``. With ``s_c = g_c /
sqrt(v_c + eps)`` the layer before them becomes ``W' = W * s_c`` (along its
output-channel axis) and ``b' = (b - m_c) * s_c + beta_c``, and both layers go.
Caffe stores BatchNorm's mean and variance multiplied by a moving-average
factor, its third blob; the stored values are divided by it first.

The output-channel axis differs: a Convolution's weights are ``(out, in /
group, kh, kw)``, a Deconvolution's ``(in, out / group, kh, kw)``.

Without the two layers the net keeps neither BatchNorm's two input-sized
buffers nor in-place Scale's copy of its input, and skips their passes over
every activation (docs/BENCHMARKS.md has the measured gain).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from deconvnet.common.atomic import atomic_path
from deconvnet.net.rewrite import plan_rewrites, rewrite_net_param, rewrite_params
from deconvnet.net.weights import load_net, pair_header

LOG = logging.getLogger(__name__)

FOLDABLE = ("Convolution", "Deconvolution")


class FoldError(Exception):
    """The net or its weights cannot be folded; the message names the layer."""


@dataclass(frozen=True)
class Fold:
    conv: str            # the Convolution/Deconvolution that absorbs them
    batchnorm: str
    scale: str | None    # None: a BatchNorm with no Scale after it
    eps: float
    top: str             # the blob the folded layer writes (the last folded layer's top)


def read_net_param(prototxt: Path):
    """The NetParameter of a prototxt file; FoldError names the file when it cannot be read."""
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    try:
        text_format.Merge(Path(prototxt).read_text(), net)
    except (OSError, text_format.ParseError) as err:
        raise FoldError(f"{prototxt}: cannot read the net ({err})") from err
    if net.layers:
        raise FoldError(f"{prototxt}: a V1 (`layers {{ }}`) net; upgrade it with Caffe's upgrade_net_proto_text")
    return net


def _global_stats(layer, prototxt: Path) -> None:
    param = layer.batch_norm_param
    if param.HasField("use_global_stats") and not param.use_global_stats:
        raise FoldError(f"{prototxt}: BatchNorm {layer.name!r} computes batch statistics (use_global_stats: "
                        "false); fold a deploy net, whose BatchNorms use their stored statistics")


def plan_folds(net, prototxt: Path = Path("<net>")) -> list[Fold]:
    """The BatchNorm (+ Scale) layers of NetParameter ``net`` and the layer
    each folds into; FoldError when one cannot be folded exactly."""
    layers = list(net.layer)
    folds = []
    for i, layer in enumerate(layers):
        if layer.type != "BatchNorm":
            continue
        _global_stats(layer, prototxt)
        blob = layer.bottom[0]
        producer = next((j for j in range(i - 1, -1, -1) if blob in layers[j].top), None)
        if producer is None or layers[producer].type not in FOLDABLE:
            what = "nothing" if producer is None else f"{layers[producer].type} {layers[producer].name!r}"
            raise FoldError(f"{prototxt}: BatchNorm {layer.name!r} reads {blob!r}, written by {what}; only a "
                            "BatchNorm right after a Convolution or Deconvolution can be folded")
        readers = [layers[j].name for j in range(producer + 1, i) if blob in layers[j].bottom]
        if readers:
            raise FoldError(f"{prototxt}: {', '.join(readers)} read {blob!r} between {layers[producer].name!r} "
                            f"and BatchNorm {layer.name!r}; folding would change what they see")
        top, scale = layer.top[0], None
        following = next((j for j in range(i + 1, len(layers)) if top in layers[j].bottom), None)
        if following is not None and layers[following].type == "Scale":
            candidate = layers[following]
            param = candidate.scale_param
            if len(candidate.bottom) != 1 or param.axis != 1 or param.num_axes != 1:
                raise FoldError(f"{prototxt}: Scale {candidate.name!r} after BatchNorm {layer.name!r} is not "
                                "one factor per channel (a second bottom, or axis/num_axes other than 1)")
            scale, top = candidate.name, candidate.top[0]
        folds.append(Fold(layers[producer].name, layer.name, scale, layer.batch_norm_param.eps, top))
    return folds


def fold_net_param(net, prototxt: Path = Path("<net>")):
    """(a copy of NetParameter ``net`` without its BatchNorm and Scale
    layers, the folds): each Convolution/Deconvolution they follow gets a
    bias (if it had none) and writes the blob the last of them wrote."""
    from caffe.proto import caffe_pb2

    folds = plan_folds(net, prototxt)
    by_conv = {f.conv: f for f in folds}
    gone = {f.batchnorm for f in folds} | {f.scale for f in folds if f.scale}
    # Out of place, the blobs between a (de)convolution and the fold's last top vanish.
    layers = {layer.name: layer for layer in net.layer}
    for f in folds:
        vanished = {layers[f.conv].top[0], layers[f.batchnorm].top[0]} - {f.top}
        readers = [layer.name for layer in net.layer if layer.name not in gone and set(layer.bottom) & vanished]
        if readers:
            raise FoldError(f"{prototxt}: {', '.join(readers)} read {', '.join(sorted(vanished))}, the output of "
                            f"{f.conv!r} before its BatchNorm/Scale; folding would remove it")
    folded = caffe_pb2.NetParameter()
    folded.CopyFrom(net)
    # Folding a folded net again changes nothing: its name says "folded" once.
    folded.name = net.name if net.name.endswith("folded") else f"{net.name}_folded" if net.name else "folded"
    del folded.layer[:]
    for layer in net.layer:
        if layer.name in gone:
            continue
        new = folded.layer.add()
        new.CopyFrom(layer)
        fold = by_conv.get(layer.name)
        if fold is None:
            continue
        if new.top[0] != fold.top:
            new.top[0] = fold.top
        if not new.convolution_param.bias_term:
            new.convolution_param.bias_term = True
            if len(new.param) == 1:  # the bias learns like the weights unless stated
                new.param.add().CopyFrom(new.param[0])
    if not folds:
        LOG.warning("%s has no BatchNorm layers: nothing to fold", prototxt)
    return folded, folds


def _statistics(name: str, blobs: list[np.ndarray], weights: Path) -> tuple[np.ndarray, np.ndarray]:
    if len(blobs) != 3:
        raise FoldError(f"{weights}: BatchNorm {name!r} has {len(blobs)} blobs, not 3 (mean, variance, "
                        "moving-average factor)")
    mean, var, factor = (b.astype(np.float64).ravel() for b in blobs)
    if factor.size != 1 or not np.isfinite(factor[0]) or factor[0] <= 0:
        raise FoldError(f"{weights}: BatchNorm {name!r} has moving-average factor {factor.tolist()}: no usable "
                        "statistics (re-estimate them with tools/bn_stats.py)")
    mean, var = mean / factor[0], var / factor[0]
    bad = np.flatnonzero(~np.isfinite(var) | (var <= 0) | ~np.isfinite(mean))
    if bad.size:
        raise FoldError(f"{weights}: BatchNorm {name!r} has a zero, negative or non-finite variance (or mean) in "
                        f"{bad.size} of {var.size} channels (first: channel {bad[0]}, variance {var[bad[0]]:g}); "
                        "a broken model, or statistics never estimated (tools/bn_stats.py)")
    return mean, var


def fold_params(params: dict[str, list[np.ndarray]], kinds: dict[str, str], folds: list[Fold],
                groups: dict[str, int], weights: Path = Path("<weights>")) -> dict[str, list[np.ndarray]]:
    """New [weights, bias] of each folded layer (float32). ``params`` maps
    a layer to its blobs, ``kinds`` a folded layer to its type, ``groups``
    to its convolution group."""
    out = {}
    for fold in folds:
        mean, var = _statistics(fold.batchnorm, params[fold.batchnorm], weights)
        gamma, beta = np.ones_like(mean), np.zeros_like(mean)
        if fold.scale is not None:
            scale_blobs = params.get(fold.scale, [])
            gamma = scale_blobs[0].astype(np.float64).ravel()
            if len(scale_blobs) > 1:
                beta = scale_blobs[1].astype(np.float64).ravel()
        factor = gamma / np.sqrt(var + fold.eps)
        blobs = params[fold.conv]
        weight = blobs[0].astype(np.float64)
        bias = blobs[1].astype(np.float64).ravel() if len(blobs) > 1 else np.zeros_like(mean)
        deconv, group = kinds[fold.conv] == "Deconvolution", groups[fold.conv]
        channels = weight.shape[1] * group if deconv else weight.shape[0]
        if channels != factor.size:
            raise FoldError(f"{weights}: {fold.conv!r} has {channels} output channels, BatchNorm "
                            f"{fold.batchnorm!r} {factor.size}")
        if deconv:
            # (in, out / group, kh, kw): input channel i of group k feeds outputs k * out/group + j.
            per_input = factor.reshape(group, -1)[np.arange(weight.shape[0]) // (weight.shape[0] // group)]
            weight = weight * per_input.reshape(*per_input.shape, *([1] * (weight.ndim - 2)))
        else:
            weight = weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))
        # Computed in float64, kept in float32 as the net stores them: the same values, half the memory.
        out[fold.conv] = [weight.astype(np.float32), ((bias - mean) * factor + beta).astype(np.float32)]
    return out


def fold_in_memory(net_param, params: dict[str, list[np.ndarray]], shapes: dict[str, tuple[int, ...]],
                   model: Path = Path("<net>"), weights: Path = Path("<weights>"), rewrite: bool = True):
    """(the folded NetParameter, its layers' blobs, the folds, the rewrite
    plan) of NetParameter ``net_param`` with blobs ``params`` (layer ->
    arrays); ``shapes``: each blob's shape in a caffe.Net of ``net_param``.
    Shared by tools/fold_bn.py and the converter of the authors' release
    (deconvnet.net.release), which never writes the unfolded weights."""
    folded_param, folds = fold_net_param(net_param, model)
    kinds = {layer.name: layer.type for layer in net_param.layer}
    groups = {layer.name: layer.convolution_param.group for layer in net_param.layer}
    params = dict(params)
    params.update(fold_params(params, kinds, folds, groups, weights))
    for gone in {f.batchnorm for f in folds} | {f.scale for f in folds if f.scale}:
        params.pop(gone, None)
    plan = plan_rewrites(folded_param, shapes) if rewrite else {}
    return rewrite_net_param(folded_param, plan), rewrite_params(params, plan), folds, plan


def fold(model: Path, weights: Path, out_model: Path, out_weights: Path, rewrite: bool = True) -> list[Fold]:
    """Writes the folded deploy prototxt and caffemodel of ``model`` with
    ``weights``; both or neither (every check runs before anything is
    written). ``rewrite``: also the exact rewrites of deconvnet.net.rewrite.
    Raises FoldError or WeightsMismatch."""
    import caffe

    net_param = read_net_param(model)
    net = load_net(model, weights, caffe.TEST)  # strict: every BatchNorm needs its blobs
    params = {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}
    shapes = {name: tuple(blob.data.shape) for name, blob in net.blobs.items()}
    del net
    folded_param, params, folds, plan = fold_in_memory(net_param, params, shapes, model, weights, rewrite)
    text = f"# BatchNorm and Scale of {model} folded into the (de)convolutions by tools/fold_bn.py.\n{folded_param}"
    # Both files are written under temporary names, then the prototxt is
    # renamed before the weights (the inner block ends first). The prototxt
    # names its weights' fingerprint, so a kill between the two renames
    # leaves a new prototxt beside old weights, which load_net refuses.
    with atomic_path(out_weights) as weights_tmp, atomic_path(out_model) as model_tmp:
        model_tmp.write_text(text)
        folded_net = caffe.Net(str(model_tmp), caffe.TEST)
        for name, blobs in folded_net.params.items():
            for blob, value in zip(blobs, params[name], strict=True):
                blob.data[...] = value.reshape(blob.data.shape)
        folded_net.save(str(weights_tmp))
        del folded_net
        model_tmp.write_text(pair_header(weights_tmp) + text)
    LOG.info("folded %d BatchNorm layers (%d with Scale) into %s and %s; rewritten: %s", len(folds),
             sum(f.scale is not None for f in folds), out_model, out_weights,
             ", ".join(f"{name} ({kind})" for name, kind in plan.items()) or "none")
    return folds
