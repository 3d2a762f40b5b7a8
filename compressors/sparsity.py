"""What pruning removes and what its mask costs: the patterns and lengths magnitude, wanda and sparsegpt share.

A pruner scores each weight of an (out × in) matrix and removes the lowest scores within a
comparison group, at sparsity s (the knob):
- `pattern: unstructured`: groups as the method defines them (a tensor, a row, a block), each
  losing ⌊s·n⌋ of its n weights; s snaps to the least value removing the same weights.
- `pattern: n:4` or `n:8` (N:M sparsity): every M consecutive inputs of a row keep the same
  number K = M − z of weights, z = ⌊s·M⌋ zeros; s snaps to z/M, so 2:4 and 4:8 are s = 0.5
  and the knob also reaches 3:4, 1:4, 7:8, … Inputs per row must be a multiple of M.

Description length per tensor of n weights keeping k:
- unstructured: 32·k for the kept values plus their positions as a bitmap (n bits) or as
  indices (k·⌈log₂ n⌉ bits), the smaller, and a 32-bit count; entropy-coded, the positions are
  the mask's enumerative code (compressors.coding);
- N:M: 32·k for the kept values plus log₂ C(M, K) bits per group of M, the exact index code
  of which K of the M are kept (the groups' choices enumerated together), no count (K follows
  from the knob); entropy-coded, the groups' choices coded over the C(M, K) possible ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from compressors.coding import coded_bits, log2_binomial
from compressors.registry import Compressor, DescriptionLength, Knob, Prepared
from mdl_slt.errors import UserError

Pattern = Literal["unstructured", "n:4", "n:8"]
SLACK = 1e-9  # ⌊s·n⌋ taken as ⌊s·n + SLACK⌋, so a snapped s = c/n gives back c in floating point


def group_of(pattern: str) -> int | None:
    """M of an N:M pattern; None when unstructured."""
    return None if pattern == "unstructured" else int(pattern.split(":")[1])


def removed(value: float, size: int) -> int:
    """Weights a group of `size` loses at sparsity `value`: ⌊value·size⌋."""
    return math.floor(value * size + SLACK)


def nm_levels(m: int, high: float) -> list[float]:
    """The realisable sparsities of N:M groups of m within the knob's range, the identity first."""
    return [z / m for z in range(m) if z / m <= high]


def check_groups(name: str, width: int, m: int, what: str) -> None:
    if width % m:
        raise UserError(f"{name}: pattern n:{m} needs rows whose length is a multiple of {m}, but {what} "
                        f"has rows of {width}: use pattern 'unstructured' or another n:M")


def ranks_within(scores, width: int):
    """Each score's rank (0 = lowest, ties in order) within consecutive groups of `width` of the
    flattened `scores`."""
    import torch

    groups = scores.reshape(-1, width)
    order = torch.argsort(groups, dim=1, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(width, device=order.device).expand_as(order))
    return ranks.reshape(scores.shape)


def unstructured_length(n: int, kept: int) -> tuple[float, float, float]:
    """(payload, side, entropy-coded payload) bits of a tensor of n weights keeping `kept`."""
    positions = min(n, kept * max(1, math.ceil(math.log2(n))))
    return 32.0 * kept + positions, 32.0, 32.0 * kept + coded_bits([kept, n - kept], 2, fixed_bits=positions)


def nm_length(mask, m: int) -> tuple[float, float, float]:
    """(payload, side, entropy-coded payload) bits of an N:M-pruned tensor, `mask` True where a
    weight is kept; every group of m consecutive weights keeps the same count."""
    import torch

    groups = mask.reshape(-1, m)
    keep = int(groups[0].sum())
    index = log2_binomial(m, keep)
    code = (groups.long() * (2 ** torch.arange(m, device=groups.device))).sum(dim=1)
    histogram = torch.bincount(code, minlength=2**m)
    choices = [int(histogram[c]) for c in range(2**m) if bin(c).count("1") == keep]
    payload = 32.0 * keep * len(groups)
    return payload + index * len(groups), 0.0, payload + coded_bits(choices, len(choices), fixed_bits=index * len(groups))


SPARSITY_KNOB = Knob(name="sparsity", low=0.0, high=0.99, identity=0.0, more_compression="higher", unit="of the weights zeroed",
                     description="fraction of target weights set to zero", precision=0.005)


@dataclass(frozen=True)
class Pruner(Compressor):
    """Base class of the pruners (magnitude, wanda, sparsegpt): the sparsity knob and the pattern;
    unstructured, s snaps to the least value removing as many weights from every comparison group
    (`_group_sizes`), under N:M to z/M; the mask's length from per-target parts."""

    knob: ClassVar[Knob] = SPARSITY_KNOB
    pattern: Pattern = "unstructured"

    def _group_sizes(self, prepared: Prepared) -> list[int]:
        """The sizes of the unstructured comparison groups, each losing ⌊s·n⌋ weights."""
        raise NotImplementedError

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        m = group_of(self.pattern)
        if m:
            return removed(value, m) / m
        if prepared is None:
            return value
        return max(removed(value, size) / size for size in self._group_sizes(prepared))

    def levels(self, prepared: Prepared) -> list[float] | None:
        m = group_of(self.pattern)
        return nm_levels(m, self.knob.high) if m else None

    def _check_pattern(self, prepared: Prepared) -> None:
        """Under N:M, every target's rows must split into groups of M."""
        m = group_of(self.pattern)
        for t in prepared.targets if m else []:
            check_groups(self.name, t.shape[1], m, t.name)

    def _mask_length(self, prepared: Prepared, parts) -> DescriptionLength:
        """The length from per-target (payload, side, entropy-coded payload) parts."""
        return self._length(prepared, *(sum(p[i] for p in parts) for i in range(3)))


@dataclass(frozen=True)
class RankedPruner(Pruner):
    """A pruner that ranks every weight once in `prepare` (`_rank`) and removes the lowest ranks of
    each comparison group: `_unstructured_width` weights when unstructured, M under N:M."""

    def _unstructured_width(self, t) -> int:
        raise NotImplementedError

    def _width(self, t) -> int:
        return group_of(self.pattern) or self._unstructured_width(t)

    def _group_sizes(self, prepared: Prepared) -> list[int]:
        return [self._unstructured_width(t) for t in prepared.targets]

    def _rank(self, prepared: Prepared, scores: dict) -> None:
        """Keep each target's ranks within its groups, from (out × in) `scores`."""
        self._check_pattern(prepared)
        for t in prepared.targets:
            prepared.cache[t.name] = prepared.keep(ranks_within(scores[t.name], self._width(t)))

    def _cuts(self, prepared: Prepared, value: float) -> dict:
        """Per target, the rank below which its weights are removed at sparsity `value`."""
        return {t.name: removed(value, self._width(t)) for t in prepared.targets}

    def _kept(self, prepared: Prepared, t, cut: int):
        """(out × in) mask, True where a weight stays."""
        return prepared.cache[t.name] >= cut

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        cuts = self._cuts(prepared, value)
        for t in prepared.targets:
            t.write(t.matrix() * self._kept(prepared, t, cuts[t.name]))

    def _description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        cuts, m = self._cuts(prepared, value), group_of(self.pattern)
        masks = [self._kept(prepared, t, cuts[t.name]) for t in prepared.targets]
        return self._mask_length(prepared, [nm_length(mask, m) if m else unstructured_length(mask.numel(), int(mask.sum()))
                                            for mask in masks])
