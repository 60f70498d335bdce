#!/usr/bin/env python3
"""Downloads PASCAL VOC 2012, SBD, VGG16, the FCN-8s PASCAL weights and the
structured-edge model from their documented upstream addresses, resuming interrupted transfers and
verifying size and checksum. A file appears under its final name only when
verified. Archives go to --data (and are unpacked there with --extract),
weights to --models.

  voc2012            VOCtrainval_11-May-2012.tar  -> data/VOCdevkit/VOC2012
  sbd                benchmark.tgz                -> data/benchmark_RELEASE/dataset
  vgg16              VGG_ILSVRC_16_layers.caffemodel
  fcn8s              fcn8s-heavy-pascal.caffemodel (the public "heavy" FCN-8s)
  fcn8s-pascal-2014  fcn-8s-pascal.caffemodel (the 2014 FCN-8s of the paper's
                     ensemble; the release and paper recipes use it)
  sed-model          sed_model.yml.gz (OpenCV's structured-edge model, from
                     opencv_extra at a pinned commit; Edge Boxes use it when
                     present)
  deconvnet-release  the DeconvNet authors' trained weights, from their own
                     host: DeconvNet_trainval_inference.caffemodel
                     (deconvnet-inference) and stage_2_train_result.caffemodel
                     (deconvnet-stage2); tools/convert_release.py makes them
                     ours. Not in "all": ask for them by name.

--from PATH_OR_URL takes an asset from elsewhere: a file, a folder holding
it under its name, or another address (a URL ending in / is a folder); it
is verified like a download. --url NAME=URL does the same for one asset of
several.

No checksum of the last four is published. Their first download that
completes and passes a content check (a gzip YAML model; a caffemodel that
parses) is recorded, size and sha256, in the lock file (--lock-file, default
models/downloads.lock.json), and every later copy, downloaded again or found
on disk, must match it; a mismatch stops with both values. Commit the lock
file to pin what your group uses.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deconvnet.common.cli import MODELS, ROOT, run_tool, setup_logging
from deconvnet.data.download import ASSETS, DEFAULT_LOCK_FILE, GROUPS, DownloadError, download, extract, source_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("assets", nargs="*", default=["all"],
                        help=f"{', '.join([*ASSETS, *GROUPS])} or all (default: every asset but the release's)")
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="archives and datasets (default data/)")
    parser.add_argument("--models", type=Path, default=MODELS, help="weights (default models/)")
    parser.add_argument("--url", action="append", default=[], metavar="NAME=URL",
                        help="another address for an asset (repeatable)")
    parser.add_argument("--from", dest="source", metavar="PATH_OR_URL",
                        help="take the named asset(s) from this file, folder or address instead")
    parser.add_argument("--extract", action="store_true", help="unpack the dataset archives")
    parser.add_argument("--retries", type=int, default=3, help="resumed attempts after a failure")
    parser.add_argument("--timeout", type=float, default=60, help="seconds without data before giving up")
    parser.add_argument("--lock-file", type=Path, default=DEFAULT_LOCK_FILE,
                        help="sizes and sha256 of first downloads of assets without a published checksum "
                             "(default models/downloads.lock.json)")
    args = parser.parse_args(argv)
    setup_logging()
    grouped = {name for members in GROUPS.values() for name in members}
    names = [name for name in ASSETS if name not in grouped] if "all" in args.assets else \
        [member for name in args.assets for member in GROUPS.get(name, (name,))]
    unknown = [n for n in names if n not in ASSETS]
    if unknown:
        parser.error(f"unknown asset(s) {unknown}; choose from {[*ASSETS, *GROUPS]}")
    if args.source and "all" in args.assets:
        parser.error("--from takes named assets, not all")
    if args.source and len(names) > 1 and not (Path(args.source).is_dir() or args.source.endswith("/")):
        parser.error(f"--from {args.source} names one file, but {', '.join(names)} are several: give the folder "
                     "(or an address ending in /) that holds them under their names")
    urls = {}
    for item in args.url:
        name, sep, url = item.partition("=")
        if not sep or name not in ASSETS:
            parser.error(f"--url wants NAME=URL with NAME in {list(ASSETS)}, got {item!r}")
        urls[name] = url
    failed = []
    for name in names:
        asset = ASSETS[name]
        folder = args.models if asset.kind == "model" else args.data / "downloads"
        try:
            url = urls.get(name)
            if args.source and url is None:
                url = source_url(asset, args.source)
            path = download(asset, folder, url, args.retries, args.timeout, lock_file=args.lock_file)
            if args.extract and asset.kind == "data":
                logging.info("unpacking %s into %s", path, args.data)
                extract(path, args.data)
        except DownloadError as err:
            logging.error("%s", err)
            failed.append(name)
    if failed:
        logging.error("failed: %s", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, "download"))
