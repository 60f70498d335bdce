"""The crop datasets' LMDB format (documented in docs/DATASETS.md).

A database is a folder ``<name>/`` holding the LMDB files, ``index.npy`` (the
balanced, shuffled order as record numbers) and ``manifest.json``. Each unique
example is stored once, under a fixed-width key (``%09d`` of its record
number), as:

    b"DNC1" | uint32 little-endian length of the metadata | metadata JSON |
    encoded image (JPEG) | label (grayscale PNG)

where the metadata holds ``image_bytes``, ``label_bytes``, ``image_format``,
``crc32`` (of the image and label bytes together), ``source``, ``image_id``,
``box`` and ``cls``. Reading checks the checksum and that labels are 0..20
or 255, and opening checks that ``data.mdb`` is as long as its last page
says (a truncated copy would otherwise crash the reader with SIGBUS).
Databases written before the checksum field read as before, with a note. While it is built, the folder is
``<name>.partial``; it is renamed only when complete, so a folder without
that suffix is always whole. Build state (for resumption) lives under keys
starting with ``__`` and is removed before the rename.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import cv2
import lmdb
import numpy as np

LOG = logging.getLogger(__name__)

MAGIC = b"DNC1"
KEY_WIDTH = 9
STATE_KEY = b"__state__"
CLASSES_PREFIX = b"__classes__/"
SKIPPED_PREFIX = b"__skipped__/"
INITIAL_MAP_SIZE = 1 << 30


class CropDBError(Exception):
    pass


def record_key(number: int) -> bytes:
    return b"%0*d" % (KEY_WIDTH, number)


@dataclass
class Record:
    image: np.ndarray   # BGR uint8
    label: np.ndarray   # uint8
    meta: dict[str, Any]


def encode_record(image: np.ndarray, label: np.ndarray, meta: dict[str, Any],
                  jpeg_quality: int = 95) -> bytes:
    ok, img = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    ok2, lab = cv2.imencode(".png", label)
    if not (ok and ok2):
        raise CropDBError("encoding a crop failed")
    payload = img.tobytes() + lab.tobytes()
    meta = dict(meta, image_bytes=len(img), label_bytes=len(lab), image_format="jpeg", crc32=zlib.crc32(payload))
    header = json.dumps(meta, sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + payload


def decode_record(value: bytes, verify: bool = True) -> Record:
    """Raises CropDBError when the record is damaged: bad magic or header, a
    checksum mismatch, bytes that do not decode, or labels outside 0..20/255
    (``verify=False`` skips the checksum and label checks: for benchmarks)."""
    if value[:4] != MAGIC:
        raise CropDBError("not a DeconvNet crop record (bad magic)")
    (length,) = struct.unpack("<I", value[4:8])
    try:
        meta = json.loads(value[8:8 + length])
        start = 8 + length
        img_end = start + meta["image_bytes"]
        end = img_end + meta["label_bytes"]
    except (ValueError, KeyError, TypeError) as err:
        raise CropDBError(f"damaged record header ({err})") from err
    if verify and "crc32" in meta and zlib.crc32(value[start:end]) != meta["crc32"]:
        raise CropDBError("checksum mismatch: the stored image or label bytes are damaged")
    image = cv2.imdecode(np.frombuffer(value[start:img_end], np.uint8), cv2.IMREAD_COLOR)
    label = cv2.imdecode(np.frombuffer(value[img_end:end], np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or label is None:
        raise CropDBError(f"a crop record whose {'image' if image is None else 'label'} does not decode")
    # Labels may hold the 21 classes and void (255); OpenCV's inRange is the
    # cheapest test of that (a numpy lookup cost a tenth of the read).
    if verify and (label.dtype != np.uint8 or cv2.countNonZero(cv2.inRange(label, 21, 254))):
        bad = sorted(set(np.unique(label).tolist()) - set(range(21)) - {255})
        raise CropDBError(f"label values outside 0..20 and 255: {bad[:10]}")
    return Record(image, label, meta)


def _keys_with_prefix(txn: lmdb.Transaction, prefix: bytes) -> list[bytes]:
    cursor = txn.cursor()
    keys = []
    if cursor.set_range(prefix):
        for key in cursor.iternext(keys=True, values=False):
            key = bytes(key)
            if not key.startswith(prefix):
                break
            keys.append(key)
    return keys


class CropDBWriter:
    """Appends records in order; commits every ``commit_every`` images, with
    the build state in the same transaction, so that a killed build resumes
    from its last commit. ``finish`` writes the index and manifest and
    renames the folder into place."""

    def __init__(self, path: Path, params: dict[str, Any], commit_every: int = 20) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.params = params
        self.commit_every = commit_every
        if self.path.exists():
            raise CropDBError(f"{self.path} exists; remove it (or choose another --out) to rebuild")
        self.env, state = self._open_partial()
        self.images_done = state.get("images_done", 0)
        self.records = state.get("records", 0)
        self.batch_no = state.get("batches", 0)
        self._pending: list[tuple[bytes, bytes]] = []
        self._pending_classes: list[int] = []
        self._pending_skipped: list[dict] = []
        self._pending_images = 0
        self.bytes_written = state.get("bytes", 0)

    def _open_partial(self) -> tuple[lmdb.Environment, dict]:
        """The partial database and its state: resumed when it was built
        with the same parameters, else new."""
        if self.partial.exists():
            env = lmdb.open(str(self.partial), map_size=INITIAL_MAP_SIZE)
            with env.begin() as txn:
                raw = txn.get(STATE_KEY)
            state = json.loads(raw) if raw else {}
            if state.get("params") == self.params:
                LOG.info("resuming %s after %d images (%d records)", self.partial,
                         state.get("images_done", 0), state.get("records", 0))
                return env, state
            env.close()
            old = state.get("params") or {}
            changed = sorted(k for k in set(old) | set(self.params) if old.get(k) != self.params.get(k))
            LOG.warning("discarding %s and starting over: %s changed since it was started", self.partial,
                        ", ".join("the image list or input files" if k == "inputs" else k for k in changed))
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        return lmdb.open(str(self.partial), map_size=INITIAL_MAP_SIZE), {}

    def add_image(self, records: Iterable[tuple[bytes, int]], skipped: dict | None = None) -> None:
        """The encoded records of one source image (and why it was skipped)."""
        for value, cls in records:
            self._pending.append((record_key(self.records + len(self._pending)), value))
            self._pending_classes.append(cls)
        if skipped:
            self._pending_skipped.append(skipped)
        self._pending_images += 1
        if self._pending_images >= self.commit_every:
            self.commit()

    @property
    def total_records(self) -> int:
        """Records written so far, committed or not."""
        return self.records + len(self._pending)

    def _state(self) -> dict:
        return dict(params=self.params, images_done=self.images_done, records=self.records,
                    batches=self.batch_no, bytes=self.bytes_written)

    def commit(self) -> None:
        if not self._pending_images:
            return
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in self._pending:
                        txn.put(key, value)
                    batch = b"%09d" % self.batch_no
                    txn.put(CLASSES_PREFIX + batch, np.asarray(self._pending_classes, np.uint8).tobytes())
                    txn.put(SKIPPED_PREFIX + batch, json.dumps(self._pending_skipped).encode())
                    state = self._state()
                    state.update(images_done=self.images_done + self._pending_images,
                                 records=self.records + len(self._pending), batches=self.batch_no + 1,
                                 bytes=self.bytes_written + sum(len(v) for _, v in self._pending))
                    txn.put(STATE_KEY, json.dumps(state).encode())
                break
            except lmdb.MapFullError:
                # The map grows when full; the failed transaction was aborted.
                new_size = self.env.info()["map_size"] * 2
                LOG.info("growing %s to %.1f GiB", self.partial, new_size / 2**30)
                self.env.set_mapsize(new_size)
            except lmdb.Error as err:
                free = shutil.disk_usage(self.partial).free
                raise CropDBError(f"writing {self.partial} failed ({err}); {free / 2**30:.2f} GiB free on its disk. "
                                  "If the disk is full, free space and rerun the same command: the build "
                                  "resumes from its last committed image") from err
        self.images_done, self.records = state["images_done"], state["records"]
        self.batch_no, self.bytes_written = state["batches"], state["bytes"]
        self._pending, self._pending_classes, self._pending_skipped = [], [], []
        self._pending_images = 0

    def _collect(self, prefix: bytes) -> list[bytes]:
        with self.env.begin() as txn:
            values = [txn.get(key) for key in _keys_with_prefix(txn, prefix)]
        return [v for v in values if v is not None]

    def classes(self) -> np.ndarray:
        return np.concatenate([np.frombuffer(v, np.uint8) for v in self._collect(CLASSES_PREFIX)]
                              or [np.zeros(0, np.uint8)])

    def skipped(self) -> list[dict]:
        return [item for v in self._collect(SKIPPED_PREFIX) for item in json.loads(v)]

    def finish(self, index: np.ndarray, manifest: dict[str, Any], classes: np.ndarray | None = None) -> Path:
        """``classes``: each record's class, kept as classes.npy (merging
        shards balances over them)."""
        self.commit()
        with self.env.begin(write=True) as txn:
            for prefix in (CLASSES_PREFIX, SKIPPED_PREFIX):
                for key in _keys_with_prefix(txn, prefix):
                    txn.delete(key)
            txn.delete(STATE_KEY)
        self.env.sync()
        self.env.close()
        np.save(self.partial / "index.npy", np.asarray(index, dtype=np.int64))
        if classes is not None:
            np.save(self.partial / "classes.npy", np.asarray(classes, dtype=np.uint8))
        (self.partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.rename(self.partial, self.path)
        return self.path


_READ_ENVS: dict[str, tuple[int, tuple[int, int], lmdb.Environment]] = {}


def _file_id(path: Path) -> tuple[int, int]:
    stat = (path / "data.mdb").stat()
    return stat.st_dev, stat.st_ino


def _read_env(path: Path, file_id: tuple[int, int]) -> lmdb.Environment:
    """One read-only environment per database and process: LMDB allows only
    one per process, and none may be used across fork(). A forked child
    closes the one it inherited (only its own mapping goes) and opens its own;
    a database rebuilt in the same place (``file_id``, data.mdb's device and
    inode when it was opened, differs) is opened anew."""
    key = str(path.resolve())
    pid = os.getpid()
    if key in _READ_ENVS:
        owner, opened, env = _READ_ENVS[key]
        if owner == pid and opened == file_id:
            return env
        env.close()
    env = lmdb.open(key, readonly=True, lock=False, readahead=False, max_readers=256)
    _READ_ENVS[key] = (pid, file_id, env)
    return env


class CropDB:
    """Read access; safe to open in several processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.name.endswith(".partial"):
            raise CropDBError(f"{self.path} is an unfinished build; rerun the dataset tool")
        for name in ("index.npy", "manifest.json", "data.mdb"):
            if not (self.path / name).exists():
                raise CropDBError(f"{self.path} is not a finished crop database (no {name}); "
                                  "build it with data_prep/build_dataset.py")
        self.manifest = json.loads((self.path / "manifest.json").read_text())
        self.index = np.load(self.path / "index.npy")
        self._file_id = _file_id(self.path)  # once: env is used for every record read
        self._check_length()
        self._noted_unverified = False

    def _check_length(self) -> None:
        """data.mdb must hold every page its meta page counts: reading past
        the end of a truncated copy is a SIGBUS, not an error."""
        info, page = self.env.info(), self.env.stat()["psize"]
        need = (info["last_pgno"] + 1) * page
        have = (self.path / "data.mdb").stat().st_size
        if have < need:
            raise CropDBError(f"{self.path}/data.mdb is truncated: {have} bytes, but its last page ends at "
                              f"{need}; copy the database again (or rebuild it)")

    @property
    def env(self) -> lmdb.Environment:
        return _read_env(self.path, self._file_id)

    @property
    def num_records(self) -> int:
        return int(self.manifest["unique_records"])

    @property
    def stored_size(self) -> int:
        return int(self.manifest["params"]["stored_size"])

    def raw(self, number: int) -> bytes:
        with self.env.begin() as txn:
            value = txn.get(record_key(number))
        if value is None:
            raise CropDBError(f"{self.path}: no record {number}")
        return value

    def get(self, number: int) -> Record:
        try:
            record = decode_record(self.raw(number))
        except CropDBError as err:
            raise CropDBError(f"{self.path}: record {number}: {err}") from err
        if "crc32" not in record.meta and not self._noted_unverified:
            self._noted_unverified = True
            LOG.warning("%s was built before records carried checksums: its records are read unverified", self.path)
        return record


# Shard K of N of a dataset is built in <out>/shard-K-of-N (.partial while unfinished).
SHARD_FOLDER = re.compile(r"^shard-(\d+)-of-(\d+)(\.partial)?$")


def shard_folder_name(index: int, count: int) -> str:
    return f"shard-{index}-of-{count}"


def manifest_fingerprint(database: Path) -> str:
    """sha256 of a database's manifest.json: a rebuild writes another one
    (its build time, and its inputs' fingerprint when they changed)."""
    return hashlib.sha256((Path(database) / "manifest.json").read_bytes()).hexdigest()


def unsharded_database(folder: Path) -> bool:
    """Whether ``folder`` holds a finished unsharded database (its own
    data.mdb, or a manifest that names no shards)."""
    folder = Path(folder)
    manifest = folder / "manifest.json"
    if (folder / "data.mdb").exists():
        return True
    try:
        return manifest.exists() and "shards" not in json.loads(manifest.read_text())
    except ValueError:
        return False


class ShardedCropDB:
    """A dataset built in shards and merged by data_prep/merge_shards.py:
    the folder holds the ``shard-K-of-N`` databases (read in place, nothing
    copied), the merged ``index.npy`` and a ``manifest.json`` naming the
    shards. Record numbers run across the shards in order, so they are the
    numbers an unsharded build of the same list gives."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.manifest = json.loads((self.path / "manifest.json").read_text())
        self.shards = [CropDB(self.path / name) for name in self.manifest["shards"]]
        self._check_shards()
        self.offsets = np.cumsum([0] + [db.num_records for db in self.shards])
        self.index = np.load(self.path / "index.npy")

    def _check_shards(self) -> None:
        """Each shard must be the one merged: a shard rebuilt afterwards has
        other records under the same numbers, which the merged index would
        mix up silently."""
        counts = self.manifest.get("records_per_shard")
        prints = self.manifest.get("shard_fingerprints")
        for k, db in enumerate(self.shards):
            changed = (counts is not None and db.num_records != counts[k]
                       or prints is not None and manifest_fingerprint(db.path) != prints[k])
            if changed:
                raise CropDBError(f"{db.path} was rebuilt after {self.path} was merged (its records or manifest "
                                  f"differ from those the merged index was made from); run "
                                  f"data_prep/merge_shards.py {self.path} again")

    @property
    def num_records(self) -> int:
        return int(self.offsets[-1])

    @property
    def stored_size(self) -> int:
        return int(self.manifest["params"]["stored_size"])

    def _locate(self, number: int) -> tuple[CropDB, int]:
        if not 0 <= number < self.num_records:
            raise CropDBError(f"{self.path}: no record {number}")
        shard = int(np.searchsorted(self.offsets, number, side="right")) - 1
        return self.shards[shard], number - int(self.offsets[shard])

    def raw(self, number: int) -> bytes:
        db, local = self._locate(number)
        return db.raw(local)

    def get(self, number: int) -> Record:
        db, local = self._locate(number)
        return db.get(local)


CropSource = CropDB | ShardedCropDB  # what the data layer and the tools read records from


def open_crop_db(path: Path) -> CropSource:
    """A crop database, or a merged sharded one."""
    path = Path(path)
    manifest = path / "manifest.json"
    if manifest.exists() and "shards" in json.loads(manifest.read_text()):
        return ShardedCropDB(path)
    if not manifest.exists() and path.is_dir() and any(SHARD_FOLDER.match(p.name) for p in path.iterdir()):
        raise CropDBError(f"{path} holds shards that are not merged yet; run data_prep/merge_shards.py {path}")
    return CropDB(path)
