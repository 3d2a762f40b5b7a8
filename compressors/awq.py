"""AWQ (Lin et al. 2023): activation-aware per-channel scaling searched on calibration tokens,
then group quantization.

Per linear layer W (out × in, see compressors.layout), with a_j = mean |X_j| the magnitude of
input j over the calibration tokens and H = 2XᵀX/N (compressors.calibration, shared with gptq,
sparsegpt and wanda), the inputs are scaled by s = a^α / √(max a^α · min a^α) before rounding:
    Ŵ = Q(W·diag(s))·diag(s)⁻¹,
α ∈ {0, 1/20, …, 19/20} (the paper's grid) chosen per layer to minimise the output error on the
calibration tokens, ½·tr(ΔW H ΔWᵀ) = mean ‖ΔW X‖², ΔW = Ŵ − W. Q is the `rtn` grid with the
same options (symmetric by default, per group of `group_size` inputs, clip ratio by weight
error), so α = 0 is round-to-nearest and the search never does worse on the calibration error.

Description length: that of `rtn` with the same grid, plus the scale vector s of every layer in
fp32 (32 bits per input), charged although a deployment may fold it into the operation before.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from compressors.calibration import input_statistics, linear_targets
from compressors.gptq import GPTQ_TARGETS, data_aware_targets
from compressors.grid import as_groups, fit_grid, from_groups
from compressors.quantize import BITS_KNOB, bit_levels, code_counts, levels_for, quantized_length
from compressors.registry import Compressor, DescriptionLength, Knob, Prepared, register
from compressors.targets import Role
from mdl_slt.errors import UserError

ALPHAS = tuple(i / 20 for i in range(20))


@register
@dataclass(frozen=True)
class AWQ(Compressor):
    """AWQ: activation-aware input scaling searched per layer, then group quantization."""

    name: ClassVar[str] = "awq"
    knob: ClassVar[Knob] = BITS_KNOB
    targets: tuple[Role, ...] = GPTQ_TARGETS
    symmetric: bool = True
    group_size: Annotated[int, Field(ge=1)] = 128
    clip_candidates: Annotated[int, Field(ge=1, le=1000)] = 50
    range_search: Literal["fast", "exhaustive"] = "fast"
    calibration_sequences: Annotated[int, Field(ge=1)] = 256

    def __post_init__(self):
        data_aware_targets(self.name, self.targets)

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        import math

        return math.log2(levels_for(value, self.symmetric))

    def levels(self, prepared: Prepared) -> list[float]:
        return bit_levels(self.symmetric)

    def prepare(self, model, calibration=None) -> Prepared:
        if calibration is None:
            raise UserError("awq needs calibration tokens to measure each layer's input magnitudes")
        prepared = self._snapshot(model, linear_targets(model, self.targets), calibration)
        statistics = input_statistics(model, prepared.targets, calibration[:self.calibration_sequences])
        for t in prepared.targets:
            prepared.cache[t.name] = statistics[t.name]
        return prepared

    def _round(self, weight, levels: int):
        """(dequantized, codes) of `weight` on the rtn grid of this compressor's options."""
        groups = as_groups(weight, "group", self.group_size)
        grid = fit_grid(groups, levels, self.symmetric, self.clip_candidates, self.range_search)
        codes = grid.encode(groups)
        return from_groups(grid.decode(codes), weight), codes

    def _quantize(self, prepared: Prepared, t, levels: int):
        """(dequantized, codes) at the α of least output error."""
        statistics = prepared.cache[t.name]
        weight = t.matrix().float()
        hessian = statistics.hessian.to(weight.device, weight.dtype)
        magnitude = statistics.abs_mean.to(weight.device, weight.dtype).clamp_min(1e-8)
        best = None
        for alpha in ALPHAS:
            s = magnitude**alpha
            s = s / (s.max() * s.min()).sqrt()
            dequantized, codes = self._round(weight * s, levels)
            dequantized = dequantized / s
            delta = dequantized - weight
            error = float(((delta @ hessian) * delta).sum())
            if best is None or error < best[0]:
                best = (error, dequantized, codes)
        return best[1], best[2]

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
        groups = sum(as_groups(t.matrix(), "group", self.group_size).shape[0] for t in prepared.targets)
        length = quantized_length(self, prepared, levels, self.symmetric, groups, prepared.cache[key])
        scales = 32.0 * sum(t.matrix().shape[1] for t in prepared.targets)
        return dataclasses.replace(length, side_bits=length.side_bits + scales)
