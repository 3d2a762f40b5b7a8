"""Low-rank factorization of weight matrices by truncated SVD; factors computed once in `prepare`.

`svd`: each (out × in) matrix W (m × n, rank r = min(m, n)) keeps its top k = max(1, ⌈f·r⌉)
singular triples, f the kept-rank fraction (compressors.ranks: f snaps to the fractions that
give distinct ranks). `svd-energy`, the global variant: the singular values of all target
matrices are ranked together by σ², and the largest are kept until a fraction e of the total
energy Σσ² is kept (at least one per matrix), so ranks follow where the energy is.

A matrix whose rank-k factors U_kΣ_k (m × k) and V_kᵀ (k × n) would be no smaller than itself
(k(m + n) ≥ mn) is kept dense and exact: no code stores a larger, worse copy. Description
length per matrix: the factors or the dense matrix in fp32, plus its 32-bit rank (r meaning
dense); float factors are not entropy-coded. A fraction whose code would be no shorter than the
uncompressed model's snaps to the identity (compressors.ranks.shortening).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from compressors.ranks import FractionRanks, shortening
from compressors.registry import Compressor, DescriptionLength, Knob, Prepared, register


def _factorize(prepared: Prepared) -> None:
    import torch

    for t in prepared.targets:  # one matrix at a time on the model's device; factors kept by `prepared`
        u, s, vh = torch.linalg.svd(t.matrix().float(), full_matrices=False)
        prepared.cache[t.name] = (prepared.keep(u * s), prepared.keep(vh), s.cpu())


def _factored(m: int, n: int, k: int) -> bool:
    return k * (m + n) < m * n


def _write_ranks(prepared: Prepared, ranks: dict) -> None:
    for t in prepared.targets:
        us, vh, _ = prepared.cache[t.name]
        m, n = us.shape[0], vh.shape[1]
        k = ranks[t.name]
        if _factored(m, n, k):
            device = t.param.device
            t.write(us[:, :k].to(device) @ vh[:k].to(device))


def _factor_bits(prepared: Prepared, ranks: dict) -> tuple[float, float]:
    payload = 0.0
    for t in prepared.targets:
        us, vh, _ = prepared.cache[t.name]
        m, n, k = us.shape[0], vh.shape[1], ranks[t.name]
        payload += 32.0 * (k * (m + n) if _factored(m, n, k) else m * n)
    return payload, 32.0 * len(prepared.targets)


@dataclass(frozen=True)
class _LowRank(Compressor):
    def prepare(self, model, calibration=None) -> Prepared:
        prepared = super().prepare(model, calibration)
        _factorize(prepared)
        return prepared

    def ranks(self, prepared: Prepared, value: float) -> dict:
        raise NotImplementedError

    def _canonical(self, prepared: Prepared, value: float) -> float:
        raise NotImplementedError

    def _all_levels(self, prepared: Prepared) -> list[float]:
        raise NotImplementedError

    def _largest(self, prepared: Prepared) -> float:
        """The largest fraction whose code is shorter than the uncompressed model's."""
        if "largest" not in prepared.cache:
            full = self.uncompressed_bits(prepared)
            prepared.cache["largest"] = shortening(self._all_levels(prepared), lambda v: sum(
                _factor_bits(prepared, self.ranks(prepared, v))) < full.payload_bits + full.side_bits)
        return prepared.cache["largest"]

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        if prepared is None:
            return value
        canonical = self._canonical(prepared, value)
        return canonical if canonical <= self._largest(prepared) else self.knob.identity

    def levels(self, prepared: Prepared) -> list[float]:
        return [v for v in self._all_levels(prepared) if v == self.knob.identity or v <= self._largest(prepared)]

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        _write_ranks(prepared, self.ranks(prepared, value))

    def _description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        payload, side = _factor_bits(prepared, self.ranks(prepared, value))
        return self._length(prepared, payload, side)


@register
@dataclass(frozen=True)
class TruncatedSVD(_LowRank):
    """Truncated SVD of each weight matrix at a kept-rank fraction."""

    name: ClassVar[str] = "svd"
    knob: ClassVar[Knob] = Knob(name="rank_fraction", low=0.0, high=1.0, identity=1.0, more_compression="lower",
                                unit="of the rank kept", description="fraction of each matrix's rank kept",
                                precision=0.01)

    def _fractions(self, prepared: Prepared) -> FractionRanks:
        if "fractions" not in prepared.cache:
            sizes = tuple(len(prepared.cache[t.name][2]) for t in prepared.targets)
            prepared.cache["fractions"] = FractionRanks(sizes, sizes)
        return prepared.cache["fractions"]

    def _canonical(self, prepared: Prepared, value: float) -> float:
        return self._fractions(prepared).snap(value)

    def _all_levels(self, prepared: Prepared) -> list[float]:
        return self._fractions(prepared).levels()

    def ranks(self, prepared: Prepared, value: float) -> dict:
        return dict(zip((t.name for t in prepared.targets), self._fractions(prepared).ranks(value)))


@register
@dataclass(frozen=True)
class EnergySVD(_LowRank):
    """Truncated SVD with ranks chosen globally: keep the largest σ² until a fraction of the energy."""

    name: ClassVar[str] = "svd-energy"
    knob: ClassVar[Knob] = Knob(name="energy", low=0.0, high=1.0, identity=1.0, more_compression="lower",
                                unit="of the energy kept", description="fraction of the total energy Σσ² kept, over all matrices",
                                precision=0.005)

    def _ranking(self, prepared: Prepared):
        """(owner of each kept σ in order, cumulative energy fraction, whether it is its matrix's first)."""
        if "ranking" not in prepared.cache:
            import torch

            names = [t.name for t in prepared.targets]
            energies = torch.cat([prepared.cache[n][2].double() ** 2 for n in names])
            owner = torch.cat([torch.full((len(prepared.cache[n][2]),), i, device="cpu") for i, n in enumerate(names)])
            order = torch.argsort(energies, descending=True, stable=True)
            cumulative = (torch.cumsum(energies[order], 0) / energies.sum()).tolist()
            seen, first = set(), []
            for i in owner[order].tolist():
                first.append(i not in seen)
                seen.add(i)
            prepared.cache["ranking"] = (owner[order], cumulative, first)
        return prepared.cache["ranking"]

    def _kept(self, prepared: Prepared, value: float) -> int:
        """How many σ the energy fraction keeps, moved up past values that change nothing (the
        first σ of a matrix, which it keeps anyway)."""
        import bisect

        _, cumulative, first = self._ranking(prepared)
        kept = min(len(cumulative), bisect.bisect_left(cumulative, value - 1e-12) + 1)
        while kept < len(cumulative) and first[kept]:
            kept += 1
        return kept

    def _canonical(self, prepared: Prepared, value: float) -> float:
        kept = self._kept(prepared, value)
        return 1.0 if kept == len(self._ranking(prepared)[1]) else self._ranking(prepared)[1][kept - 1]

    def _all_levels(self, prepared: Prepared) -> list[float]:
        _, cumulative, first = self._ranking(prepared)
        ends = [cumulative[k - 1] for k in range(1, len(cumulative)) if not first[k]]
        return sorted(set(ends) | {1.0}, reverse=True)

    def ranks(self, prepared: Prepared, value: float) -> dict:
        import torch

        owner, _, _ = self._ranking(prepared)
        counts = torch.bincount(owner[: self._kept(prepared, value)], minlength=len(prepared.targets))
        return {t.name: max(1, int(c)) for t, c in zip(prepared.targets, counts)}
