#!/usr/bin/env python3
"""Re-estimates the BatchNorm global statistics of a trained DeconvNet over N
batches of its training data (the authors used about 500) and writes the
caffemodel for inference. --model is a train prototxt whose data layer reads
the training LMDB; --source replaces that layer's LMDB path."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from google.protobuf import text_format  # noqa: E402

from deconvnet.bn_stats import write_statistics  # noqa: E402

from deconvnet.machine import use_device  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def with_source(model: Path, source: Path, folder: Path) -> Path:
    """A copy of the train prototxt whose SegDataLayer reads ``source``."""
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    text_format.Merge(model.read_text(), net)
    for layer in net.layer:
        if layer.type == "Python" and layer.python_param.module == "python_layers.seg_data":
            params = json.loads(layer.python_param.param_str)
            params["source"] = str(source.resolve())
            layer.python_param.param_str = json.dumps(params)
    path = folder / model.name
    path.write_text(str(net))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "prototxt" / "deconvnet_stage2_train.prototxt")
    parser.add_argument("--weights", type=Path, required=True, help="the trained caffemodel")
    parser.add_argument("--out", type=Path, required=True, help="the inference caffemodel to write")
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--source", type=Path, help="training LMDB (default: the one in --model)")
    parser.add_argument("--gpu", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
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
            write_statistics(model, weights, out, args.batches)
        finally:
            os.chdir(cwd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
