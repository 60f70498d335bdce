"""Datasets built in shards (data_prep/build_dataset.py --shard K/N, or as a
Slurm array task) and merged by data_prep/merge_shards.py: the same records,
the same balanced index and the same data-layer batches as one unsharded
build of the same list; missing, unfinished and mismatched shards refused."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deconvnet.data.crop_db import CropDB, ShardedCropDB, open_crop_db

from helpers import ROOT, synthetic_roots, write

BUILD = ROOT / "data_prep" / "build_dataset.py"
MERGE = ROOT / "data_prep" / "merge_shards.py"


def run(script: Path, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    voc, sbd = synthetic_roots(root / "syn", 16, seed=3)
    common = ["--stage", "2", "--voc", voc, "--sbd", sbd, "--edges", "gradient", "--workers", "1", "--seed", "5",
              "--proposal-cache", root / "proposals"]
    single = run(BUILD, *common, "--out", root / "single")
    assert single.returncode == 0, single.stderr[-2000:]
    for k in range(3):
        if k == 2:  # as a Slurm array task (--array=0-2) would run it
            env = dict(os.environ, SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_TASK_MIN="0", SLURM_ARRAY_TASK_MAX="2",
                       SLURM_ARRAY_TASK_COUNT="3")
            result = run(BUILD, *common, "--out", root / "sharded", env=env)
        else:
            result = run(BUILD, *common, "--out", root / "sharded", "--shard", f"{k}/3")
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"(shard {k}/3 of " in result.stderr
    return root, common


def test_merged_shards_equal_one_build(built):
    root, _ = built
    merged = run(MERGE, root / "sharded")
    assert merged.returncode == 0, merged.stderr[-2000:]
    single, sharded = CropDB(root / "single"), open_crop_db(root / "sharded")
    assert isinstance(sharded, ShardedCropDB) and len(sharded.shards) == 3
    images = [db.manifest["images"] for db in sharded.shards]
    assert sum(images) == single.manifest["images"] and max(images) - min(images) <= 1
    assert sharded.num_records == single.num_records > 0
    assert all(db.num_records for db in sharded.shards), "a shard without records tests little"
    np.testing.assert_array_equal(sharded.index, single.index)
    for number in range(single.num_records):
        assert sharded.raw(number) == single.raw(number), f"record {number}"
    for key in ("class_counts_before", "class_counts_after", "unique_records", "index_length", "skipped"):
        assert sharded.manifest[key] == single.manifest[key], key
    # Nothing was copied: the shards are the only LMDB files.
    assert sorted(p.name for p in (root / "sharded").iterdir()) == [
        "index.npy", "manifest.json", "shard-0-of-3", "shard-1-of-3", "shard-2-of-3"]


@pytest.mark.parametrize("workers", [0, 1])
def test_the_data_layer_reads_across_shards(caffe, built, tmp_path, workers):
    """Same seed, same batches (random crops, flips and shuffled epochs)."""
    from deconvnet.data.layer_params import SegDataParams
    from deconvnet.net import nets

    root, _ = built
    assert run(MERGE, root / "sharded").returncode == 0
    batches = {}
    for name in ("single", "sharded"):
        params = SegDataParams(source=str(root / name), batch_size=5, crop_size=48, mirror=True, shuffle=True,
                               seed=9, workers=workers)
        model = write(tmp_path / f"{name}.prototxt", str(nets.seg_data_net(params)))
        net = caffe.Net(str(model), caffe.TRAIN)
        batches[name] = []
        for _ in range(7):  # more than one epoch of the index
            net.forward()
            batches[name].append((net.blobs["data"].data.copy(), net.blobs["label"].data.copy()))
        del net
    for (data_a, label_a), (data_b, label_b) in zip(batches["single"], batches["sharded"], strict=True):
        np.testing.assert_array_equal(data_a, data_b)
        np.testing.assert_array_equal(label_a, label_b)


def test_merge_refuses_missing_unfinished_and_mismatched_shards(built, tmp_path):
    root, common = built
    folder = tmp_path / "broken"
    shutil.copytree(root / "sharded" / "shard-0-of-3", folder / "shard-0-of-3")
    shutil.copytree(root / "sharded" / "shard-2-of-3", folder / "shard-2-of-3")
    result = run(MERGE, folder)
    assert result.returncode == 1 and "1 of 3 shards missing or unfinished: shard-1-of-3" in result.stderr
    assert not (folder / "index.npy").exists() and not (folder / "manifest.json").exists()
    os.rename(folder / "shard-2-of-3", folder / "shard-1-of-3.partial")
    result = run(MERGE, folder)
    assert result.returncode == 1 and "unfinished: shard-1-of-3.partial" in result.stderr, result.stderr
    shutil.rmtree(folder / "shard-1-of-3.partial")
    other = run(BUILD, *common, "--out", folder, "--shard", "1/3", "--min-iou", "0.6")
    assert other.returncode == 0, other.stderr[-2000:]
    shutil.copytree(root / "sharded" / "shard-2-of-3", folder / "shard-2-of-3")
    result = run(MERGE, folder)
    assert result.returncode == 1 and "shard-1-of-3 was built with other arguments" in result.stderr
    assert "min_iou" in result.stderr, result.stderr
    shutil.copytree(root / "sharded" / "shard-1-of-3", folder / "shard-1-of-4")
    result = run(MERGE, folder)
    assert result.returncode == 1 and "mixes shards of different counts" in result.stderr, result.stderr
    assert not (folder / "manifest.json").exists()
    # A data layer pointed at shards that were never merged says what to run.
    with pytest.raises(Exception, match="merge_shards.py"):
        open_crop_db(folder)


# --- Issue 25, items 2, 4 and 5 -----------------------------------------------------------------------------

def tree_digest(folder: Path) -> dict[str, bytes]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).digest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_shards_into_a_finished_unsharded_dataset_are_refused(built, tmp_path):
    """Item 2: the shards and their merge went through with exit 0 and
    replaced the dataset's index and manifest, orphaning its data.mdb."""
    root, common = built
    folder = tmp_path / "dataset"
    shutil.copytree(root / "single", folder)
    before = tree_digest(folder)
    result = run(BUILD, *common, "--out", folder, "--shard", "0/2")
    assert result.returncode == 1 and "holds a finished unsharded dataset" in result.stderr, result.stderr[-2000:]
    assert str(folder) in result.stderr and "Choose another --out" in result.stderr
    # Shards made elsewhere and moved in are not merged over it either.
    shutil.copytree(root / "sharded" / "shard-0-of-3", folder / "shard-0-of-3")
    result = run(MERGE, folder)
    assert result.returncode == 1 and "holds a finished unsharded dataset" in result.stderr, result.stderr
    shutil.rmtree(folder / "shard-0-of-3")
    assert tree_digest(folder) == before
    assert CropDB(folder).num_records == CropDB(root / "single").num_records


def merged_copy(built, tmp_path) -> Path:
    root, _ = built
    folder = tmp_path / "merged"
    folder.mkdir()
    for k in range(3):
        shutil.copytree(root / "sharded" / f"shard-{k}-of-3", folder / f"shard-{k}-of-3")
    result = run(MERGE, folder)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder


def test_a_shard_rebuilt_after_the_merge_is_refused_at_open(built, tmp_path):
    """Item 4: the dataset still opened, index entries pointed at missing or
    shifted crops, and training ran on it until a worker crashed."""
    root, common = built
    folder = merged_copy(built, tmp_path)
    open_crop_db(folder)                                     # as merged: it opens
    # Rebuilt with other annotations' effect (other records) ...
    shutil.rmtree(folder / "shard-1-of-3")
    other = run(BUILD, *common, "--out", folder, "--shard", "1/3", "--min-iou", "0.7")
    assert other.returncode == 0, other.stderr[-2000:]
    with pytest.raises(Exception, match=r"shard-1-of-3 was rebuilt after .* was merged.*merge_shards.py"):
        open_crop_db(folder)
    # ... and rebuilt alike, with as many records: caught by its manifest's fingerprint.
    shutil.rmtree(folder / "shard-1-of-3")
    same = run(BUILD, *common, "--out", folder, "--shard", "1/3")
    assert same.returncode == 0, same.stderr[-2000:]
    assert CropDB(folder / "shard-1-of-3").num_records == CropDB(root / "sharded" / "shard-1-of-3").num_records
    with pytest.raises(Exception, match="shard-1-of-3 was rebuilt after"):
        open_crop_db(folder)
    # python_layers/seg_data.py opens its source with open_crop_db: it stops with this message.
    assert run(MERGE, folder).returncode == 0               # merged again: it opens
    assert open_crop_db(folder).num_records == CropDB(root / "single").num_records


def test_a_copied_shard_folder_is_refused(built, tmp_path):
    """Item 5: cp -a shard-0-of-3 shard-1-of-3 merged as 3 shards, with
    shard 0's records twice."""
    folder = merged_copy(built, tmp_path)
    (folder / "manifest.json").unlink()
    (folder / "index.npy").unlink()
    shutil.rmtree(folder / "shard-1-of-3")
    shutil.copytree(folder / "shard-0-of-3", folder / "shard-1-of-3")
    result = run(MERGE, folder)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "shard-1-of-3 holds shard 0 of 3 by its own manifest" in result.stderr, result.stderr
    assert not (folder / "manifest.json").exists() and not (folder / "index.npy").exists()
