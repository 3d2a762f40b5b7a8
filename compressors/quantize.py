"""Uniform round-to-nearest quantization (`rtn`): the compressibility paper's method, and its kin.

With N ≈ 2^b levels per group (see compressors.grid; even N for a symmetric grid, see
`levels_for`), fractional bit widths b are realised through the level count, so critical bits
are not limited to integers; the realisable widths are log₂ N for every admissible N. Default:
the paper's symmetric per-tensor grid. The clip ratio is chosen per group to minimise weight
error (`range_by: mse`, fast), or, paper-faithful, as one ratio for the whole model that
minimises the loss on calibration tokens at each bit width (`range_by: loss`, 10 loss
evaluations per width).

Description length: payload n·log₂ N bits; side information per group an fp32 scale (and an
asymmetric grid's zero point at the code width); untouched parameters at 32 bits. The
entropy-coded payload codes each tensor's integer codes with compressors.coding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from compressors import layout
from compressors.coding import coded_bits
from compressors.grid import as_groups, fit_grid, grid_at, group_count, rounded, side_bits_per_group
from compressors.registry import Compressor, Cost, DescriptionLength, Knob, Prepared, register
from mdl_slt.errors import UserError

BITS_KNOB = Knob(name="bits", low=1.0, high=16.0, identity=32.0, more_compression="lower", unit="bits per weight",
                 description="bits per weight, log2 of the level count (fractional allowed); 32 = unquantized",
                 precision=0.05)
LOSS_RANGE_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4)
CALIBRATION_SEQUENCES = 16


def levels_for(bits: float, symmetric: bool = True) -> int:
    """Level count realising `bits`: N = round(2^b), even for a symmetric grid.

    An odd symmetric grid spends a level on zero and measurably loses to both even neighbours
    (on micro-pythia-230k@step500: 13 levels +0.066 nats, 12 and 14 levels +0.041 and +0.034),
    so a loss curve over all N zig-zags; even N (pairs at ±(k+½)s) keeps it monotone and
    contains every integer bit width.
    """
    if symmetric:  # halves round up: a tie goes to the less compressing count
        return max(2, 2 * math.floor(2.0**bits / 2 + 0.5))
    return max(2, math.floor(2.0**bits + 0.5))


def bit_levels(symmetric: bool) -> list[float]:
    """Every realisable width log₂ N within the knob's range, least compressing (16 bits) first."""
    top = 2 ** int(BITS_KNOB.high)
    return [math.log2(n) for n in range(top, 1, -2 if symmetric else -1)]


def code_counts(codes, levels: int) -> list[int]:
    import torch

    return torch.bincount(codes.long().reshape(-1), minlength=levels).tolist()


def quantized_length(compressor, prepared: Prepared, levels: int, symmetric: bool, groups: int,
                     counts: list[list[int]]) -> DescriptionLength:
    """Nominal and entropy-coded length of integer codes at `levels` (per-tensor `counts`), with an
    fp32 scale (and an asymmetric zero point) per group: shared by rtn and gptq."""
    count = sum(t.original.numel() for t in prepared.targets)
    return compressor._length(prepared, payload=count * math.log2(levels),
                              side=groups * side_bits_per_group(levels, symmetric),
                              entropy=sum(coded_bits(c, levels) for c in counts))


@dataclass(frozen=True)
class GridQuantizer(Compressor):
    """Base class of the quantizers on compressors.grid's grids (rtn, gptq, awq): the knob snaps to
    log₂ N of an admissible level count; `apply` writes each target's dequantized weights from
    `_quantize` and keeps its code counts, from which `_description_length` counts (`quantized_length`
    with a scale per group of `granularity` and `group_size`), computing them from the originals where
    no `apply` did."""

    knob: ClassVar[Knob] = BITS_KNOB
    symmetric: bool = True

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        return math.log2(levels_for(value, self.symmetric))

    def levels(self, prepared: Prepared) -> list[float]:
        return bit_levels(self.symmetric)

    def _quantize(self, prepared: Prepared, t, levels: int):
        """(dequantized (out × in) weight, integer codes) of target `t` at `levels`."""
        raise NotImplementedError

    def _group_count(self, prepared: Prepared) -> int:
        """Groups with a scale of their own, over all targets (per `granularity` and `group_size`)."""
        return sum(group_count(as_groups(layout.matrix(t.original, t.module), self.granularity, self.group_size))
                   for t in prepared.targets)

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        levels = levels_for(value, self.symmetric)
        counts = []
        for t in prepared.targets:
            dequantized, codes = self._quantize(prepared, t, levels)
            t.write(dequantized)
            counts.append(code_counts(codes, levels))
        prepared.cache[("counts", levels)] = counts

    def _description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        levels = levels_for(value, self.symmetric)
        key = ("counts", levels)
        if key not in prepared.cache:  # from the originals alone; the model is not touched
            prepared.cache[key] = [code_counts(self._quantize(prepared, t, levels)[1], levels)
                                   for t in prepared.targets]
        return quantized_length(self, prepared, levels, self.symmetric, self._group_count(prepared),
                                prepared.cache[key])


@register
@dataclass(frozen=True)
class RoundToNearest(GridQuantizer):
    """Uniform round-to-nearest quantization: symmetric/asymmetric, tensor/channel/group scales."""

    name: ClassVar[str] = "rtn"
    granularity: Literal["tensor", "channel", "group"] = "tensor"
    group_size: Annotated[int, Field(ge=1)] = 128
    range_by: Literal["mse", "loss"] = "mse"
    clip_candidates: Annotated[int, Field(ge=1, le=1000)] = 50
    range_search: Literal["fast", "exhaustive"] = "fast"

    def cost(self) -> Cost:
        if self.range_by == "loss":
            return Cost(1, f"{len(LOSS_RANGE_RATIOS)} calibration-loss evaluations of {CALIBRATION_SEQUENCES} "
                           "sequences (range_by: loss)")
        return Cost(1)

    def prepare(self, model, calibration=None) -> Prepared:
        if self.range_by == "loss" and calibration is None:
            raise UserError("rtn with range_by 'loss' needs calibration tokens")
        return super().prepare(model, calibration)

    def _codes(self, prepared: Prepared, t, levels: int, ratio: float | None):
        """(dequantized (out × in) weight, integer codes) of target `t` at `levels`; clip ratio per
        group by weight error, or the one given."""
        def grid_of(groups):
            if ratio is None:
                return fit_grid(groups, levels, self.symmetric, self.clip_candidates, self.range_search)
            return grid_at(groups, levels, self.symmetric, ratio)

        return rounded(as_groups(t.matrix(), self.granularity, self.group_size), t.matrix(), grid_of)

    def _ratio(self, prepared: Prepared, levels: int) -> float | None:
        """None (per-group weight-error fit), or the model-wide ratio of least calibration loss."""
        if self.range_by == "mse":
            return None
        key = ("ratio", levels)
        if key not in prepared.cache:
            prepared.cache[key] = self._loss_ratio(prepared, levels)
        return prepared.cache[key]

    def _loss_ratio(self, prepared: Prepared, levels: int) -> float:
        """Try each ratio of LOSS_RANGE_RATIOS on the model; the parameters are put back exactly as
        they were found, so this is safe inside an `applied` block."""
        import torch

        from mdl_slt.compute.loss import evaluate_loss

        tokens = prepared.calibration[:CALIBRATION_SEQUENCES]
        found = [t.param.detach().clone() for t in prepared.targets]
        losses = {}
        try:
            for ratio in LOSS_RANGE_RATIOS:
                for t in prepared.targets:
                    t.write(self._codes(prepared, t, levels, ratio)[0])
                losses[ratio] = evaluate_loss(prepared.model, tokens)
        finally:
            with torch.no_grad():
                for t, values in zip(prepared.targets, found):
                    t.param.copy_(values)
        return min(losses, key=losses.get)

    def _quantize(self, prepared: Prepared, t, levels: int):
        return self._codes(prepared, t, levels, self._ratio(prepared, levels))
