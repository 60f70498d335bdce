"""Deterministic shards of a work list, for running one step as N processes
or as a Slurm job array: shard K of N is the K-th of N contiguous,
balanced slices (sizes differ by at most one), so the shards are disjoint,
their union is the list whatever N is, and in order they are the list.

``--shard K/N`` names one (the sbatch scripts of experiments/slurm/ pass
``--shard $SLURM_ARRAY_TASK_ID/N`` with the count they are given, so any
list of task ids works: a resubmitted ``--array=5``, ``0,3,7``). Without
it, a Slurm array task takes its own only from an array ``0-(N-1)``: its
``SLURM_ARRAY_TASK_ID`` of ``SLURM_ARRAY_TASK_COUNT``. Any other array
(one resubmitted task is an array of count 1) is refused with the recipe,
since its count is not the number of shards."""
from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int  # K, from 0
    count: int  # N

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= K < N")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def bounds(self, length: int) -> tuple[int, int]:
        """[start, end) of this shard in a list of ``length``."""
        return self.index * length // self.count, (self.index + 1) * length // self.count

    def take(self, items: Sequence[T]) -> list[T]:
        start, end = self.bounds(len(items))
        return list(items[start:end])


def parse_shard(text: str) -> Shard:
    """An argparse type: ``K/N`` with 0 <= K < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
        return Shard(index, count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N (such as 0/4), got {text!r}") from None


SLURM_ARRAY = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
               "SLURM_ARRAY_TASK_STEP")
RESUBMIT = ("to run some tasks of an N-task array again (a resubmitted --array=5, or 0,3,7), give the count: "
            "the sbatch scripts of experiments/slurm/ take it as their first argument (sbatch --array=5 "
            "experiments/slurm/infer.sbatch N ...), the tools as --shard $SLURM_ARRAY_TASK_ID/N")


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard | None:
    """The Slurm array task's shard, or None outside an array; ValueError
    (with the recipe) for an array that is not 0..COUNT-1."""
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    values = {}
    for name in SLURM_ARRAY:
        text = env.get(name)
        if text is None:
            continue
        try:
            values[name] = int(text)
        except ValueError:
            raise ValueError(f"{name}={text!r} is not a number; run the tool inside a Slurm array task, or give "
                             "--shard K/N") from None
    task, count = values["SLURM_ARRAY_TASK_ID"], values["SLURM_ARRAY_TASK_COUNT"]
    first, last = values.get("SLURM_ARRAY_TASK_MIN", 0), values.get("SLURM_ARRAY_TASK_MAX", count - 1)
    if first != 0 or last != count - 1 or values.get("SLURM_ARRAY_TASK_STEP", 1) != 1 or not 0 <= task < count:
        raise ValueError(f"Slurm array task {task} of an array {first}-{last} with {count} task(s) is not shard "
                         f"{task} of {count}: the shard count is known only for an array 0-(N-1); {RESUBMIT}")
    return Shard(task, count)


def add_shard_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--shard", type=parse_shard, metavar="K/N",
                        help=f"only the K-th of N balanced, contiguous parts of the {what} (K from 0); default: "
                             "the Slurm array task's (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of "
                             "SLURM_ARRAY_TASK_COUNT), or all")
