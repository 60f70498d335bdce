"""Joins a dataset built in shards (``<out>/shard-K-of-N``, one per part of
the image list) without copying a crop: the balanced index over all
records, numbered across the shards in order, and the manifest, written
into ``<out>`` beside the shards. The records and the index are those of
an unsharded build of the same list with the same seed."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from deconvnet.common.atomic import atomic_path
from deconvnet.common.constants import CLASSES
from deconvnet.data.balance import balanced_index, class_histogram
from deconvnet.data.crop_db import (
    SHARD_FOLDER,
    CropDB,
    CropDBError,
    manifest_fingerprint,
    shard_folder_name,
    unsharded_database,
)

LOG = logging.getLogger(__name__)

# Manifest fields every shard must share (besides its params).
SHARED = ("seed", "max_repeat", "balanced", "recipe", "edges")


def find_shards(folder: Path) -> list[Path]:
    """The finished shards of ``folder`` in order; CropDBError naming the
    missing or unfinished ones, or a mix of shard counts."""
    found: dict[int, set[int]] = {}
    unfinished = []
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        match = SHARD_FOLDER.match(path.name)
        if not match:
            continue
        index, count = int(match.group(1)), int(match.group(2))
        if match.group(3):
            unfinished.append(path.name)
        else:
            found.setdefault(count, set()).add(index)
    if not found and not unfinished:
        raise CropDBError(f"{folder} holds no shards (shard-K-of-N); build them with data_prep/build_dataset.py "
                          "--shard K/N --out " + str(folder))
    if len(found) > 1:
        raise CropDBError(f"{folder} mixes shards of different counts ({', '.join(f'of {n}' for n in sorted(found))});"
                          " remove the ones of the other build")
    count = next(iter(found)) if found else int(SHARD_FOLDER.match(unfinished[0]).group(2))  # type: ignore[union-attr]
    missing = [shard_folder_name(k, count) for k in range(count) if k not in found.get(count, set())]
    if missing:
        raise CropDBError(f"{folder}: {len(missing)} of {count} shards missing or unfinished: {', '.join(missing)}"
                          + (f" (unfinished: {', '.join(unfinished)})" if unfinished else "")
                          + "; run (or rerun) their build tasks")
    return [Path(folder) / shard_folder_name(k, count) for k in range(count)]


def _check_alike(shards: list[Path], manifests: list[dict[str, Any]]) -> None:
    for k, (path, manifest) in enumerate(zip(shards, manifests, strict=True)):
        own = manifest["shard"]
        if (own["index"], own["count"]) != (k, len(shards)):
            raise CropDBError(f"{path} holds shard {own['index']} of {own['count']} by its own manifest, not "
                              f"{k} of {len(shards)} as its name says (a copied or renamed folder?); remove it "
                              "and rerun its build task")
    first = manifests[0]
    images = sum(m["images"] for m in manifests)
    if images != first["shard"]["images_total"]:
        raise CropDBError(f"the shards of {shards[0].parent} hold {images} images, the list has "
                          f"{first['shard']['images_total']}; rebuild the shards with one command line")
    for path, manifest in zip(shards[1:], manifests[1:], strict=True):
        differ = sorted(k for k in set(first["params"]) | set(manifest["params"])
                        if first["params"].get(k) != manifest["params"].get(k))
        differ += [k for k in SHARED if first.get(k) != manifest.get(k)]
        if first["shard"]["list_fingerprint"] != manifest["shard"]["list_fingerprint"]:
            differ.append("the image list or input files")
        if differ:
            raise CropDBError(f"{path} was built with other arguments than {shards[0]}: {', '.join(differ)} differ; "
                              "rebuild the shards with one command line")


def merge(folder: Path) -> dict[str, Any]:
    """Writes ``folder``/index.npy and manifest.json over its shards; returns
    the manifest."""
    folder = Path(folder)
    if unsharded_database(folder):
        raise CropDBError(f"{folder} holds a finished unsharded dataset (data.mdb, manifest.json); merging would "
                          "overwrite its index and manifest. Build the shards into another --out, or remove "
                          f"{folder} first")
    shards = find_shards(folder)
    manifests = []
    for path in shards:
        CropDB(path)  # finished and whole
        manifest = json.loads((path / "manifest.json").read_text())
        if "shard" not in manifest or not (path / "classes.npy").exists():
            raise CropDBError(f"{path} is not a shard build (no shard record or classes.npy)")
        manifests.append(manifest)
    _check_alike(shards, manifests)
    classes = np.concatenate([np.load(path / "classes.npy") for path in shards])
    first = manifests[0]
    index = (balanced_index(classes, first["max_repeat"], first["seed"]) if first["balanced"]
             else np.random.default_rng(first["seed"]).permutation(len(classes)))
    before = class_histogram(classes)
    after = class_histogram(classes[index]) if len(index) else np.zeros_like(before)
    skipped = [item for m in manifests for item in m["skipped"]]
    total_bytes = sum(m["bytes_per_example"] * m["unique_records"] for m in manifests)
    merged = dict(
        format=first["format"], params=first["params"], seed=first["seed"], max_repeat=first["max_repeat"],
        balanced=first["balanced"], images=first["shard"]["images_total"], unique_records=int(len(classes)),
        index_length=int(len(index)),
        class_counts_before={CLASSES[c]: int(n) for c, n in enumerate(before) if n},
        class_counts_after={CLASSES[c]: int(n) for c, n in enumerate(after) if n},
        skipped=skipped, skipped_count=len(skipped), bytes_per_example=total_bytes / max(len(classes), 1),
        proposal_seconds=sum(m["proposal_seconds"] for m in manifests),
        build_seconds=sum(m["build_seconds"] for m in manifests), recipe=first["recipe"], edges=first["edges"],
        shards=[path.name for path in shards], records_per_shard=[m["unique_records"] for m in manifests],
        shard_fingerprints=[manifest_fingerprint(path) for path in shards])
    with atomic_path(folder / "index.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(index, dtype=np.int64))
    with atomic_path(folder / "manifest.json") as tmp:  # last: a folder with it is merged
        tmp.write_text(json.dumps(merged, indent=2) + "\n")
    LOG.info("merged %d shards into %s: %d records, %d in the index", len(shards), folder, len(classes), len(index))
    return merged
