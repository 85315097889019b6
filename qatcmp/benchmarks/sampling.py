"""Seeded question sampling shared by the benchmarks.

The order is a fixed permutation for a seed, and a sample of N is its first N entries: a
larger N extends a smaller one (so a run can be grown later), and every model gets the same
questions, which is what makes the comparison paired.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def seeded_order(items: Sequence[T], seed: int, key: Callable[[T], str]) -> list[T]:
    """A permutation that depends only on the seed and the items' ids (not input order)."""
    ordered = sorted(items, key=key)
    random.Random(seed).shuffle(ordered)
    return ordered


def stratified_order(
    items: Sequence[T], seed: int, key: Callable[[T], str], stratum: Callable[[T], str]
) -> list[T]:
    """A permutation whose every prefix holds each stratum in proportion to its size.

    Each stratum is shuffled; its i-th member of n gets the position (i + u) / n with u a
    seeded jitter in [0, 1), and all items are sorted by position. Any prefix of length N then
    holds about N * n_c / total items of stratum c (within one of the proportional share).
    """
    rng = random.Random(seed)
    groups: dict[str, list[T]] = defaultdict(list)
    for item in sorted(items, key=key):
        groups[stratum(item)].append(item)
    positioned: list[tuple[float, float, T]] = []
    for name in sorted(groups):
        members = groups[name]
        rng.shuffle(members)
        n = len(members)
        jitter = rng.random()
        for i, item in enumerate(members):
            positioned.append(((i + jitter) / n, rng.random(), item))
    positioned.sort(key=lambda entry: (entry[0], entry[1]))
    return [item for _, _, item in positioned]
