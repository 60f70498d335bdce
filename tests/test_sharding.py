"""Shards of a work list (deconvnet.common.sharding): disjoint, balanced,
their union in order is the list for every N; --shard parsing and the
Slurm array environment."""
from __future__ import annotations

import argparse

import pytest

from deconvnet.common.sharding import Shard, parse_shard, shard_from_env


@pytest.mark.parametrize("length", [0, 1, 2, 7, 12, 37])
@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_shards_are_disjoint_balanced_and_complete(length, count):
    items = [f"img{i:03d}" for i in range(length)]
    parts = [Shard(k, count).take(items) for k in range(count)]
    assert [x for part in parts for x in part] == items          # union, in order, nothing twice
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == length
    # By hand: 7 items in 3 shards are 2, 2, 3 long.
    if (length, count) == (7, 3):
        assert parts == [items[0:2], items[2:4], items[4:7]]


def test_shard_text_and_range():
    assert parse_shard("2/5") == Shard(2, 5) and str(Shard(2, 5)) == "2/5"
    for bad in ("5/5", "-1/3", "a/b", "3", "1/0", "1/2/3"):
        with pytest.raises(argparse.ArgumentTypeError, match="K/N"):
            parse_shard(bad)


def test_slurm_array_environment():
    assert shard_from_env({}) is None
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}) == Shard(2, 3)
    # --array=1-4: ids 1..4 are shards 0..3.
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1",
                           "SLURM_ARRAY_TASK_COUNT": "4"}) == Shard(3, 4)
    # --array=0,5 (not a range): task 5 of a count of 2 is refused with the fix.
    with pytest.raises(ValueError, match="contiguous range"):
        shard_from_env({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "2"})
