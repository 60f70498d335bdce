"""<out>/run.json: what the labels in an inference folder were made with.

The record holds the settings (recipe, proposals, models, CRF, ensemble),
the timings of the last run of each shard (busy seconds per image of each
stage, wall seconds, workers) and, for sharded runs, the image list that
was split (its length and a fingerprint of the ids and paths in order) and
the shards run so far. One
folder holds one set of settings and, when sharded, one list: a run whose
settings differ, or a shard of another list (the input folder grew between
shards, or another --list), is refused by name, since the folder would
otherwise mix labels of two configurations or miss images silently.
--overwrite starts the record afresh (and redoes every image). Shards
running at once take a lock on the record, so the first one's record is
what the others are checked against.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from deconvnet.common.atomic import atomic_path
from deconvnet.common.cli import ToolError
from deconvnet.common.sharding import Shard

LOG = logging.getLogger(__name__)
RECORD = "run.json"
SHARDS = "shards"
TIMINGS = "timings"  # per run (or shard): what it did, not what it was made with
NOT_SETTINGS = (SHARDS, TIMINGS)


class RunRecordError(ToolError):
    """The folder's record disagrees with this run; the message says how."""


def list_fingerprint(items: list[tuple[str, Path]]) -> str:
    """sha256 of the (id, resolved path) pairs in order: what shards split."""
    digest = hashlib.sha256()
    for image_id, path in items:
        digest.update(f"{image_id}\t{Path(path).resolve()}\n".encode())
    return digest.hexdigest()


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f".{RECORD}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        LOG.warning("%s is not valid JSON; it is replaced by this run's record", path)
        return None


def claim(out: Path, settings: dict[str, Any], shard: Shard | None, items: list[tuple[str, Path]],
          overwrite: bool) -> dict[str, Any]:
    """Checks this run against ``out``/run.json and records it there;
    RunRecordError when the settings or the sharded list differ (unless
    ``overwrite``). Returns the record written."""
    path = Path(out) / RECORD
    with _locked(Path(out)):
        old = _read(path)
        record = dict(settings)
        if old is not None:
            differ = sorted(k for k in set(old) | set(settings)
                            if k not in NOT_SETTINGS and old.get(k) != settings.get(k))
            if differ and not overwrite:
                raise RunRecordError(
                    f"{path} records other settings than this run's ({', '.join(differ)} differ): the labels "
                    f"in {path.parent} were made with those. Use the same flags, another --out, or --overwrite "
                    "to redo every image with these")
            if not differ:
                record.update({k: old[k] for k in NOT_SETTINGS if k in old})
        if shard is not None:
            split = dict(count=shard.count, images=len(items), list_fingerprint=list_fingerprint(items))
            recorded = record.get(SHARDS)
            if recorded is not None and {k: recorded.get(k) for k in split} != split:
                if overwrite:
                    recorded = None
                else:
                    raise RunRecordError(
                        f"{path} records shards of another image list ({recorded.get('images')} images in "
                        f"{recorded.get('count')} shards; this is shard {shard} of {len(items)} images): the "
                        "inputs changed between shards, so images would be missed or done twice. Run every shard "
                        "on the same list, or --overwrite to start the folder's shards afresh")
            done = sorted(set((recorded or {}).get("run", [])) | {shard.index})
            record[SHARDS] = dict(split, run=done)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
    return record


def add_timings(out: Path, shard: Shard | None, timings: dict[str, Any]) -> None:
    """Records a finished run's timings under its shard ("all" unsharded)."""
    path = Path(out) / RECORD
    with _locked(Path(out)):
        record = _read(path) or {}
        record.setdefault(TIMINGS, {})[str(shard) if shard is not None else "all"] = timings
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
