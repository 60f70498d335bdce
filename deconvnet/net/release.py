"""The authors' released weights in our nets: the DeconvNet inference model
(``DeconvNet_trainval_inference.caffemodel``), the stage-2 training snapshot
(``stage_2_train_result.caffemodel``) and the FCN authors' 2014 FCN-8s
(``fcn-8s-pascal.caffemodel``), all in the V1 format of their Caffe forks
(read by deconvnet.net.v1_wire).

The release's names map onto ours (docs/USAGE.md has the table):
``bnN_K``/``bnfc6``/``debnN_K``/``fc6-deconv-bn`` are the BN after
``convN_K``/``fc6``/``deconvN_K``/``fc6-deconv``, ``fc6-deconv`` is our
``fc6_deconv`` and ``seg-score-voc`` our ``seg_score``.

The fork's BN computes ``y = scale * (x - m) / sqrt(v + 1e-9) + shift``
with the batch's own mean and biased variance while learning; the release's
script (``BN_make_INFERENCE_script.py``) averaged them over ~500 batches and
folded them into scale and shift, so its inference BN is ``scale * x +
shift``. Here that becomes:

- unfolded: a BatchNorm that is exactly the identity (mean 0, variance
  such that variance + eps is 1 in float32, factor 1) and a Scale with the
  release's scale and shift;
- folded: scale and shift folded into the (de)convolution before them by
  deconvnet.net.fold_bn (the code of tools/fold_bn.py), with its rewrites;
- the training snapshot: the Scale holds scale and shift, and the BatchNorm
  no statistics (factor 0), so that the fold refuses it until
  tools/bn_stats.py has estimated them.

Which file is which: the release's inference model was saved from a net
whose BN layers also output the batch mean and variance (three tops), its
training snapshot from one whose BN layers have one top; neither stores a
``bn_mode``. A BN with ``bn_mode: INFERENCE`` counts as inference too.

Nothing is written until every layer and shape has been checked; the
output appears whole (a temporary file renamed into place).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format

from deconvnet.common.atomic import atomic_path
from deconvnet.net.fold_bn import fold_in_memory
from deconvnet.net.v1_wire import (
    BN,
    BN_INFERENCE,
    CONVOLUTION,
    DECONVOLUTION,
    V1FormatError,
    V1Layer,
    V1Net,
    read_v1_net,
)

LOG = logging.getLogger(__name__)

# Our layer -> the release's, where the names differ.
RENAMED = {"fc6_deconv": "fc6-deconv", "seg_score": "seg-score-voc"}
V1_KINDS = {"Convolution": CONVOLUTION, "Deconvolution": DECONVOLUTION}
# The snapshot holds no statistics: its BatchNorms get factor 0, which tools/fold_bn.py refuses.
NO_STATISTICS = 0.0
KINDS = ("deconvnet", "deconvnet-train", "fcn8s-2014")


class ReleaseError(Exception):
    """The file cannot be converted; the message names the file and the fix."""


def release_bn_name(conv: str) -> str:
    """The release's BN layer after our (de)convolution ``conv``."""
    if conv in ("fc6", "fc7"):
        return f"bn{conv}"
    if conv == "fc6_deconv":
        return "fc6-deconv-bn"
    match = re.fullmatch(r"(de)?conv(\d)_(\d)", conv)
    if match is None:
        raise ReleaseError(f"no release name for the BatchNorm after {conv!r}")
    return f"{'de' if match.group(1) else ''}bn{match.group(2)}_{match.group(3)}"


def identity_variance(eps: float) -> np.float32:
    """The float32 variance v with float32(v + eps) == 1 exactly, so that
    BatchNorm divides by sqrt(1) and subtracts 0: an exact identity."""
    eps32, one = np.float32(eps), np.float32(1)
    v = one - eps32
    while np.float32(v + eps32) != one:
        v = np.nextafter(v, one if np.float32(v + eps32) < one else np.float32(0), dtype=np.float32)
    return v


@dataclass(frozen=True)
class Target:
    """Our net's learned layers: name -> (type, blob shapes), in order, and
    each BatchNorm's (de)convolution and Scale."""
    prototxt: Path
    net_param: Any                      # caffe_pb2.NetParameter
    layers: dict[str, tuple[str, list[tuple[int, ...]]]]
    blob_shapes: dict[str, tuple[int, ...]]

    @classmethod
    def load(cls, prototxt: Path) -> Target:
        import caffe
        from caffe.proto import caffe_pb2

        prototxt = Path(prototxt)
        if not prototxt.is_file():
            raise ReleaseError(f"{prototxt}: not found (--model)")
        net_param = caffe_pb2.NetParameter()
        try:
            text_format.Merge(prototxt.read_text(), net_param)
        except (text_format.ParseError, UnicodeDecodeError) as err:
            raise ReleaseError(f"{prototxt}: not a valid prototxt ({err})") from err
        net = caffe.Net(str(prototxt), caffe.TEST)
        types = dict(zip(net._layer_names, (layer.type for layer in net.layers), strict=True))
        layers = {name: (types[name], [tuple(b.data.shape) for b in blobs]) for name, blobs in net.params.items()}
        shapes = {name: tuple(blob.data.shape) for name, blob in net.blobs.items()}
        return cls(prototxt, net_param, layers, shapes)

    def normalisation(self) -> dict[str, tuple[str, str | None]]:
        """(De)convolution -> (its BatchNorm, its Scale), from the layer order."""
        out: dict[str, tuple[str, str | None]] = {}
        conv = ""
        for name in self.layers:
            kind = self.layers[name][0]
            if kind in V1_KINDS:
                conv = name
            elif kind == "BatchNorm":
                out[conv] = (name, None)
            elif kind == "Scale" and conv in out:
                out[conv] = (out[conv][0], name)
        return out


def _check_names(path: Path, release: V1Net, expected: dict[str, str], what: str) -> None:
    """Refuses a file whose learned layers are not exactly ``expected``
    (release name -> what it becomes)."""
    learned = release.learned()
    missing = [name for name in expected if name not in learned]
    extra = [name for name in learned if name not in expected]
    problems = []
    if missing:
        more = ", ..." if len(missing) > 8 else ""
        problems.append(f"missing {len(missing)} layers ({', '.join(missing[:8])}{more})")
    if extra:
        more = ", ..." if len(extra) > 8 else ""
        problems.append(f"{len(extra)} layers our net lacks ({', '.join(extra[:8])}{more})")
    if problems:
        raise ReleaseError(f"{path} does not hold {what}: {'; '.join(problems)}. Nothing was written. Check that "
                           "it is the file this command converts, whole, and that --model is the matching net")


def _count_check(layer: V1Layer, index: int, want: tuple[int, ...], wrong: list[str],
                 exact: bool) -> np.ndarray | None:
    if index >= len(layer.blobs):
        wrong.append(f"{layer.name}: {len(layer.blobs)} blobs, needs {index + 1}")
        return None
    blob = layer.blobs[index]
    legacy = blob.shape
    squeezed = tuple(d for d in legacy if d != 1) or (1,)
    want_squeezed = tuple(d for d in want if d != 1) or (1,)
    if (exact and legacy != tuple(want)) or (not exact and squeezed != want_squeezed):
        wrong.append(f"{layer.name} blob {index}: file {legacy}, our net {tuple(want)}")
        return None
    return blob.data.reshape(want)


def _layer_blobs(source: V1Layer, kind: str, shapes: list[tuple[int, ...]],
                 wrong: list[str]) -> list[np.ndarray] | None:
    """The blobs of release layer ``source`` for our layer of type ``kind``
    and blob ``shapes`` (weights exactly, the rest by their non-1 axes);
    None, with the reason added to ``wrong``, when they do not fit."""
    if source.kind != V1_KINDS.get(kind):
        wrong.append(f"{source.name} is a {source.type_name} in the file, a {kind} in our net")
        return None
    if len(source.blobs) != len(shapes):
        wrong.append(f"{source.name}: {len(source.blobs)} blobs in the file, {len(shapes)} in our net")
        return None
    blobs = [_count_check(source, i, shape, wrong, exact=(i == 0)) for i, shape in enumerate(shapes)]
    return [blob for blob in blobs if blob is not None]  # a None is in ``wrong`` already


def deconvnet_params(release: V1Net, target: Target, training: bool) -> dict[str, list[np.ndarray]]:
    """Our deploy (or stage-2) net's blobs from the release's layers, every
    name, type and shape checked."""
    path = release.path
    norm = target.normalisation()
    expected: dict[str, str] = {}
    for name, (kind, _) in target.layers.items():
        if kind in V1_KINDS:
            expected[RENAMED.get(name, name)] = name
            if name in norm:
                expected[release_bn_name(name)] = norm[name][0]
    what = "the DeconvNet stage-2 training snapshot" if training else "the DeconvNet inference model"
    _check_names(path, release, expected, f"{what} for {target.prototxt}")
    learned = release.learned()
    _check_mode(release, training)
    params: dict[str, list[np.ndarray]] = {}
    wrong: list[str] = []
    eps = {layer.name: layer.batch_norm_param.eps for layer in target.net_param.layer if layer.type == "BatchNorm"}
    for name, (kind, shapes) in target.layers.items():
        if kind not in V1_KINDS:
            continue
        blobs = _layer_blobs(learned[RENAMED.get(name, name)], kind, shapes, wrong)
        if blobs is None:
            continue
        params[name] = blobs
        if name not in norm:
            continue
        batchnorm, scale = norm[name]
        bn = learned[release_bn_name(name)]
        if bn.kind != BN:
            wrong.append(f"{bn.name} is a {bn.type_name} in the file, not a BN")
            continue
        channels = shapes[0][1] if kind == "Deconvolution" else shapes[0][0]
        if len(bn.blobs) != 2:
            wrong.append(f"{bn.name}: {len(bn.blobs)} blobs, a BN has 2 (scale, shift)")
            continue
        gamma, beta = (_count_check(bn, i, (1, channels, 1, 1), wrong, exact=False) for i in (0, 1))
        if gamma is None or beta is None:
            continue
        mean_shape, factor_shape = target.layers[batchnorm][1][0], target.layers[batchnorm][1][2]
        variance = np.full(mean_shape, NO_STATISTICS if training else identity_variance(eps[batchnorm]), np.float32)
        factor = np.full(factor_shape, NO_STATISTICS if training else 1, np.float32)
        params[batchnorm] = [np.zeros(mean_shape, np.float32), variance, factor]
        if scale is None:
            wrong.append(f"our BatchNorm {batchnorm!r} has no Scale after it to hold {bn.name}'s scale and shift")
            continue
        params[scale] = [gamma.reshape(target.layers[scale][1][0]), beta.reshape(target.layers[scale][1][1])]
    if wrong:
        raise ReleaseError(f"{path} does not fit {target.prototxt}: {'; '.join(wrong[:6])}"
                           f"{' ...' if len(wrong) > 6 else ''}. Nothing was written")
    return params


def _check_mode(release: V1Net, training: bool) -> None:
    """The inference model's BN layers are folded (three tops, or bn_mode
    INFERENCE); the snapshot's learn (one top, no mode)."""
    bns = [layer for layer in release.layers if layer.kind == BN]
    inference = [layer.name for layer in bns if layer.bn_mode == BN_INFERENCE or len(layer.tops) == 3]
    if training and inference:
        raise ReleaseError(
            f"{release.path} is an inference model ({', '.join(inference[:3])}, ... hold statistics folded into "
            "scale and shift), not the LEARN-mode training snapshot: convert it with `deconvnet`, or give "
            "stage_2_train_result.caffemodel to `deconvnet-train`. Nothing was written")
    if not training and len(inference) != len(bns):
        learning = [layer.name for layer in bns if layer.name not in inference]
        raise ReleaseError(
            f"{release.path} is a LEARN-mode training snapshot ({', '.join(learning[:3])}, ... normalise with each "
            "batch's statistics, which no inference model stores), not the inference model "
            "DeconvNet_trainval_inference.caffemodel. Convert it with `deconvnet-train` for fine-tuning and "
            "tools/bn_stats.py. Nothing was written")


def fcn8s_2014_params(release: V1Net, target: Target) -> dict[str, list[np.ndarray]]:
    """The 2014 FCN-8s's learned layers, by their own names, checked."""
    expected = {name: name for name in target.layers}
    _check_names(release.path, release, expected, f"the 2014 FCN-8s for {target.prototxt}")
    learned = release.learned()
    wrong: list[str] = []
    params: dict[str, list[np.ndarray]] = {}
    for name, (kind, shapes) in target.layers.items():
        blobs = _layer_blobs(learned[name], kind, shapes, wrong)
        if blobs is not None:
            params[name] = blobs
    if wrong:
        raise ReleaseError(f"{release.path} does not fit {target.prototxt}: {'; '.join(wrong[:6])}. "
                           "Nothing was written")
    skipped = [layer for layer in release.layers if not layer.blobs]
    kinds = sorted({layer.type_name for layer in skipped})
    LOG.info("%s: %d layers without weights left to the prototxt (%s)", release.path, len(skipped), ", ".join(kinds))
    return params


def write_params(prototxt: Path, params: dict[str, list[np.ndarray]], out: Path) -> Path:
    """``params`` into a caffe.Net of ``prototxt``, saved to ``out``
    atomically; ReleaseError when a layer or shape does not match."""
    import caffe

    net = caffe.Net(str(prototxt), caffe.TEST)
    missing = [name for name in net.params if name not in params]
    extra = [name for name in params if name not in net.params]
    wrong = [f"{name} ({[tuple(b.data.shape) for b in blobs]} vs {[v.shape for v in params[name]]})"
             for name, blobs in net.params.items() if name in params and (
                 len(blobs) != len(params[name])
                 or any(b.data.size != v.size for b, v in zip(blobs, params[name], strict=False)))]
    if missing or extra or wrong:
        raise ReleaseError(f"the converted weights do not fit {prototxt}: missing {missing}, extra {extra}, "
                           f"other shapes {wrong}; use the net the converter names (--model). Nothing was written")
    for name, blobs in net.params.items():
        for blob, value in zip(blobs, params[name], strict=True):
            blob.data[...] = value.reshape(blob.data.shape)
    with atomic_path(out) as tmp:
        net.save(str(tmp))
    return out


def convert(kind: str, source: Path, out: Path, model: Path, folded_model: Path | None = None) -> Path:
    """Converts release file ``source`` (``kind``: one of KINDS) into ``out``
    for our prototxt ``model``; with ``folded_model``, folds first and
    writes weights for that folded prototxt instead."""
    if kind not in KINDS:
        raise ReleaseError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    try:
        release = read_v1_net(source)
    except V1FormatError as err:
        raise ReleaseError(f"{err}. Nothing was written") from err
    target = Target.load(model)
    if kind == "fcn8s-2014":
        params = fcn8s_2014_params(release, target)
    else:
        params = deconvnet_params(release, target, training=kind == "deconvnet-train")
    if folded_model is None:
        write_params(model, params, out)
    else:
        _, params, folds, plan = fold_in_memory(target.net_param, params, target.blob_shapes, model, source)
        LOG.info("folded %d BatchNorm/Scale pairs; rewritten: %s", len(folds), ", ".join(plan) or "none")
        write_params(folded_model, params, out)
    LOG.info("wrote %s (%.0f MiB) for %s", out, out.stat().st_size / 2 ** 20, folded_model or model)
    return out
