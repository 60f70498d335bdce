"""Stand-ins for the downloads of docs/REPRODUCE.md, step 1, for the
rehearsal of the guide (``experiments/reproduce.sh --rehearsal``) and for
tests: the dataset archives and a structured-edge model.

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

import gzip
import logging
import shutil
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
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


# The structured-edge model's options as OpenCV's StructuredEdgeDetection reads
# them (those of Dollar and Zitnick's released model: 32-px patches predicting
# their inner 16 px, features shrunk 2x, 4 gradient orientations, a 5x5
# self-similarity grid).
SED_STAND_IN_OPTIONS = dict(stride=2, shrinkNumber=2, patchSize=32, patchInnerSize=16,
                            numberOfGradientOrientations=4, gradientSmoothingRadius=0,
                            regFeatureSmoothingRadius=2, ssFeatureSmoothingRadius=8,
                            gradientNormalizationRadius=4, selfsimilarityGridSize=5, numberOfTrees=4,
                            numberOfTreesToEvaluate=2)


def sed_model_text(seed: int = 0, depth: int = 6) -> str:
    """A random structured-edge forest in OpenCV's model format: complete
    binary trees (node n's children at 2n+1 and 2n+2, so ``childs`` holds the
    right one), random features and thresholds, and at each leaf a random
    straight edge through the 16x16 inner patch (``edgeBins`` are pixel
    indices, ``edgeBoundaries`` each node's start in them, over all trees)."""
    rng = np.random.default_rng(seed)
    o = SED_STAND_IN_OPTIONS
    channels = 2 * (o["numberOfGradientOrientations"] + 1) + 3
    cells = o["selfsimilarityGridSize"] ** 2
    features = (o["patchSize"] // o["shrinkNumber"]) ** 2 * channels + cells * (cells - 1) // 2 * channels
    nodes = 2 ** (depth + 1) - 1
    inner = o["patchInnerSize"]
    yy, xx = np.mgrid[:inner, :inner]
    trees: dict[str, list[list]] = {k: [] for k in ("childs", "featureIds", "thresholds", "edgeBoundaries",
                                                      "edgeBins")}
    start = 0
    for tree in range(o["numberOfTrees"]):
        leaf = np.arange(nodes) >= nodes // 2
        trees["childs"].append([0 if leaf[n] else 2 * n + 2 for n in range(nodes)])
        trees["featureIds"].append([0 if leaf[n] else int(rng.integers(features)) for n in range(nodes)])
        trees["thresholds"].append([0.0 if leaf[n] else round(float(rng.uniform(0, 0.3)), 4) for n in range(nodes)])
        boundaries: list[int] = []
        bins: list[int] = []
        for n in range(nodes):
            boundaries.append(start + len(bins))
            if leaf[n] and rng.random() < 0.5:
                angle = rng.uniform(0, np.pi)
                offset = rng.uniform(-4, 4)
                line = np.abs((xx - inner / 2) * np.sin(angle) - (yy - inner / 2) * np.cos(angle) - offset) < 0.7
                bins += [int(i) for i in np.flatnonzero(line.ravel())]
        if tree == o["numberOfTrees"] - 1:
            boundaries.append(start + len(bins))  # the end of the last node's bins
        start += len(bins)
        trees["edgeBoundaries"].append(boundaries)
        trees["edgeBins"].append(bins)
    lines = ["%YAML:1.0", "options:"] + [f"   {k}: {v}" for k, v in o.items()]
    for key, per_tree in trees.items():
        lines.append(f"{key}:")
        lines += [f"   - [ {', '.join(str(v) for v in values)} ]" for values in per_tree]
    return "\n".join(lines) + "\n"


def write_sed_model(path: Path, seed: int = 0) -> Path:
    """The random structured-edge model, gzipped as sed_model.yml.gz is."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(sed_model_text(seed).encode(), mtime=0))
    return path
