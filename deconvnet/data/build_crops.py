"""Builds a stage-1 or stage-2 crop database: images -> (proposals) -> crops
-> class balancing -> LMDB, with worker processes and resumption."""
from __future__ import annotations

import logging
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from deconvnet.common.cli import option
from deconvnet.common.constants import CLASSES, STAGE2_PROPOSALS, STORED_SIZE, VOID
from deconvnet.common.sharding import Shard
from deconvnet.data import crops
from deconvnet.data.balance import balanced_index, class_histogram
from deconvnet.data.crop_db import CropDBError, CropDBWriter, encode_record, shard_folder_name, unsharded_database
from deconvnet.data.image_sets import ImageRef, ImageSource
from deconvnet.data.proposals import EdgeBoxParams, ProposalCache, edges_record
from deconvnet.data.voc import AnnotationFormatError, DatasetError

LOG = logging.getLogger(__name__)


@dataclass
class BuildConfig:
    """What a crop database is built from, and how; data_prep/build_dataset.py
    generates its flags from these fields."""

    stage: int = option(choices=(1, 2), help="1: instance crops; 2: proposal crops")
    out: Path = option(help="database folder, e.g. data/lmdb/stage1_train")
    voc_root: Path | None = option(None, flag="--voc", help="VOCdevkit/VOC2012 folder")
    sbd_root: Path | None = option(None, flag="--sbd", help="benchmark_RELEASE/dataset folder")
    image_set: str = option("union", help="union (VOC trainval + SBD train/val, the paper's), union-minus-voc-val "
                                          "(the same without VOC val images, for a clean val score), voc:SPLIT "
                                          "or sbd:SPLIT")
    stored_size: int = option(STORED_SIZE, flag="--size", help="stored crop side")
    min_iou: float = option(0.5, help="stage 2: proposal-instance box IoU")
    max_proposals: int = option(STAGE2_PROPOSALS, help="stage 2: proposals per image")
    max_repeat: float | None = option(None, help="cap on each class's repetition factor (x its own count)")
    balance: bool = option(True, help="store the order unbalanced (e.g. for validation)")
    seed: int = option(0, help="seed of balancing and order")
    jpeg_quality: int = option(95, help="JPEG quality of the stored crops")
    workers: int = option(2, help="worker processes")
    strict: bool = option(False, help="fail on unreadable images instead of skipping them")
    limit: int | None = option(None, help="only the first N images")
    commit_every: int = option(20, help="images per LMDB transaction")
    proposal_cache: Path | None = option(None, help="default: <out>/../proposals")
    stage1_void: str = option("ignore", cli=False, help="stage 1: VOC void pixels stay void or become background")
    recipe: str = option("release", cli=False, help="the recipe the tool resolved (recorded in the manifest)")
    edge_params: EdgeBoxParams = option(cli=False, default_factory=EdgeBoxParams)
    shard: Shard | None = option(None, cli=False, help="build only this part, as <out>/shard-K-of-N")

    def params(self) -> dict[str, Any]:
        """What determines the content: resumption requires the same."""
        keep = ("stage", "image_set", "stored_size", "min_iou", "max_proposals", "jpeg_quality",
                "limit")
        params = {k: getattr(self, k) for k in keep}
        if self.stage == 1:  # proposals play no part in stage 1
            params["min_iou"] = params["max_proposals"] = None
        # Resolved: a relative and an absolute path to one folder are one input.
        params["voc_root"] = str(Path(self.voc_root).resolve()) if self.voc_root else None
        params["sbd_root"] = str(Path(self.sbd_root).resolve()) if self.sbd_root else None
        params["edge_params"] = asdict(self.edge_params) if self.stage == 2 else None
        params["stage1_void"] = self.stage1_void if self.stage == 1 else None
        return params


_WORKER: dict[str, Any] = {}


def _init_worker(config: BuildConfig) -> None:
    _WORKER["config"] = config
    _WORKER["source"] = ImageSource(config.voc_root, config.sbd_root)
    cache_dir = config.proposal_cache or (config.out.parent / "proposals")
    _WORKER["proposals"] = ProposalCache(cache_dir, config.edge_params)


def process_image(ref: ImageRef) -> tuple[list[tuple[bytes, int]], dict | None, float]:
    """Encoded records of one image, or why it was skipped; seconds spent on
    proposals."""
    config: BuildConfig = _WORKER["config"]
    source: ImageSource = _WORKER["source"]
    name = f"{ref.source}/{ref.image_id}"
    try:
        image = source.image(ref)
        class_map = source.class_map(ref)
        instances = source.instances(ref)
    except AnnotationFormatError:
        raise
    except DatasetError as err:
        if config.strict:
            raise
        return [], dict(image=name, reason=str(err)), 0.0
    bad = np.setdiff1d(np.unique(class_map), np.r_[np.arange(len(CLASSES)), VOID])
    if bad.size:
        reason = f"label values outside 0..20/255: {bad.tolist()}"
        if config.strict:
            raise DatasetError(f"{name}: {reason}")
        return [], dict(image=name, reason=reason), 0.0
    if class_map.shape != image.shape[:2]:
        reason = f"label size {class_map.shape} differs from image size {image.shape[:2]}"
        if config.strict:
            raise DatasetError(f"{name}: {reason}")
        return [], dict(image=name, reason=reason), 0.0
    proposal_seconds = 0.0
    if config.stage == 1:
        examples = crops.stage1_examples(image, class_map, instances, config.stored_size, config.stage1_void)
    else:
        start = time.perf_counter()
        boxes, _ = _WORKER["proposals"].get(f"{ref.source}_{ref.image_id}", image)
        proposal_seconds = time.perf_counter() - start
        examples = crops.stage2_examples(image, class_map, instances, boxes[:config.max_proposals],
                                         config.min_iou, config.stored_size)
    records = [(encode_record(ex.image, ex.label, dict(source=ref.source, image_id=ref.image_id,
                                                          box=list(ex.box), cls=ex.cls),
                              config.jpeg_quality), ex.cls) for ex in examples]
    return records, None, proposal_seconds


def build(config: BuildConfig) -> dict[str, Any]:
    """Builds config.out; returns its manifest."""
    started = time.time()
    source = ImageSource(config.voc_root, config.sbd_root)
    refs = source.resolve(config.image_set)
    if config.limit is not None:
        refs = refs[:config.limit]
    if not refs:
        raise DatasetError(f"image set {config.image_set!r} has no images (--voc {config.voc_root}, --sbd "
                           f"{config.sbd_root}{', --limit %d' % config.limit if config.limit is not None else ''}); "
                           "nothing to build")
    all_refs, target, shard_record = refs, config.out, None
    if config.shard is not None and unsharded_database(config.out):
        raise CropDBError(f"{config.out} holds a finished unsharded dataset; shards built beside it would be "
                          "merged over its index and manifest. Choose another --out for the shards, or remove "
                          f"{config.out} first")
    if config.shard is not None:
        # Each shard is a whole database of its part of the list; merge_shards.py checks that
        # every shard saw the same list (list_fingerprint) and the same arguments.
        refs = config.shard.take(all_refs)
        target = config.out / shard_folder_name(config.shard.index, config.shard.count)
        shard_record = dict(index=config.shard.index, count=config.shard.count, images_total=len(all_refs),
                            list_fingerprint=source.fingerprint(all_refs))
    # The resume key: the arguments, and the image list and input files themselves.
    key = dict(config.params(), inputs=source.fingerprint(refs))
    if config.shard is not None:
        key["shard"] = str(config.shard)
    writer = CropDBWriter(target, key, config.commit_every)
    todo = refs[writer.images_done:]
    LOG.info("stage %d: %d images%s (%d already done) -> %s", config.stage, len(refs),
             f" (shard {config.shard} of {len(all_refs)})" if config.shard else "", writer.images_done, target)
    proposal_seconds = 0.0
    progress = tqdm(total=len(refs), initial=writer.images_done, unit="img",
                    desc=f"stage {config.stage} crops", dynamic_ncols=True)
    results: Iterator[tuple[list[tuple[bytes, int]], dict | None, float]]
    if config.workers > 1:
        pool = mp.get_context("fork").Pool(config.workers, _init_worker, (config,))
        results = pool.imap(process_image, todo, chunksize=1)
    else:
        pool = None
        _init_worker(config)
        results = map(process_image, todo)
    try:
        for records, why_skipped, seconds in results:
            writer.add_image(records, why_skipped)
            proposal_seconds += seconds
            progress.update(1)
            progress.set_postfix(records=writer.total_records)
    finally:
        progress.close()
        if pool is not None:
            pool.terminate()
    writer.commit()
    classes = writer.classes()
    before = class_histogram(classes)
    index = (balanced_index(classes, config.max_repeat, config.seed) if config.balance
             else np.random.default_rng(config.seed).permutation(len(classes)))
    after = class_histogram(classes[index]) if len(index) else np.zeros_like(before)
    skipped = writer.skipped()
    manifest = dict(
        format="DNC1", params=config.params(), seed=config.seed, max_repeat=config.max_repeat,
        balanced=config.balance, images=len(refs), unique_records=int(len(classes)),
        index_length=int(len(index)),
        class_counts_before={CLASSES[c]: int(n) for c, n in enumerate(before) if n},
        class_counts_after={CLASSES[c]: int(n) for c, n in enumerate(after) if n},
        skipped=skipped, skipped_count=len(skipped),
        bytes_per_example=writer.bytes_written / max(len(classes), 1),
        proposal_seconds=proposal_seconds, build_seconds=time.time() - started, recipe=config.recipe,
        edges=edges_record(config.edge_params) if config.stage == 2 else None,
    )
    if shard_record is not None:
        manifest["shard"] = shard_record
    writer.finish(index, manifest, classes)
    LOG.info("wrote %s: %d unique crops, %d in the balanced index, %d images skipped",
             target, len(classes), len(index), len(skipped))
    return manifest
