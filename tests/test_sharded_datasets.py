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
        if k == 2:  # as a Slurm array task (--array=4-6) would run it
            env = dict(os.environ, SLURM_ARRAY_TASK_ID="6", SLURM_ARRAY_TASK_MIN="4", SLURM_ARRAY_TASK_COUNT="3")
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
