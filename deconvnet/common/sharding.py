"""Deterministic shards of a work list, for running one step as N processes
or as a Slurm job array: shard K of N is the K-th of N contiguous,
balanced slices (sizes differ by at most one), so the shards are disjoint,
their union is the list whatever N is, and in order they are the list.

``--shard K/N`` names one; without it, a Slurm array task takes its own
(``SLURM_ARRAY_TASK_ID`` counted from ``SLURM_ARRAY_TASK_MIN``, of
``SLURM_ARRAY_TASK_COUNT``)."""
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


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard | None:
    """The Slurm array task's shard, or None outside an array."""
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    task, first = int(env["SLURM_ARRAY_TASK_ID"]), int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
    try:
        return Shard(task - first, int(env["SLURM_ARRAY_TASK_COUNT"]))
    except ValueError as err:
        raise ValueError(f"Slurm array task {task} (first {first}, count {env['SLURM_ARRAY_TASK_COUNT']}): the "
                         "array must be a contiguous range such as --array=0-3") from err


def add_shard_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--shard", type=parse_shard, metavar="K/N",
                        help=f"only the K-th of N balanced, contiguous parts of the {what} (K from 0); default: "
                             "the Slurm array task's (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of "
                             "SLURM_ARRAY_TASK_COUNT), or all")
