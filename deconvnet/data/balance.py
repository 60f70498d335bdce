"""Class balancing by repetition (docs/PAPER.md, section 2): examples of rarer classes
are repeated until every class has as many as the most frequent one, at most
``max_repeat`` times each. The result is an index of record numbers in a
seeded shuffled order; repeats refer to the same stored record."""
from __future__ import annotations

import numpy as np


def class_histogram(classes: np.ndarray, num_classes: int = 21) -> np.ndarray:
    return np.bincount(np.asarray(classes, dtype=np.int64), minlength=num_classes)


def balanced_index(classes: np.ndarray, max_repeat: float | None = None, seed: int = 0,
                   shuffle: bool = True) -> np.ndarray:
    """Record numbers (int64), each class repeated up to the largest class's
    count (capped at max_repeat x its own count)."""
    classes = np.asarray(classes, dtype=np.int64)
    rng = np.random.default_rng(seed)
    present = np.unique(classes)
    if present.size == 0:
        return np.zeros(0, np.int64)
    target = max(int(np.sum(classes == c)) for c in present)
    parts = []
    for c in present:
        members = np.nonzero(classes == c)[0]
        want = target if max_repeat is None else min(target, int(max_repeat * len(members)))
        want = max(want, len(members))
        whole, rest = divmod(want, len(members))
        parts.append(np.tile(members, whole))
        if rest:
            parts.append(rng.choice(members, size=rest, replace=False))
    index = np.concatenate(parts)
    if shuffle:
        rng.shuffle(index)
    return index
