"""Gaussian weight noise: a perturbation probe of how far the weights can move.

w ← w + σ·rms(w)·ξ, ξ ~ N(0, I), per target tensor, σ relative to each tensor's RMS; the loss
at each σ is the mean over `draws` seeded draws (drawn on the host, so the same on any device).
Its description length is the rate of a Gaussian channel: a weight of variance rms² kept to
within noise of variance (σ·rms)² takes ½·log2(1 + 1/σ²) bits, plus an fp32 RMS per tensor;
this is a rate-distortion figure, not a file one could write, and is reported as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar

from pydantic import Field

from compressors.registry import Compressor, DescriptionLength, Knob, Prepared, register


@register
@dataclass(frozen=True)
class GaussianNoise(Compressor):
    """Gaussian weight noise, σ relative to each tensor's RMS, averaged over seeded draws."""

    name: ClassVar[str] = "noise"
    knob: ClassVar[Knob] = Knob(name="sigma", low=0.0, high=2.0, identity=0.0, more_compression="higher",
                                unit="× rms", description="noise standard deviation relative to each tensor's RMS",
                                precision=0.005)
    draws: Annotated[int, Field(ge=1, le=1000)] = 4
    seed: int = 0

    @property
    def num_draws(self) -> int:
        return self.draws

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        import torch

        gen = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + draw)
        with torch.no_grad():
            for t in prepared.targets:
                original = t.working.float()
                rms = original.pow(2).mean().sqrt()
                noise = torch.randn(t.original.shape, generator=gen, device="cpu").to(original.device)
                t.param.copy_((original + value * rms * noise).to(t.param.dtype))

    def _description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        count = sum(t.original.numel() for t in prepared.targets)
        return self._length(prepared, payload=count * 0.5 * math.log2(1 + 1 / value**2),
                            side=32.0 * len(prepared.targets))
