"""The inputs the GPU kit's Python steps carry (scripts/gpu_kit.sh writes
them at the kit's build): synthetic VOC-size images, stage-2 crop LMDBs at
the full net's sizes for tools/train.py, and the Edge Boxes proposals of the
images tools/infer.py segments there.

The proposals are computed here because Edge Boxes needs OpenCV's contrib
modules (cv2.ximgproc), whose wheel alone is larger than the kit may be; the
lent machine has only opencv-python-headless. Their time on this machine is
recorded beside them (proposals.json), since the kit cannot measure it.

Owns the layout of the kit's data folder; imports the dataset builders."""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from deconvnet.common.atomic import atomic_path
from deconvnet.data.build_crops import BuildConfig, build
from deconvnet.data.proposals import EdgeBoxParams, ProposalCache
from deconvnet.data.synthetic import SyntheticSpec, write_dataset
from deconvnet.data.voc import read_image

LOG = logging.getLogger(__name__)

# VOC's most common image size (width, height): the 500x375.
IMAGE_SIZE = (500, 375)
TRAIN_DB = Path("data/lmdb/stage2_train")      # where prototxt/deconvnet_stage2_train.prototxt reads
VAL_DB = Path("data/lmdb/stage2_test")
INFER_IMAGES = Path("data/infer_images")
PROPOSALS = Path("data/proposals")
# A caffemodel with no layers: with --allow-missing-weights every layer of a
# net keeps its random fillers, which time as trained weights do.
NO_WEIGHTS = Path("data/no_weights.caffemodel")


def write_kit_inputs(project: Path, images: int = 4, infer_images: int = 20, seed: int = 0) -> dict:
    """Writes the data folder under ``project`` (the kit's copy of the
    repository's code) and returns what proposals.json records."""
    scratch = project / "data" / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    spec = SyntheticSpec(num_images=max(2 * images, infer_images), seed=seed, sizes=(IMAGE_SIZE,))
    splits = write_dataset(scratch, spec)
    voc = scratch / "VOCdevkit" / "VOC2012"
    sbd = scratch / "benchmark_RELEASE" / "dataset"
    # A few images' crops (hundreds, balanced into more) are enough for a few
    # updates; the validation set is one image's (the kit does not validate).
    for out, image_set, balance, limit in ((TRAIN_DB, "union-minus-voc-val", True, images),
                                           (VAL_DB, "voc:val", False, 1)):
        build(BuildConfig(stage=2, out=project / out, voc_root=voc, sbd_root=sbd, image_set=image_set,
                          balance=balance, seed=seed, workers=2, limit=limit, proposal_cache=scratch / "proposals"))
    ids = sorted(i for ids in splits.values() for i in ids)[:infer_images]
    folder = project / INFER_IMAGES
    folder.mkdir(parents=True, exist_ok=True)
    cache = ProposalCache(project / PROPOSALS, EdgeBoxParams())
    start = time.perf_counter()
    for image_id in ids:
        source = voc / "JPEGImages" / f"{image_id}.jpg"
        shutil.copyfile(source, folder / source.name)
        cache.get(image_id, read_image(source))
    seconds = (time.perf_counter() - start) / max(len(ids), 1)
    shutil.rmtree(scratch)
    from caffe.proto import caffe_pb2

    with atomic_path(project / NO_WEIGHTS) as tmp:
        tmp.write_bytes(caffe_pb2.NetParameter(name="no weights").SerializeToString())
    record = dict(images=len(ids), size=list(IMAGE_SIZE), edges="gradient",
                  seconds_per_image_on_the_kit_builder=round(seconds, 3))
    with atomic_path(project / PROPOSALS / "proposals.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    LOG.info("kit inputs: %d infer images, proposals %.2f s/image here", len(ids), seconds)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", type=Path, help="the kit's project folder (data/ goes inside)")
    parser.add_argument("--images", type=int, default=4, help="synthetic images the training crops come from")
    parser.add_argument("--infer-images", type=int, default=20, help="images tools/infer.py segments")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    write_kit_inputs(args.project, args.images, args.infer_images, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
