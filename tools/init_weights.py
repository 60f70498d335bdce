#!/usr/bin/env python3
"""Builds starting weights from VGG16 ("surgery"):

  deconvnet  conv1_1..conv5_3 copied; fc6 (InnerProduct 4096x25088) reshaped to a
             4096x512x7x7 convolution, fc7 to 4096x4096x1x1; the decoder keeps its
             Gaussian fillers; BatchNorm/Scale start as the identity.
  fcn8s      the same encoder; per-class bilinear kernels in the upsampling layers;
             zero score layers.
  deeplab-largefov
             conv1_1..conv5_3 copied; fc6 subsampled to 1024x512x3x3 (every 4th filter,
             taps 0, 3, 6 of the 7x7 kernel) and fc7 to 1024x1024 (every 4th filter and
             input), as the DeepLab authors' init model; fc8_voc12 Gaussian (std 0.01,
             --seed), biases 0; fc8_interp the fixed bilinear upsampling by 8.

The output caffemodel is accepted by `caffe train -weights`. Bad inputs stop
with a message and write nothing.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deconvnet.common.cli import MODELS, PROTOTXT, run_tool, setup_logging
from deconvnet.net.surgery import SurgeryError, build_init_model

DEFAULT_TARGET = {"deconvnet": PROTOTXT / "deconvnet_deploy.prototxt",
                  "fcn8s": PROTOTXT / "fcn8s_deploy.prototxt",
                  "deeplab-largefov": PROTOTXT / "deeplab_largefov_deploy.prototxt"}
DEFAULT_OUT = {"deconvnet": MODELS / "deconvnet_init_vgg16.caffemodel",
               "fcn8s": MODELS / "fcn8s_init_vgg16.caffemodel",
               "deeplab-largefov": MODELS / "deeplab_largefov_init_vgg16.caffemodel"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("net", choices=sorted(DEFAULT_TARGET), help="which net to initialise")
    parser.add_argument("--vgg-model", type=Path,
                        default=MODELS / "VGG_ILSVRC_16_layers.caffemodel",
                        help="VGG16 weights (default: models/VGG_ILSVRC_16_layers.caffemodel)")
    parser.add_argument("--vgg-prototxt", type=Path, default=PROTOTXT / "vgg16_deploy.prototxt",
                        help="VGG16 deploy net (default: prototxt/vgg16_deploy.prototxt)")
    parser.add_argument("--target", type=Path, help="the net to initialise (default: its deploy prototxt)")
    parser.add_argument("--out", type=Path, help="output caffemodel (default: models/<net>_init_vgg16.caffemodel)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the new layers' Gaussian fillers (DeconvNet's decoder, DeepLab's fc8)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        build_init_model(args.net, args.target or DEFAULT_TARGET[args.net], args.vgg_model,
                         args.vgg_prototxt, args.out or DEFAULT_OUT[args.net], seed=args.seed)
    except SurgeryError as err:
        logging.error("init_weights: %s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "init_weights"))
