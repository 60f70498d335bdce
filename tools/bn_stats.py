#!/usr/bin/env python3
"""Re-estimates the BatchNorm global statistics of a trained DeconvNet over N
batches of its training data (the authors used about 500) and writes the
caffemodel for inference. --model is a train prototxt whose data layer reads
the training LMDB; --source replaces that layer's LMDB path."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from google.protobuf import text_format

from deconvnet.common.cli import PROTOTXT, positive_int, setup_logging
from deconvnet.common.machine import use_device
from deconvnet.data.layer_params import SegDataParams
from deconvnet.net.bn_stats import write_statistics
from deconvnet.net.weights import WeightsMismatch


def with_source(model: Path, source: Path, folder: Path) -> Path:
    """A copy of the train prototxt whose SegDataLayer reads ``source``."""
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    text_format.Merge(model.read_text(), net)
    for layer in net.layer:
        if layer.type == "Python" and layer.python_param.module == "python_layers.seg_data":
            params = SegDataParams.from_param_str(layer.python_param.param_str)
            layer.python_param.param_str = replace(params, source=str(source.resolve())).to_param_str()
    path = folder / model.name
    path.write_text(str(net))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=PROTOTXT / "deconvnet_stage2_train.prototxt")
    parser.add_argument("--weights", type=Path, required=True, help="the trained caffemodel")
    parser.add_argument("--out", type=Path, required=True, help="the inference caffemodel to write")
    parser.add_argument("--batches", type=positive_int, default=500)
    parser.add_argument("--source", type=Path, help="training LMDB (default: the one in --model)")
    parser.add_argument("--allow-missing-weights", action="store_true",
                        help="go on when --weights lacks learned layers of --model (listed); they keep their fillers")
    parser.add_argument("--gpu", type=int)
    args = parser.parse_args(argv)
    setup_logging()
    use_device(args.gpu)
    for path in (args.model, args.weights):
        if not path.is_file():
            logging.error("bn_stats: %s not found", path)
            return 1
    weights, out = args.weights.resolve(), args.out.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        model = (with_source(args.model, args.source, Path(tmp)) if args.source else args.model).resolve()
        # Relative data paths in the prototxt resolve from its folder.
        cwd = os.getcwd()
        os.chdir(args.model.resolve().parent)
        try:
            write_statistics(model, weights, out, args.batches, allow_missing=args.allow_missing_weights)
        except WeightsMismatch as err:
            logging.error("bn_stats: %s", err)
            return 1
        finally:
            os.chdir(cwd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
