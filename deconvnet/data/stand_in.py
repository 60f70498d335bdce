"""Stand-ins for the dataset archives of docs/REPRODUCE.md, step 1, for the
rehearsal of the guide (``experiments/reproduce.sh --rehearsal``).

The synthetic images (``synthetic``) are drawn at real VOC sizes, named
with VOC's id pattern, with SBD's boundary cells in its ``.mat`` structs,
and packed as the real archives are: ``VOCtrainval_11-May-2012.tar``
(uncompressed, rooted at ``VOCdevkit/VOC2012``) and ``benchmark.tgz``
(gzip, rooted at ``benchmark_RELEASE/dataset``), under the names of
``download.ASSETS``. Unpacking them is left to ``download.extract``, the
code tools/download.py runs, so the rehearsal reads what step 1 would
leave.
"""
from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

from PIL import Image

from deconvnet.common.atomic import atomic_path
from deconvnet.data.download import ASSETS
from deconvnet.data.synthetic import SyntheticSpec, image_id, render, write_dataset

LOG = logging.getLogger(__name__)

# (width, height) of common VOC 2012 photos; 500x375 is the most frequent.
VOC_SIZES = ((500, 375), (500, 333), (375, 500), (500, 334), (333, 500), (500, 366), (500, 281),
             (486, 500), (500, 400), (500, 332))

# 24 images: VOC 18 (train 14, val 4), SBD 14 (train and val), overlapping
# VOC as the real SBD does.
REHEARSAL_SPEC = SyntheticSpec(num_images=24, seed=2015, sizes=VOC_SIZES, ids="voc", sbd_boundaries=True,
                               val_fraction=0.25, voc_fraction=0.75, sbd_start=0.4)

# Archive asset -> (the folder it holds, tarfile mode).
ARCHIVES = {"voc2012": ("VOCdevkit", "w"), "sbd": ("benchmark_RELEASE", "w:gz")}


def write_archives(downloads: Path, spec: SyntheticSpec = REHEARSAL_SPEC) -> dict[str, Path]:
    """The two dataset archives in ``downloads``, each written whole; returns
    asset name -> archive path."""
    downloads.mkdir(parents=True, exist_ok=True)
    paths = {name: downloads / ASSETS[name].filename for name in ARCHIVES}
    if all(p.exists() for p in paths.values()):
        return paths
    staging = Path(tempfile.mkdtemp(dir=downloads, prefix=".stand-in-"))
    try:
        write_dataset(staging, spec)
        for name, (folder, mode) in ARCHIVES.items():
            with atomic_path(paths[name]) as tmp, tarfile.open(tmp, mode) as tar:  # type: ignore[call-overload]
                tar.add(staging / folder, arcname=folder)
            LOG.info("%s: stand-in of %s (%d KiB)", paths[name], ASSETS[name].url,
                     paths[name].stat().st_size // 1024)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def write_test_images(folder: Path, count: int = 2, spec: SyntheticSpec = REHEARSAL_SPEC) -> list[Path]:
    """``count`` JPEGs for the test-server step, drawn after the dataset's own
    images (so none of them is in train or val)."""
    folder.mkdir(parents=True, exist_ok=True)
    test_spec = replace(spec, seed=spec.seed + 1)
    written = []
    for index in range(spec.num_images, spec.num_images + count):
        path = folder / f"{image_id(index, spec.ids)}.jpg"
        if not path.exists():
            with atomic_path(path) as tmp:
                Image.fromarray(render(index, test_spec)[0][:, :, ::-1]).save(tmp, format="JPEG", quality=95)
        written.append(path)
    return written
