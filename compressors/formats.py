"""A knob over named storage formats: the one setting of `bnb` and `mx`.

The knob is a position in the compressor's `formats`, ordered from more to fewer bits per
weight: 0 = unquantized, k = the k-th format, every position realisable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from compressors.registry import Compressor, Knob, Prepared
from mdl_slt.errors import UserError


@dataclass(frozen=True)
class FormatChoice(Compressor):
    """Base class: subclasses set `formats` (a tuple field) and `BITS`, bits per weight of each format."""

    BITS: ClassVar[dict[str, float]]

    def __post_init__(self):
        bits = [self.BITS[f] for f in self.formats]
        if not self.formats or any(a <= b for a, b in zip(bits, bits[1:])):
            raise UserError(f"{self.name}: formats must be a non-empty list ordered from more to fewer bits "
                            f"({', '.join(f'{f} {b:g}' for f, b in self.BITS.items())}), got {list(self.formats)}")

    @property
    def knob(self) -> Knob:
        return Knob(name="format", low=1.0, high=float(len(self.formats)), identity=0.0,
                    more_compression="higher", unit="",
                    description=f"position in {list(self.formats)}; 0 = unquantized", precision=1.0)

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        return float(min(len(self.formats), max(1, round(value))))

    def levels(self, prepared: Prepared) -> list[float]:
        return [float(k) for k in range(1, len(self.formats) + 1)]

    def format_at(self, value: float) -> str:
        return self.formats[int(value) - 1]
