#!/usr/bin/env python3
"""Writes stand-ins of the real inputs of docs/REPRODUCE.md under DIR, for
its rehearsal (experiments/reproduce.sh --rehearsal DIR runs this first):

  DIR/data/downloads/VOCtrainval_11-May-2012.tar, benchmark.tgz
      24 synthetic images at real VOC sizes (500x375, 375x500, ...) with
      VOC's ids (2008_000334), packed as the real archives are, then
      unpacked by tools/download.py's own code into
  DIR/data/VOCdevkit/VOC2012, DIR/data/benchmark_RELEASE/dataset
  DIR/data/VOC2012_test/JPEGImages   2 images for the test-server step
  DIR/models/VGG_ILSVRC_16_layers.caffemodel, fcn-8s-pascal.caffemodel
      random weights, full size, in the released files' V1 layout
  DIR/models/sed_model.yml.gz        a random structured-edge forest in
      OpenCV's model format (the proposals run on structured edges)
  DIR/rehearsal_val.txt              the 2 val images the rehearsal segments

Parts already there are kept, so a rerun is quick.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deconvnet.common.cli import run_tool, setup_logging
from deconvnet.data.download import ASSETS, extract
from deconvnet.data.stand_in import REHEARSAL_SPEC, write_archives, write_sed_model, write_test_images
from deconvnet.data.voc import read_split
from deconvnet.net.stand_in_weights import write_stand_in

VAL_IMAGES = 2


# The weights the guide's steps 2 to 9 read (the release's own are for "Skip training").
REHEARSED_WEIGHTS = ("vgg16", "fcn8s-pascal-2014")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="the rehearsal's folder (created)")
    args = parser.parse_args(argv)
    setup_logging()
    data, models = args.dir / "data", args.dir / "models"
    for archive in write_archives(data / "downloads", REHEARSAL_SPEC).values():
        logging.info("unpacking %s into %s", archive, data)
        extract(archive, data)
    write_test_images(data / "VOC2012_test" / "JPEGImages")
    for name in REHEARSED_WEIGHTS:
        path = models / ASSETS[name].filename
        if not path.exists():
            write_stand_in(name, path)
    sed_model = models / ASSETS["sed-model"].filename
    if not sed_model.exists():
        write_sed_model(sed_model)
    val = read_split(data / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt")
    (args.dir / "rehearsal_val.txt").write_text("".join(f"{i}\n" for i in val[:VAL_IMAGES]))
    logging.info("stand-in inputs ready under %s", args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "rehearsal_inputs"))
