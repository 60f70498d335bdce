"""Reduced nets trained on the CPU for the demo (tools/demo.py): a random
VGG16 to start from (the real one cannot be downloaded here), and
DeconvNet's whole-image peers, DeepLab-LargeFOV and FCN-8s, made from a
VGG16 by the surgery and trained with the shared trainer on random crops of
the synthetic train_aug (deconvnet.net.prototxt.write_reduced_peer).

The peers' VGG16 may carry a trained encoder: the demo gives them its
trained DeconvNet's conv1_1 .. conv5_3 (BatchNorm folded in), its stand-in
for the ImageNet features the real peers start from; their fc6 and fc7
stay random."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from deconvnet.common.recipes import DEEPLAB_LARGEFOV
from deconvnet.net import nets
from deconvnet.net.architecture import Size
from deconvnet.net.prototxt import PEERS, write_reduced_peer
from deconvnet.net.surgery import VGG_CONVS, build_init_model
from deconvnet.train.trainer import StageConfig, Trainer

import caffe

LOG = logging.getLogger(__name__)
# VGG16's own input: its fc6 then spans 7x7, which DeepLab's surgery subsamples.
VGG_INPUT = 224


def random_vgg16(size: Size, folder: Path, seed: int) -> tuple[Path, Path]:
    """A VGG16 of the reduced size with random (He) weights, saved by pycaffe."""
    prototxt = folder / f"vgg16_{size.input_size}_w{size.width_divisor}.prototxt"
    prototxt.write_text(str(nets.vgg16_deploy(size)))
    net = caffe.Net(str(prototxt), caffe.TEST)
    rng = np.random.default_rng(seed)
    for params in net.params.values():
        weight = params[0].data
        fan_in = int(np.prod(weight.shape[1:]))
        weight[...] = rng.normal(0, np.sqrt(2.0 / fan_in), weight.shape)
        params[1].data[...] = 0
    model = prototxt.with_suffix(".caffemodel")
    net.save(str(model))
    return prototxt, model


@dataclass(frozen=True)
class PeerSchedule:
    """A reduced peer's training: crops of ``crop`` pixels, ``batch`` a
    pass (iter_size 1), ``iters`` updates at ``base_lr`` (x0.1 at 70%)."""

    crop: int
    batch: int
    iters: int
    base_lr: float
    width_divisor: int
    test_size: int
    seed: int = 0


def with_encoder(vgg_prototxt: Path, vgg_model: Path, encoder: tuple[Path, Path]) -> None:
    """Overwrites the VGG16's conv1_1 .. conv5_3 with those of ``encoder``
    (a prototxt and caffemodel with the same convolutions, biases included)."""
    vgg = caffe.Net(str(vgg_prototxt), str(vgg_model), caffe.TEST)
    source = caffe.Net(str(encoder[0]), str(encoder[1]), caffe.TEST)
    for name in VGG_CONVS:
        for dst, src in zip(vgg.params[name], source.params[name], strict=True):
            dst.data[...] = src.data
    vgg.save(str(vgg_model))


def train_peer(net: str, folder: Path, voc_root: Path, sbd_root: Path, schedule: PeerSchedule,
               encoder: tuple[Path, Path] | None = None, progress: bool = False) -> tuple[Path, Path]:
    """Trains DeepLab-LargeFOV or FCN-8s (one of PEERS) from a random VGG16,
    its convolutions those of ``encoder`` (prototxt, caffemodel) when given;
    returns its deploy prototxt and final weights."""
    if net not in PEERS:
        raise ValueError(f"net must be one of {PEERS}, not {net!r}")
    folder.mkdir(parents=True, exist_ok=True)
    caffe.set_random_seed(schedule.seed)
    vgg_prototxt, vgg_model = random_vgg16(Size(VGG_INPUT, schedule.width_divisor), folder, schedule.seed)
    if encoder is not None:
        with_encoder(vgg_prototxt, vgg_model, encoder)
    size = Size(schedule.crop, schedule.width_divisor)
    deploy = folder / f"{net}_deploy.prototxt"
    deploy.write_text(str(nets.deeplab_deploy(size) if net == "deeplab-largefov" else nets.fcn8s_deploy(size)))
    init = build_init_model(net, deploy, vgg_model, vgg_prototxt, folder / f"{net}_init.caffemodel",
                            seed=schedule.seed)
    recipe = replace(DEEPLAB_LARGEFOV, batch_size=schedule.batch, batch_per_pass=schedule.batch,
                     base_lr=schedule.base_lr, max_iter=schedule.iters,
                     stepsize=max(1, int(schedule.iters * 0.7)))
    solver = write_reduced_peer(folder / "prototxt", net, voc_root, sbd_root, size, schedule.test_size, recipe)
    LOG.info("training the reduced %s: %d updates of %d crops of %d px", net, schedule.iters, schedule.batch,
             schedule.crop)
    final = Trainer(StageConfig(solver=solver, run_dir=folder / "run", weights=init, val_interval=0,
                                snapshot_interval=0, keep_last=1, progress=progress, log_interval=20)).train()
    return deploy, final
