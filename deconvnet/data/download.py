"""Downloads of the datasets and weights, resumable and verified.

A file is fetched into ``<name>.part`` (resumed with an HTTP Range request
when one exists), its size and checksum are checked, and only then is it
renamed to its final name. So a file under its final name is always whole.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

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


ASSETS = {a.name: a for a in (
    Asset("voc2012", "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
          "VOCtrainval_11-May-2012.tar", size=1_999_639_040, md5="6cd6e144f989b92b3379bac3b3de84fd"),
    Asset("sbd", "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
          "benchmark.tgz", "benchmark.tgz", size=1_419_539_633, md5="82b4d87ceb2ed10f6038a1cba92111cb"),
    Asset("vgg16", "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel",
          "VGG_ILSVRC_16_layers.caffemodel", sha1="9363e1f6d65f7dba68c4f27a1e62105cdf6c4e24", kind="model"),
    Asset("fcn8s", "http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel",
          "fcn8s-heavy-pascal.caffemodel", sha1="c449ea74dd7d83751d1357d6a8c323fcf4038962", kind="model"),
)}


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


def _fetch_once(url: str, part: Path, total: int | None, timeout: float, show: bool) -> None:
    """One request, appending to part from its current size."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have and total == have:  # already complete
            return
        raise
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


def download(asset: Asset, dest_dir: Path, url: str | None = None, retries: int = 3,
             timeout: float = 60, show_progress: bool = True) -> Path:
    """Fetches asset into dest_dir (resuming a .part file) and verifies it."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / asset.filename
    if final.exists():
        verify(final, asset)
        LOG.info("%s: already downloaded and verified", final)
        return final
    part = final.with_name(final.name + ".part")
    url = url or asset.url
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, asset.size, timeout, show_progress)
            break
        except (DownloadError, urllib.error.URLError, http.client.HTTPException, OSError) as err:
            if attempt == retries:
                raise DownloadError(f"{asset.name}: download from {url} failed after {attempt + 1} "
                                    f"attempt(s): {err}. Rerun to resume from {part}.") from err
            LOG.warning("%s: %s; resuming (attempt %d of %d)", asset.name, err, attempt + 2, retries + 1)
    try:
        verify(part, asset)
    except DownloadError:
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
