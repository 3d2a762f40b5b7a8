"""HQQ (Badri & Shaji 2023): calibration-free quantization by half-quadratic optimisation, through
the `hqq` package.

Each weight (out × in, see compressors.layout) is quantized in groups of `group_size`
consecutive weights of its rows read in order (hqq's own grouping) to b-bit codes on an asymmetric grid, W ≈ s·(q − z); with the scale s from
the group's range, the zero point z (a float) is found by HQQ's half-quadratic solver, which
minimises an ℓp (p < 1) norm of the weight error, robust to outliers, without data. `hqq`
(0.2.8) installs and runs on a CPU with our torch, so the package's own solver is used
(`Quantizer.quantize(..., optimize=True)`, fp32). The knob's widths are the package's integer
ones: 8, 6, 5, 4, 3, 2, 1.

Description length: b bits per weight; per group the scale and the zero point at their stored
width, fp32 (32 bits each); entropy-coded, each tensor's codes (compressors.coding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from pydantic import Field

from compressors.coding import coded_bits
from compressors.grid import consecutive, from_groups, group_count
from compressors.quantize import code_counts
from compressors.registry import Compressor, DescriptionLength, Knob, Prepared, register
from mdl_slt.errors import UserError

WIDTHS = (8, 6, 5, 4, 3, 2, 1)  # hqq's integer widths, least compressing first
INSTALL = "pip install 'mdl-slt[hqq]' (or bash setup.sh test)"


def hqq_roundtrip(groups, bits: int):
    """(dequantized, codes) of (G, L) `groups`, one HQQ grid per group."""
    import logging
    import warnings

    import torch

    logging.getLogger("hqq").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # hqq 0.2.8 defines TorchScript methods, which torch deprecates
            warnings.simplefilter("ignore", DeprecationWarning)
            from hqq.core.quantize import Quantizer
    except ImportError:
        raise UserError(f"the hqq compressor needs the hqq package: {INSTALL}") from None
    codes, meta = Quantizer.quantize(groups.contiguous(), nbits=bits, channel_wise=True, group_size=groups.shape[1],
                                     optimize=True, axis=1, bitpack=False, compute_dtype=torch.float32,
                                     device=str(groups.device))
    return ((codes - meta["zero"]) * meta["scale"]).reshape(groups.shape), codes.reshape(groups.shape)


@register
@dataclass(frozen=True)
class HalfQuadratic(Compressor):
    """HQQ: calibration-free asymmetric group quantization, its zero points by half-quadratic optimisation."""

    name: ClassVar[str] = "hqq"
    knob: ClassVar[Knob] = Knob(name="bits", low=1.0, high=8.0, identity=32.0, more_compression="lower", unit="bits per weight",
                                description="bits per weight, one of hqq's widths 8, 6, 5, 4, 3, 2, 1; 32 = unquantized",
                                precision=1.0)
    extra: ClassVar[tuple[str, str]] = ("hqq", INSTALL)
    group_size: Annotated[int, Field(ge=1)] = 64

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        """The widest of hqq's widths not above `value` (1 below it)."""
        return float(next((w for w in WIDTHS if w <= value + 1e-9), WIDTHS[-1]))

    def levels(self, prepared: Prepared) -> list[float]:
        return [float(w) for w in WIDTHS]

    def _groups(self, weight) -> list:
        """The (out × in) weight in groups of `group_size` consecutive weights, the last one shorter
        where `group_size` does not divide its size."""
        return consecutive(weight.float().reshape(1, -1), self.group_size)

    def _quantize(self, t, bits: int):
        import torch

        found = [hqq_roundtrip(groups, bits) for groups in self._groups(t.matrix())]
        return (from_groups([dequantized for dequantized, _ in found], t.matrix()),
                torch.cat([codes.reshape(-1) for _, codes in found]))

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        bits = int(value)
        counts = []
        for t in prepared.targets:
            dequantized, codes = self._quantize(t, bits)
            t.write(dequantized)
            counts.append(code_counts(codes, 2**bits))
        prepared.cache[bits] = counts

    def _description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        bits = int(value)
        if bits not in prepared.cache:  # from the originals alone; the model is not touched
            prepared.cache[bits] = [code_counts(self._quantize(t, bits)[1], 2**bits) for t in prepared.targets]
        count = sum(t.original.numel() for t in prepared.targets)
        groups = sum(group_count(self._groups(t.original)) for t in prepared.targets)
        return self._length(prepared, payload=count * bits, side=groups * 64.0,
                            entropy=sum(coded_bits(c, 2**bits) for c in prepared.cache[bits]))
