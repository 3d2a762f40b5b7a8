"""bitsandbytes' standard formats through bitsandbytes itself (≥ 0.50 runs them on CPU).

The knob is a position in an ordered set of formats, least compressing first (default int8,
then nf4; fp4 by option): 0 = unquantized, k = the k-th format (compressors.formats). Each weight matrix, read as
(out × in) (see compressors.layout), is quantized in blocks of consecutive weights:
- int8: 8-bit blockwise dynamic quantization, 8 bits/weight + an fp32 absmax per 256 weights;
- nf4 / fp4: 4-bit NormalFloat / FloatingPoint, 4 bits/weight + an fp32 absmax per 64 weights.
The formats' code tables (the int8 dynamic map, NF4's and FP4's 16 values) are fixed by the
format and known to any decoder, so none is charged (docs/description-lengths.md).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from compressors.coding import coded_bits
from compressors.formats import FormatChoice
from compressors.registry import DescriptionLength, Prepared, register
from mdl_slt.errors import UserError

FORMAT_BITS = {"int8": 8, "nf4": 4, "fp4": 4}
BLOCK = {"int8": 256, "nf4": 64, "fp4": 64}


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
class BitsAndBytes(FormatChoice):
    """bitsandbytes int8 / NF4 / FP4 formats, the knob ordering them by compression."""

    name: ClassVar[str] = "bnb"
    BITS: ClassVar[dict[str, float]] = {f: FORMAT_BITS[f] + 32 / BLOCK[f] for f in FORMAT_BITS}  # with the absmax
    formats: tuple[Literal["int8", "nf4", "fp4"], ...] = ("int8", "nf4")

    def roundtrip(self, weight, fmt: str):
        return bnb_roundtrip(weight, fmt)

    def alphabet(self, fmt: str) -> int:
        return 256 if fmt == "int8" else 16

    def _description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        fmt = self.format_at(value)
        count = sum(t.original.numel() for t in prepared.targets)
        blocks = sum(math.ceil(t.original.numel() / BLOCK[fmt]) for t in prepared.targets)
        return self._length(prepared, payload=count * FORMAT_BITS[fmt], side=blocks * 32.0,
                            entropy=sum(coded_bits(c, self.alphabet(fmt)) for c in self.counts(prepared, fmt)))
