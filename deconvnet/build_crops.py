"""Builds a stage-1 or stage-2 crop database: images -> (proposals) -> crops
-> class balancing -> LMDB, with worker processes and resumption."""
from __future__ import annotations

import logging
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from deconvnet import crops
from deconvnet.balance import balanced_index, class_histogram
from deconvnet.crop_db import CropDBWriter, encode_record
from deconvnet.image_sets import ImageRef, ImageSource
from deconvnet.proposals import EdgeBoxParams, ProposalCache
from deconvnet.voc import CLASSES, VOID, AnnotationFormatError, DatasetError

LOG = logging.getLogger(__name__)


@dataclass
class BuildConfig:
    stage: int
    out: Path
    voc_root: Path | None = None
    sbd_root: Path | None = None
    image_set: str = "union"
    stored_size: int = crops.STORED_SIZE
    min_iou: float = 0.5                 # stage 2: proposal vs instance box
    max_proposals: int = 2000            # stage 2: proposals per image
    max_repeat: float | None = None      # balancing cap (x a class's own count)
    balance: bool = True
    seed: int = 0
    jpeg_quality: int = 95
    workers: int = 1
    strict: bool = False                 # unreadable inputs fail the build
    limit: int | None = None             # first N images only
    commit_every: int = 20               # images per LMDB transaction
    proposal_cache: Path | None = None
    edge_params: EdgeBoxParams = field(default_factory=EdgeBoxParams)

    def params(self) -> dict[str, Any]:
        """What determines the content: resumption requires the same."""
        keep = ("stage", "image_set", "stored_size", "min_iou", "max_proposals", "jpeg_quality",
                "limit")
        params = {k: getattr(self, k) for k in keep}
        params["voc_root"] = str(self.voc_root) if self.voc_root else None
        params["sbd_root"] = str(self.sbd_root) if self.sbd_root else None
        params["edge_params"] = asdict(self.edge_params) if self.stage == 2 else None
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
        examples = crops.stage1_examples(image, class_map, instances, config.stored_size)
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
    refs = ImageSource(config.voc_root, config.sbd_root).resolve(config.image_set)
    if config.limit is not None:
        refs = refs[:config.limit]
    writer = CropDBWriter(config.out, config.params(), config.commit_every)
    todo = refs[writer.images_done:]
    LOG.info("stage %d: %d images (%d already done) -> %s", config.stage, len(refs),
             writer.images_done, config.out)
    proposal_seconds = 0.0
    progress = tqdm(total=len(refs), initial=writer.images_done, unit="img",
                    desc=f"stage {config.stage} crops", dynamic_ncols=True)
    if config.workers > 1:
        pool = mp.get_context("fork").Pool(config.workers, _init_worker, (config,))
        results = pool.imap(process_image, todo, chunksize=1)
    else:
        pool = None
        _init_worker(config)
        results = map(process_image, todo)
    try:
        for records, skipped, seconds in results:
            writer.add_image(records, skipped)
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
        proposal_seconds=proposal_seconds, build_seconds=time.time() - started,
    )
    writer.finish(index, manifest)
    LOG.info("wrote %s: %d unique crops, %d in the balanced index, %d images skipped",
             config.out, len(classes), len(index), len(skipped))
    return manifest
