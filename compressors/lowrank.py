"""Low-rank factorization of weight matrices by truncated SVD; factors computed once in `prepare`.

`svd`: each matrix W (m × n, rank r = min(m, n)) keeps its top k = max(1, ⌈f·r⌉) singular
triples, f the kept-rank fraction. `svd-energy`, the global variant: the singular values of
all target matrices are ranked together by σ², and the largest are kept until a fraction e of
the total energy Σσ² is kept (at least one per matrix), so ranks follow where the energy is.

Description length per matrix: the factors U_kΣ_k (m × k) and V_kᵀ (k × n) in fp32 plus a 32-bit
rank, or the dense matrix when that is smaller. Float factors are not entropy-coded: the
entropy figure equals the nominal one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from compressors.registry import Compressor, DescriptionLength, Knob, Prepared, register


def _factorize(prepared: Prepared) -> None:
    import torch

    for t in prepared.targets:  # one matrix at a time on the model's device; factors kept by `prepared`
        w = t.working.float().reshape(t.original.shape[0], -1)
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        prepared.cache[t.name] = (prepared.keep(u * s), prepared.keep(vh), s.cpu())


def _write_ranks(prepared: Prepared, ranks: dict) -> None:
    import torch

    with torch.no_grad():
        for t in prepared.targets:
            us, vh, _ = prepared.cache[t.name]
            k = ranks[t.name]
            device = t.param.device
            t.param.copy_((us[:, :k].to(device) @ vh[:k].to(device)).reshape(t.original.shape).to(t.param.dtype))


def _factor_bits(prepared: Prepared, ranks: dict) -> tuple[float, float]:
    payload = side = 0.0
    for t in prepared.targets:
        m, n = t.original.shape[0], t.original[0].numel()
        k = ranks[t.name]
        if k * (m + n) < m * n:
            payload += 32.0 * k * (m + n)
            side += 32.0
        else:
            payload += 32.0 * m * n
    return payload, side


@dataclass(frozen=True)
class _LowRank(Compressor):
    def prepare(self, model, calibration=None) -> Prepared:
        prepared = super().prepare(model, calibration)
        _factorize(prepared)
        return prepared

    def ranks(self, prepared: Prepared, value: float) -> dict:
        raise NotImplementedError

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        _write_ranks(prepared, self.ranks(prepared, value))

    def description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        if value == self.knob.identity:
            return self.uncompressed_bits(prepared)
        payload, side = _factor_bits(prepared, self.ranks(prepared, value))
        return self._length(prepared, payload, side)


@register
@dataclass(frozen=True)
class TruncatedSVD(_LowRank):
    """Truncated SVD of each weight matrix at a kept-rank fraction."""

    name: ClassVar[str] = "svd"
    knob: ClassVar[Knob] = Knob(name="rank_fraction", low=0.0, high=1.0, identity=1.0, more_compression="lower",
                                unit="", description="fraction of each matrix's rank kept", precision=0.01)

    def ranks(self, prepared: Prepared, value: float) -> dict:
        return {t.name: max(1, math.ceil(value * len(prepared.cache[t.name][2]))) for t in prepared.targets}


@register
@dataclass(frozen=True)
class EnergySVD(_LowRank):
    """Truncated SVD with ranks chosen globally: keep the largest σ² until a fraction of the energy."""

    name: ClassVar[str] = "svd-energy"
    knob: ClassVar[Knob] = Knob(name="energy", low=0.0, high=1.0, identity=1.0, more_compression="lower",
                                unit="", description="fraction of the total energy Σσ² kept, over all matrices",
                                precision=0.005)

    def ranks(self, prepared: Prepared, value: float) -> dict:
        import torch

        names = [t.name for t in prepared.targets]
        energies = torch.cat([prepared.cache[n][2].double() ** 2 for n in names])
        owner = torch.cat([torch.full((len(prepared.cache[n][2]),), i) for i, n in enumerate(names)])
        order = torch.argsort(energies, descending=True, stable=True)
        cumulative = torch.cumsum(energies[order], 0) / energies.sum()
        keep = int(torch.searchsorted(cumulative, torch.tensor(value, dtype=cumulative.dtype, device=cumulative.device))) + 1
        counts = torch.bincount(owner[order[:keep]], minlength=len(names))
        return {n: max(1, int(c)) for n, c in zip(names, counts)}
