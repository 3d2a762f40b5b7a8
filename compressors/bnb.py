"""bitsandbytes' standard formats through bitsandbytes itself (≥ 0.50 runs them on CPU).

The knob is a position in an ordered set of formats, least compressing first (default int8,
then nf4; fp4 by option): 0 = unquantized, k = the k-th format. Formats and their bits:
- int8: 8-bit blockwise dynamic quantization, 8 bits/weight + an fp32 absmax per 256 weights
  + the 256-entry fp32 code table once;
- nf4 / fp4: 4-bit NormalFloat / FloatingPoint, 4 bits/weight + an fp32 absmax per 64 weights.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar

from compressors.quantize import code_entropy
from compressors.registry import Compressor, DescriptionLength, Knob, Prepared, register
from mdl_slt.errors import UserError

FORMAT_BITS = {"int8": 8, "nf4": 4, "fp4": 4}
BLOCK = {"int8": 256, "nf4": 64, "fp4": 64}
INT8_TABLE_BITS = 256 * 32


def _functional():
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # its optional CPU-kernel notice
    try:
        import bitsandbytes.functional as F
    except ImportError:
        raise UserError("the bnb compressor needs bitsandbytes >= 0.50: pip install 'bitsandbytes>=0.50'") from None
    return F


def bnb_roundtrip(weight, fmt: str):
    """(dequantized weight, integer codes) of `weight` in bitsandbytes format `fmt`."""
    import torch

    F = _functional()
    w = weight.detach().float().contiguous()
    if fmt == "int8":
        packed, state = F.quantize_blockwise(w, blocksize=BLOCK[fmt])
        return F.dequantize_blockwise(packed, state).reshape(w.shape), packed.reshape(-1)
    packed, state = F.quantize_4bit(w, blocksize=BLOCK[fmt], quant_type=fmt)
    deq = F.dequantize_4bit(packed, state).reshape(w.shape)
    flat = packed.reshape(-1)
    codes = torch.stack([flat >> 4, flat & 15], dim=1).reshape(-1)[: w.numel()]
    return deq, codes


@register
@dataclass(frozen=True)
class BitsAndBytes(Compressor):
    """bitsandbytes int8 / NF4 / FP4 formats, the knob ordering them by compression."""

    name: ClassVar[str] = "bnb"
    formats: tuple[str, ...] = ("int8", "nf4")

    def __post_init__(self):
        object.__setattr__(self, "formats", tuple(self.formats))
        unknown = [f for f in self.formats if f not in FORMAT_BITS]
        if unknown or not self.formats:
            raise UserError(f"bnb: unknown formats {unknown}: choose from {sorted(FORMAT_BITS)}")
        bits = [FORMAT_BITS[f] for f in self.formats]
        if any(a <= b for a, b in zip(bits, bits[1:])):
            raise UserError(f"bnb: formats must be ordered from more to fewer bits, got {list(self.formats)}")

    @property
    def knob(self) -> Knob:
        return Knob(name="format", low=1.0, high=float(len(self.formats)), identity=0.0,
                    more_compression="higher", unit="",
                    description=f"position in {list(self.formats)}; 0 = unquantized", precision=1.0)

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        return float(min(len(self.formats), max(1, round(value))))

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        import torch

        fmt = self.formats[int(value) - 1]
        entropy = 0.0
        with torch.no_grad():
            for t in prepared.targets:
                deq, codes = bnb_roundtrip(t.original, fmt)
                t.param.copy_(deq.to(t.param.dtype))
                entropy += code_entropy(codes, 256 if fmt == "int8" else 16)
        prepared.cache[fmt] = entropy

    def description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        if value == self.knob.identity:
            return self.uncompressed_bits(prepared)
        fmt = self.formats[int(self.snap(value)) - 1]
        if fmt not in prepared.cache:
            self.apply(None, prepared, value)
            self.restore(prepared)
        count = sum(t.original.numel() for t in prepared.targets)
        blocks = sum(math.ceil(t.original.numel() / BLOCK[fmt]) for t in prepared.targets)
        side = blocks * 32.0 + (INT8_TABLE_BITS if fmt == "int8" else 0.0)
        return self._length(prepared, payload=count * FORMAT_BITS[fmt], side=side, entropy=prepared.cache[fmt])
