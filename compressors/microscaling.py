"""Microscaling block formats (OCP MX v1.0) and NVIDIA's NVFP4, simulated exactly in fp32.

Each weight matrix (out × in, see compressors.layout) is cut into blocks of consecutive inputs
of a row (a short last block is padded with zeros); each block stores one shared scale X and
its elements as small floats, decoded as X·e:
- `mxfp8` (E4M3 elements, max 448), `mxfp6` (E2M3, max 7.5), `mxfp4` (E2M1, max 6): blocks of
  32, X = 2^(⌊log₂ max|v|⌋ − e_max) an E8M0 power of two, e_max the element format's largest
  exponent (8, 2, 2), elements rounded to nearest (ties to even) and saturated;
- `nvfp4`: E2M1 elements in blocks of 16 with an E4M3 scale, and one fp32 scale per tensor
  s = max|W|/(448·6), so the block scale max|v|/(6s) is rounded to E4M3 and e = v/(X·s).
The element and scale tables are fixed by the formats, known to any decoder, and not charged.

Description length: the element width per weight (8, 6, 4, 4 bits, sign included), 8 bits per
block scale, and for nvfp4 32 bits per tensor; entropy-coded, each tensor's element codes
(compressors.coding). The knob is a position in `formats`, ordered by bits per weight with
the scales: mxfp8 8.25, mxfp6 6.25, nvfp4 4.5, mxfp4 4.25 (compressors.formats).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from compressors.coding import coded_bits
from compressors.formats import FormatChoice
from compressors.registry import DescriptionLength, Prepared, register

ELEMENTS = {"e4m3": (4, 3, 7), "e2m3": (2, 3, 1), "e2m1": (2, 1, 1)}  # exponent bits, mantissa bits, bias
FORMATS = {  # element, block, scale
    "mxfp8": ("e4m3", 32, "e8m0"), "mxfp6": ("e2m3", 32, "e8m0"),
    "mxfp4": ("e2m1", 32, "e8m0"), "nvfp4": ("e2m1", 16, "e4m3"),
}


def element_width(element: str) -> int:
    exponent, mantissa, _ = ELEMENTS[element]
    return 1 + exponent + mantissa


@functools.lru_cache(maxsize=None)
def magnitudes(element: str) -> tuple[float, ...]:
    """The format's finite non-negative values in code order (increasing): subnormals m/2^M·2^(1−bias),
    normals (1 + m/2^M)·2^(e−bias); E4M3 has no infinities, its all-ones code is NaN."""
    exponent, mantissa, bias = ELEMENTS[element]
    values = []
    for e in range(2**exponent):
        for m in range(2**mantissa):
            if element == "e4m3" and e == 2**exponent - 1 and m == 2**mantissa - 1:
                continue
            values.append(m / 2**mantissa * 2.0 ** (1 - bias) if e == 0 else (1 + m / 2**mantissa) * 2.0 ** (e - bias))
    return tuple(values)


def largest_exponent(element: str) -> int:
    return math.floor(math.log2(magnitudes(element)[-1]))


def round_to(values, element: str):
    """(rounded values, sign-magnitude codes) of `values` in an element format: nearest, ties to
    the even code, saturated at the largest finite value."""
    import torch

    table = torch.tensor(magnitudes(element), dtype=values.dtype, device=values.device)
    size = values.abs().clamp_max(table[-1]).contiguous()
    upper = torch.searchsorted(table, size).clamp(1, len(table) - 1)
    lower = upper - 1
    below, above = size - table[lower], table[upper] - size
    pick = torch.where(below < above, lower, torch.where(above < below, upper, torch.where(lower % 2 == 0, lower, upper)))
    negative = values < 0
    codes = pick + negative.long() * 2 ** (element_width(element) - 1)
    return torch.where(negative, -table[pick], table[pick]), codes


def mx_roundtrip(weight, fmt: str):
    """(dequantized, element codes) of an (out × in) `weight` in format `fmt`."""
    import torch
    import torch.nn.functional as F

    element, block, scale_format = FORMATS[fmt]
    w = weight.detach().float()
    rows, columns = w.shape
    blocks = F.pad(w, (0, -columns % block)).reshape(rows, -1, block)
    peak = blocks.abs().amax(dim=2, keepdim=True)
    if scale_format == "e8m0":
        exponent = torch.floor(torch.log2(peak.clamp_min(2.0**-127))) - largest_exponent(element)
        scale = torch.exp2(exponent.clamp(-127, 127))
    else:  # nvfp4: an fp32 tensor scale, then the block scale in E4M3
        tensor = (w.abs().max() / (magnitudes("e4m3")[-1] * magnitudes(element)[-1])).clamp_min(1e-30)
        scale = round_to(peak / magnitudes(element)[-1] / tensor, "e4m3")[0] * tensor
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    values, codes = round_to(blocks / safe, element)
    dequantized = torch.where(scale > 0, values * scale, torch.zeros_like(values))
    codes = torch.where(scale > 0, codes, torch.zeros_like(codes))
    return dequantized.reshape(rows, -1)[:, :columns], codes.reshape(rows, -1)[:, :columns]


@register
@dataclass(frozen=True)
class Microscaling(FormatChoice):
    """Microscaling block formats MXFP8 / MXFP6 / MXFP4 and NVFP4, the knob ordering them by compression."""

    name: ClassVar[str] = "mx"
    BITS: ClassVar[dict[str, float]] = {f: element_width(e) + 8 / b for f, (e, b, _) in FORMATS.items()}
    formats: tuple[Literal["mxfp8", "mxfp6", "nvfp4", "mxfp4"], ...] = ("mxfp8", "mxfp6", "nvfp4", "mxfp4")

    def roundtrip(self, weight, fmt: str):
        return mx_roundtrip(weight, fmt)

    def alphabet(self, fmt: str) -> int:
        return 2 ** element_width(FORMATS[fmt][0])

    def _description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        fmt = self.format_at(value)
        element, block, scale_format = FORMATS[fmt]
        shapes = [t.shape for t in prepared.targets]
        count = sum(rows * columns for rows, columns in shapes)
        blocks = sum(rows * math.ceil(columns / block) for rows, columns in shapes)
        tensors = 32.0 * len(shapes) if scale_format == "e4m3" else 0.0
        return self._length(prepared, payload=count * element_width(element), side=8.0 * blocks + tensors,
                            entropy=sum(coded_bits(c, self.alphabet(fmt)) for c in self.counts(prepared, fmt)))
