"""The GPU kit's checks of the Python pipeline before its first GPU call
(engine/gpu_kit/run.sh runs them with the kit's wheels on the path):

  imports      pycaffe (with its Python and Unpooling layers), pydensecrf,
               lmdb, OpenCV and the pipeline's modules import; prints what
               it found
  data-layer   the stage-2 training net's Python data layer alone, on the
               CPU, reads one batch from the kit's crop LMDB (run from the
               kit's project folder); OUT gets the one-layer prototxt"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

TRAIN_NET = Path("prototxt/deconvnet_stage2_train.prototxt")


def check_imports() -> str:
    import cv2
    import lmdb
    import numpy
    import pydensecrf.densecrf  # noqa: F401

    import deconvnet.data.crop_db  # noqa: F401
    import python_layers.seg_data  # noqa: F401

    import caffe

    layers = set(caffe.layer_type_list())
    if not {"Python", "Unpooling"} <= layers:
        raise SystemExit(f"pycaffe at {caffe.__file__} lacks the Python or Unpooling layer: {sorted(layers)}")
    return (f"imports: caffe {caffe.__version__} ({Path(caffe.__file__).parent}) with its Python layer, "
            f"pydensecrf, lmdb {lmdb.__version__}, numpy {numpy.__version__}, cv2 {cv2.__version__}")


def check_data_layer(out: Path) -> str:
    from google.protobuf import text_format

    import caffe
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    text_format.Merge(TRAIN_NET.read_text(), net)
    data = [layer for layer in net.layer if layer.type == "Python"]
    if not data:
        raise SystemExit(f"{TRAIN_NET} has no Python data layer")
    del net.layer[:]
    net.layer.extend(data)
    out.mkdir(parents=True, exist_ok=True)
    path = out.resolve() / "data_layer.prototxt"
    path.write_text(text_format.MessageToString(net))
    caffe.set_mode_cpu()
    # Its source is relative to the net's folder, as tools/train.py takes it.
    os.chdir(TRAIN_NET.parent)
    blobs = caffe.Net(str(path), caffe.TRAIN).forward()
    return "Python data layer: one batch, " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(blobs.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=("imports", "data-layer"))
    parser.add_argument("out", type=Path, nargs="?", default=Path("."), help="data-layer: folder for its prototxt")
    args = parser.parse_args(argv)
    print(check_imports() if args.check == "imports" else check_data_layer(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
