"""AWQ (Lin et al. 2023): activation-aware per-channel scaling searched on calibration tokens,
then group quantization.

Per linear layer W (out × in, see compressors.layout), with a_j = mean |X_j| the magnitude of
input j over the calibration tokens and H = 2XᵀX/N (compressors.calibration, shared with gptq,
sparsegpt and wanda), the inputs are scaled by s = a^α / √(max a^α · min a^α) before rounding:
    Ŵ = Q(W·diag(s))·diag(s)⁻¹,
α ∈ {0, 1/20, …, 19/20} (the paper's grid) chosen per layer to minimise the output error on the
calibration tokens, ½·tr(ΔW H ΔWᵀ) = mean ‖ΔW X‖², ΔW = Ŵ − W, with Q the plain min–max grid as
in the paper's scale search. The weights are then quantized on the `rtn` grid with the same
options (symmetric by default, per group of `group_size` inputs, clip ratio by weight error) at
that α, or at α = 0 (round-to-nearest) where that has the smaller output error, so AWQ never does
worse than rtn on the calibration error.

Description length: that of `rtn` with the same grid, plus the scale vector s of every layer in
fp32 (32 bits per input), charged although a deployment may fold it into the operation before.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from compressors.calibration import DataAware
from compressors.grid import as_groups, fit_grid, grid_at, rounded
from compressors.quantize import GridQuantizer
from compressors.registry import DescriptionLength, Prepared, register

ALPHAS = tuple(i / 20 for i in range(20))


@register
@dataclass(frozen=True)
class AWQ(DataAware, GridQuantizer):
    """AWQ: activation-aware input scaling searched per layer, then group quantization."""

    name: ClassVar[str] = "awq"
    granularity: ClassVar[str] = "group"
    group_size: Annotated[int, Field(ge=1)] = 128
    clip_candidates: Annotated[int, Field(ge=1, le=1000)] = 50
    range_search: Literal["fast", "exhaustive"] = "fast"

    def prepare(self, model, calibration=None) -> Prepared:
        prepared, statistics = self._with_statistics(model, calibration)
        for t in prepared.targets:
            prepared.cache[t.name] = statistics[t.name]
        return prepared

    def _round(self, weight, levels: int, clip: bool):
        """(dequantized, codes) of `weight` on this compressor's grid: the `rtn` grid with its clip
        search, or the plain min–max grid (`clip` False) the scale search uses."""
        def grid_of(groups):
            if clip:
                return fit_grid(groups, levels, self.symmetric, self.clip_candidates, self.range_search)
            return grid_at(groups, levels, self.symmetric, 1.0)

        return rounded(as_groups(weight, self.granularity, self.group_size), weight, grid_of)

    def _quantize(self, prepared: Prepared, t, levels: int):
        """(dequantized, codes): α searched on the min–max grid, then the clipped grid at that α or at
        α = 0 (round-to-nearest), whichever has the smaller output error."""
        statistics = prepared.cache[t.name]
        weight = t.matrix().float()
        hessian = statistics.hessian.to(weight.device, weight.dtype)
        magnitude = statistics.abs_mean.to(weight.device, weight.dtype).clamp_min(1e-8)

        def scaled(alpha: float, clip: bool):
            s = magnitude**alpha
            s = s / (s.max() * s.min()).sqrt()
            dequantized, codes = self._round(weight * s, levels, clip)
            dequantized = dequantized / s
            delta = dequantized - weight
            return float(((delta @ hessian) * delta).sum()), dequantized, codes

        alpha = min(ALPHAS, key=lambda a: scaled(a, clip=False)[0])
        clipped = {a: scaled(a, clip=True) for a in {alpha, 0.0}}  # a tie goes to α = 0
        return clipped[min(clipped, key=lambda a: (clipped[a][0], a))][1:]

    def _description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        length = super()._description_length(prepared, value)
        scales = 32.0 * sum(t.shape[1] for t in prepared.targets)
        return dataclasses.replace(length, side_bits=length.side_bits + scales)
