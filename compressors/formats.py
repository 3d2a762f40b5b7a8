"""A knob over named storage formats: the one setting of `bnb` and `mx`.

The knob is a position in the compressor's `formats`, ordered from more to fewer bits per
weight: 0 = unquantized, k = the k-th format, every position realisable. Each weight matrix is
stored in the format by `roundtrip`; `apply` writes the result and keeps each tensor's code
counts for the entropy-coded length (`counts` computes them from the originals otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from compressors.quantize import code_counts
from compressors.registry import Compressor, Knob, Prepared
from mdl_slt.errors import UserError


@dataclass(frozen=True)
class FormatChoice(Compressor):
    """Base class: subclasses set `formats` (a tuple field) and `BITS`, bits per weight of each format."""

    BITS: ClassVar[dict[str, float]]

    def roundtrip(self, weight, fmt: str):
        """(dequantized (out × in) weight, integer codes) of `weight` stored in format `fmt`."""
        raise NotImplementedError

    def alphabet(self, fmt: str) -> int:
        """How many codes format `fmt`'s elements have."""
        raise NotImplementedError

    def __post_init__(self):
        bits = [self.BITS[f] for f in self.formats]
        if not self.formats or any(a <= b for a, b in zip(bits, bits[1:])):
            raise UserError(f"{self.name}: formats must be a non-empty list ordered from more to fewer bits "
                            f"({', '.join(f'{f} {b:g}' for f, b in self.BITS.items())}), got {list(self.formats)}")

    @property
    def knob(self) -> Knob:
        return Knob(name="format", low=1.0, high=float(len(self.formats)), identity=0.0,
                    more_compression="higher", unit="in the format list",
                    description=f"position in {list(self.formats)}; 0 = unquantized", precision=1.0)

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        return float(min(len(self.formats), max(1, round(value))))

    def levels(self, prepared: Prepared) -> list[float]:
        return [float(k) for k in range(1, len(self.formats) + 1)]

    def format_at(self, value: float) -> str:
        return self.formats[int(value) - 1]

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        fmt = self.format_at(value)
        counts = []
        for t in prepared.targets:
            dequantized, codes = self.roundtrip(t.matrix(), fmt)
            t.write(dequantized)
            counts.append(code_counts(codes, self.alphabet(fmt)))
        prepared.cache[fmt] = counts

    def counts(self, prepared: Prepared, fmt: str) -> list[list[int]]:
        """Each target's code counts in format `fmt`, from the originals where no `apply` kept them."""
        if fmt not in prepared.cache:  # the model is not touched
            prepared.cache[fmt] = [code_counts(self.roundtrip(t.matrix(), fmt)[1], self.alphabet(fmt))
                                   for t in prepared.targets]
        return prepared.cache[fmt]
