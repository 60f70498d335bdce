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
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "3",
                           "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_STEP": "1"}) == Shard(3, 4)


# What Slurm sets (sbatch(1), OUTPUT ENVIRONMENT VARIABLES) for arrays that are not 0..N-1.
NOT_ZERO_TO_N = {
    "--array=5 (one task resubmitted)": dict(ID="5", COUNT="1", MIN="5", MAX="5", STEP="1"),
    "--array=0-7:2, task 2": dict(ID="2", COUNT="4", MIN="0", MAX="6", STEP="2"),
    "--array=0-7:2, task 6": dict(ID="6", COUNT="4", MIN="0", MAX="6", STEP="2"),
    "--array=1-4": dict(ID="4", COUNT="4", MIN="1", MAX="4", STEP="1"),
    "--array=0,3,7": dict(ID="3", COUNT="3", MIN="0", MAX="7"),
}


@pytest.mark.parametrize("array", NOT_ZERO_TO_N)
def test_arrays_other_than_zero_to_n_are_refused_with_the_recipe(array):
    """Issue 25, item 3: these were read as shard 0 of 1 (the whole list) or
    as shards past the count; each is refused with how to resubmit."""
    env = {f"SLURM_ARRAY_TASK_{k}": v for k, v in NOT_ZERO_TO_N[array].items()}
    with pytest.raises(ValueError, match=r"array 0-\(N-1\).*the sbatch scripts of experiments/slurm/ take it"):
        shard_from_env(env)


def test_a_task_id_that_is_not_a_number_is_named():
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID='abc' is not a number"):
        shard_from_env({"SLURM_ARRAY_TASK_ID": "abc", "SLURM_ARRAY_TASK_COUNT": "2"})
