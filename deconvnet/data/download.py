"""Downloads of the datasets and weights, resumable and verified.

A file is fetched into ``<name>.part`` (resumed with an HTTP Range request
when one exists), its size and checksum are checked, and only then is it
renamed to its final name. So a file under its final name is always whole.

Some upstream files have no published checksum. For those (``locked``
assets) the first download that completes and passes the asset's content
check is recorded, size and sha256, in a lock file (``models/downloads.lock.json``
by default), and every later copy, downloaded or found, must match it.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from deconvnet.common.atomic import atomic_path
from deconvnet.common.cli import MODELS

LOG = logging.getLogger(__name__)
CHUNK = 1 << 20


@dataclass(frozen=True)
class Asset:
    name: str
    url: str
    filename: str
    size: int | None = None
    md5: str | None = None
    sha1: str | None = None
    kind: str = "data"          # "data" (an archive) or "model"
    locked: bool = False        # no published checksum: the lock file's rule
    content: str = ""           # a CONTENT_CHECKS key, run before the first lock
    hint: str = ""              # added to the message when the download fails


# The DeconvNet authors' host (their model/get_model.sh); it has been unreliable for years.
DECONVNET_RELEASE_URL = "http://cvlab.postech.ac.kr/research/deconvnet/model"
_UNRELIABLE = ("the authors' host has not answered reliably for years: take a copy from elsewhere with "
               "--from PATH_OR_URL (a file, a folder holding it, or another address)")

# The opencv_extra commit the structured-edge model is taken from.
OPENCV_EXTRA_COMMIT = "4acb2734bc1f2100acc7f4921e4805da3929aef2"
DEFAULT_LOCK_FILE = MODELS / "downloads.lock.json"


ASSETS = {a.name: a for a in (
    Asset("voc2012", "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
          "VOCtrainval_11-May-2012.tar", size=1_999_639_040, md5="6cd6e144f989b92b3379bac3b3de84fd"),
    Asset("sbd", "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
          "benchmark.tgz", "benchmark.tgz", size=1_419_539_633, md5="82b4d87ceb2ed10f6038a1cba92111cb"),
    Asset("vgg16", "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel",
          "VGG_ILSVRC_16_layers.caffemodel", sha1="9363e1f6d65f7dba68c4f27a1e62105cdf6c4e24", kind="model"),
    Asset("fcn8s", "http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel",
          "fcn8s-heavy-pascal.caffemodel", sha1="c449ea74dd7d83751d1357d6a8c323fcf4038962", kind="model"),
    # The FCN authors' original 2014 model, which the DeconvNet release ensembles with
    # (its model/get_model.sh); 62.2 on VOC 2012 test.
    Asset("fcn8s-pascal-2014", "http://dl.caffe.berkeleyvision.org/fcn-8s-pascal.caffemodel",
          "fcn-8s-pascal.caffemodel", kind="model", locked=True, content="caffemodel"),
    # OpenCV's structured-edge forest (Dollar and Zitnick), for Edge Boxes.
    Asset("sed-model", f"https://raw.githubusercontent.com/opencv/opencv_extra/{OPENCV_EXTRA_COMMIT}/"
          "testdata/cv/ximgproc/model.yml.gz", "sed_model.yml.gz", kind="model", locked=True, content="sed-model"),
    # The DeconvNet authors' trained weights, in their fork's V1 format (tools/convert_release.py):
    # the inference model (BN statistics folded into scale and shift) and the stage-2 snapshot.
    Asset("deconvnet-inference", f"{DECONVNET_RELEASE_URL}/DeconvNet/DeconvNet_trainval_inference.caffemodel",
          "DeconvNet_trainval_inference.caffemodel", kind="model", locked=True, content="caffemodel",
          hint=_UNRELIABLE),
    Asset("deconvnet-stage2", f"{DECONVNET_RELEASE_URL}/stage_2_train_result/stage_2_train_result.caffemodel",
          "stage_2_train_result.caffemodel", kind="model", locked=True, content="caffemodel", hint=_UNRELIABLE),
)}
# Names that stand for several assets; "all" is every asset outside a group (what training needs).
GROUPS = {"deconvnet-release": ("deconvnet-inference", "deconvnet-stage2")}


class DownloadError(Exception):
    pass


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, asset: Asset) -> None:
    """Raises DownloadError when size or checksum differ from the asset's."""
    size = path.stat().st_size
    if asset.size is not None and size != asset.size:
        raise DownloadError(f"{path}: {size} bytes, expected {asset.size}")
    for algorithm in ("md5", "sha1"):
        expected = getattr(asset, algorithm)
        if expected:
            got = file_digest(path, algorithm)
            if got != expected:
                raise DownloadError(f"{path}: {algorithm} checksum mismatch (got {got}, expected {expected})")


def _check_gzip_yaml(path: Path) -> None:
    """A complete gzip stream of an OpenCV YAML file (the structured-edge model)."""
    from deconvnet.data.proposals import EdgeModelError, check_sed_file

    try:
        check_sed_file(path)
    except EdgeModelError as err:
        raise DownloadError(str(err)) from err


def _check_caffemodel(path: Path) -> None:
    """Parses as a Caffe NetParameter with layers."""
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(path.read_bytes())
    except Exception as err:  # protobuf's DecodeError, or a truncated message
        raise DownloadError(f"{path}: not a caffemodel ({err})") from err
    if not (net.layer or net.layers):
        raise DownloadError(f"{path}: not a caffemodel (no layers)")


CONTENT_CHECKS: dict[str, Callable[[Path], None]] = {"sed-model": _check_gzip_yaml, "caffemodel": _check_caffemodel}


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")


class LockFile:
    """Asset name -> {url, size, sha256} of its first verified download."""

    def __init__(self, path: Path = DEFAULT_LOCK_FILE) -> None:
        self.path = Path(path)

    def entries(self) -> dict:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text())
        except ValueError as err:
            raise DownloadError(f"{self.path}: unreadable lock file ({err}); fix or delete it") from err

    def check(self, asset: Asset, path: Path) -> bool:
        """True when ``path`` matches the recorded entry; False when there is
        none; DownloadError on a mismatch."""
        entry = self.entries().get(asset.name)
        if entry is None:
            return False
        size = path.stat().st_size
        digest = file_sha256(path)
        if size != entry["size"] or digest != entry["sha256"]:
            raise DownloadError(
                f"{path}: {size} bytes, sha256 {digest}, but {self.path} recorded {entry['size']} bytes, "
                f"sha256 {entry['sha256']} for {asset.name} (first downloaded from {entry['url']}). The file "
                f"differs from the first verified copy; if upstream changed on purpose, delete the "
                f"{asset.name!r} entry from {self.path} and download again")
        return True

    def record(self, asset: Asset, path: Path, url: str) -> None:
        entries = self.entries()
        entries[asset.name] = dict(url=url, size=path.stat().st_size, sha256=file_sha256(path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
        LOG.info("%s: recorded size and sha256 in %s", asset.name, self.path)


def _verify_locked(asset: Asset, path: Path, lock: LockFile, url: str) -> None:
    """The lock file's rule: match the recorded copy, or pass the content
    check and become the recorded copy."""
    if lock.check(asset, path):
        return
    if asset.content:
        CONTENT_CHECKS[asset.content](path)
    lock.record(asset, path, url)


class HTTPFailure(DownloadError):
    """The server answered with an error status; ``retry`` for 5xx and 429."""

    def __init__(self, url: str, code: int, reason: str) -> None:
        self.code = code
        self.retry = code >= 500 or code == 429
        hint = "check the address (--url NAME=URL for a mirror)" if code in (403, 404, 410) else "retrying may help"
        super().__init__(f"HTTP {code} {reason} from {url}: {hint}")


def _fetch_once(url: str, part: Path, total: int | None, timeout: float, show: bool) -> bool:
    """One request, appending to part from its current size. True when the
    server said how long the file is and all of it arrived; False when it
    gave no length (completeness is then unknown)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            # Nothing left after byte `have`: complete, or longer than the remote file.
            remote = _remote_length(err.headers.get("Content-Range"))
            if (remote if remote is not None else total) == have:
                return True
            LOG.warning("%s holds %d bytes, more than the remote file's %s: starting over", part, have,
                        remote if remote is not None else "unknown length")
            part.unlink()
            return _fetch_once(url, part, total, timeout, show)
        raise HTTPFailure(url, err.code, err.reason) from err
    with response:
        if have and response.status != 206:  # the server ignored the Range
            have = 0
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None else total
        mode = "ab" if have else "wb"
        with open(part, mode) as out, tqdm(total=expected, initial=have, unit="B", unit_scale=True,
                                            desc=part.name[:-5], disable=not show) as bar:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if expected is not None and got < expected:
        raise DownloadError(f"transfer of {url} ended early: {got} of {expected} bytes")
    return length is not None or total is not None


def _remote_length(content_range: str | None) -> int | None:
    """The total of a "bytes */N" Content-Range."""
    if content_range and "/" in content_range:
        tail = content_range.rsplit("/", 1)[1].strip()
        return int(tail) if tail.isdigit() else None
    return None


def _hint(asset: Asset) -> str:
    return f" ({asset.hint})" if asset.hint else ""


def source_url(asset: Asset, source: str) -> str:
    """The address of ``asset`` in ``source``: a URL or a local file as it
    is, or, for a folder (or a URL ending in /), the asset's file in it."""
    if "://" in source:
        return source + asset.filename if source.endswith("/") else source
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        path = path / asset.filename
    if not path.is_file():
        raise DownloadError(f"{asset.name}: --from {source}: no file {path}")
    return path.as_uri()


def download(asset: Asset, dest_dir: Path, url: str | None = None, retries: int = 3,
             timeout: float = 60, show_progress: bool = True, lock_file: Path | None = None) -> Path:
    """Fetches asset into dest_dir (resuming a .part file) and verifies it:
    against its fixed size and checksums, or, for a locked asset, against
    the lock file (default models/downloads.lock.json)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / asset.filename
    lock = LockFile(lock_file or DEFAULT_LOCK_FILE)
    url = url or asset.url
    if final.exists():
        verify(final, asset)
        if asset.locked:
            _verify_locked(asset, final, lock, url)
        LOG.info("%s: already downloaded and verified", final)
        return final
    part = final.with_name(final.name + ".part")
    complete_known = False
    for attempt in range(retries + 1):
        try:
            complete_known = _fetch_once(url, part, asset.size, timeout, show_progress)
            break
        except HTTPFailure as err:
            if not err.retry or attempt == retries:
                raise DownloadError(f"{asset.name}: {err}" + (f". Rerun to resume from {part}." if part.exists()
                                                                 else "") + _hint(asset)) from err
            LOG.warning("%s: %s (attempt %d of %d)", asset.name, err, attempt + 2, retries + 1)
        except (DownloadError, urllib.error.URLError, http.client.HTTPException, OSError) as err:
            if attempt == retries:
                resume = f" Rerun to resume from {part}." if part.exists() else ""
                raise DownloadError(f"{asset.name}: download from {url} failed after {attempt + 1} "
                                    f"attempt(s): {err}.{resume}{_hint(asset)}") from err
            LOG.warning("%s: %s; resuming (attempt %d of %d)", asset.name, err, attempt + 2, retries + 1)
    try:
        verify(part, asset)
        if asset.locked:
            _verify_locked(asset, part, lock, url)
    except DownloadError as err:
        if not complete_known:
            # No length was given: the file may be cut short, and a rerun resumes it.
            raise DownloadError(f"{err}. The server sent no length, so {part} may be incomplete: rerun to "
                                f"resume it; if the same error comes back, delete {part}") from err
        part.unlink()  # a complete but wrong file cannot be resumed into a right one
        raise
    os.replace(part, final)
    LOG.info("%s: downloaded and verified", final)
    return final


def extract(archive: Path, dest: Path) -> None:
    """Unpacks a tar archive into dest, through a temporary folder beside it."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        for item in tmp.iterdir():
            target = dest / item.name
            if target.exists():
                LOG.info("%s exists; leaving it as it is", target)
                continue
            os.rename(item, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
