"""Kept-rank fractions and the ranks they realise, for every factorising compressor.

A fraction f gives factorised part i (a matrix, or a mode of a tensor) the rank
k_i = min(c_i, max(1, ⌈f·n_i⌉)), n_i its full size and c_i the largest rank it can take. Many f
give the same ranks, so the same compressed model: `snap` maps f to the one value standing for
all of them, the top of their interval (the least k_i/n_i over parts not at their cap, 1 when
every part is), and `levels` lists every such value. The critical search bisects over that
list, so no two evaluations ever compress a model identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TOLERANCE = 1e-9  # k/n·n must give back k despite rounding


@dataclass(frozen=True)
class FractionRanks:
    sizes: tuple[int, ...]  # n_i
    caps: tuple[int, ...]  # c_i ≤ n_i

    def ranks(self, fraction: float) -> list[int]:
        return [min(c, max(1, math.ceil(fraction * n - TOLERANCE))) for n, c in zip(self.sizes, self.caps)]

    def snap(self, fraction: float) -> float:
        binding = [k / n for k, n, c in zip(self.ranks(fraction), self.sizes, self.caps) if k < c]
        return min(binding, default=1.0)

    def levels(self) -> list[float]:
        """Every distinct model's fraction, least compressing (1) first."""
        values = {k / n for n, c in zip(self.sizes, self.caps) for k in range(1, c)} | {1.0}
        return sorted(values, reverse=True)


def shortening(levels: list[float], saves) -> float:
    """The largest level (of `levels`, identity first, least compressing first) whose code is
    shorter than the uncompressed model's, given `saves(level)`, monotone along the list; a
    setting that would not shorten the description is no compression at all (the identity)."""
    low, high = 1, len(levels)
    while low < high:
        middle = (low + high) // 2
        if saves(levels[middle]):
            high = middle
        else:
            low = middle + 1
    return levels[low] if low < len(levels) else -math.inf
