"""Uniform symmetric round-to-nearest quantization (the compressibility paper's method).

With N = max(2, round(2^b)) levels, a tensor is stored as codes q ∈ {0..N−1} and one fp32 scale s;
it decodes to s·(q − (N−1)/2), a grid symmetric about zero (odd N includes zero). Fractional bit
widths b are realised through the level count, so the critical bits are not limited to integers.
The clipping range c = α·max|w| (s = 2c/(N−1)) is chosen per tensor to minimise ‖w − Q(w)‖².

Description length: payload n·log2 N bits, side information 32 bits per tensor (its scale),
untouched parameters at 32 bits; the entropy-coded payload counts the codes' empirical entropy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from compressors.registry import Compressor, DescriptionLength, Knob, Prepared, entropy_bits, register

SCALE_BITS = 32


def levels_for(bits: float) -> int:
    return max(2, round(2.0**bits))


def quantize_symmetric(weight, levels: int, clip_ratios):
    """Quantize `weight` onto a symmetric `levels`-point grid, clip ratio chosen from `clip_ratios`.

    Returns (dequantized tensor, integer codes, scale). Pure tensor math, no model knowledge.
    """
    import torch

    w = weight.detach().float().reshape(-1)
    peak = w.abs().max()
    if peak == 0:
        return weight.detach().clone(), torch.full_like(w, (levels - 1) // 2, dtype=torch.long), 0.0
    half = (levels - 1) / 2
    best = None
    for ratio in clip_ratios:
        scale = 2 * ratio * peak / (levels - 1)
        codes = torch.clamp(torch.round(w / scale + half), 0, levels - 1)
        err = torch.sum((w - scale * (codes - half)) ** 2)
        if best is None or err < best[0]:
            best = (err, scale, codes)
    _, scale, codes = best
    dequantized = (scale * (codes - half)).reshape(weight.shape).to(weight.dtype)
    return dequantized, codes.long(), float(scale)


@register
@dataclass(frozen=True)
class SymmetricRTN(Compressor):
    name: ClassVar[str] = "rtn"
    knob: ClassVar[Knob] = Knob(
        name="bits", low=1.0, high=16.0, identity=32.0, more_compression="lower", unit="bits",
        description="bits per weight, log2 of the level count (fractional allowed); 32 = unquantized",
    )
    clip_candidates: int = 50

    def snap(self, value: float) -> float:
        return math.log2(levels_for(value))

    def _clip_ratios(self):
        return [(i + 1) / self.clip_candidates for i in range(self.clip_candidates)]

    def apply(self, model, prepared: Prepared, value: float) -> None:
        import torch

        levels = levels_for(value)
        entropy = 0.0
        with torch.no_grad():
            for t in prepared.targets:
                dequantized, codes, _ = quantize_symmetric(t.original, levels, self._clip_ratios())
                t.param.copy_(dequantized)
                entropy += entropy_bits(torch.bincount(codes, minlength=levels).tolist())
        prepared.cache[levels] = entropy

    def description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        if value == self.knob.identity:
            return self.uncompressed_bits(prepared)
        levels = levels_for(value)
        if levels not in prepared.cache:
            self.apply(None, prepared, value)
            self.restore(prepared)
        count = sum(t.original.numel() for t in prepared.targets)
        return DescriptionLength(
            payload_bits=count * math.log2(levels),
            side_bits=SCALE_BITS * len(prepared.targets),
            untouched_bits=32.0 * prepared.untouched_params,
            entropy_payload_bits=prepared.cache[levels],
        )
