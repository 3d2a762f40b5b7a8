"""Tucker and CP decompositions of attention weights stacked by head.

Each attention projection is viewed as a 3-way tensor of its heads (compressors.layout): a
query, key, value or fused projection, whose rows are grouped by head, as (rows/d × d × in);
the output projection, whose input columns are grouped by head, as (in/d × d × out), d the head
dimension. For GPT-NeoX's fused query_key_value that stacks every head's query, key and value
blocks; for GPT-2's c_attn its query, key and value heads.

`tucker`: truncated higher-order SVD with mode ranks r_i = ⌈f·d_i⌉ (at most the mode's rank);
the mode factors are computed once in `prepare`, so each fraction costs two multi-mode products.
`cp`: CANDECOMP/PARAFAC of rank R = ⌈f·R_max⌉ by ALS (SVD start, seeded; tensorly), where
R_max = ⌈(d₁d₂d₃)/(d₁+d₂+d₃)⌉ is the rank at which the factors are as large as the tensor; each
tensor's decomposition is cached by its rank. f snaps to the fractions giving distinct ranks.

A tensor whose factors would be no smaller than itself is kept dense and exact. Description
length: core and factors (Tucker) or factors (CP) in fp32, or the dense tensor, plus its ranks
at 32 bits each (three for Tucker, one for CP); float factors are not entropy-coded. A fraction
whose code would be no shorter than the uncompressed model's snaps to the identity.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Annotated, ClassVar

from pydantic import Field

from compressors import layout
from compressors.ranks import FractionRanks, shortening
from compressors.registry import Compressor, DescriptionLength, Knob, Prepared, register
from compressors.targets import Role, select_targets
from mdl_slt.errors import UserError

FRACTION = dict(low=0.0, high=1.0, identity=1.0, more_compression="lower", unit="of the rank kept", precision=0.01)


def head_stacks(model) -> dict[int, tuple[int, bool]]:
    """id(weight) → (head dimension, whether heads run along its input columns) for every
    attention projection of the model."""
    stacks = {}
    for attention in layout.attentions(model):
        for module in attention.row_matrices():
            stacks[id(module.weight)] = (attention.head_dim, False)
        stacks[id(attention.output.weight)] = (attention.head_dim, True)
    return stacks


def head_tensor(matrix, head_dim: int, by_columns: bool):
    """An (out × in) matrix as a 3-way tensor of heads; `from_head_tensor` undoes it."""
    w = matrix.detach().float()
    w = w.T if by_columns else w
    if w.shape[0] % head_dim:
        raise UserError(f"a {tuple(w.shape)} weight does not split into heads of {head_dim}")
    return w.reshape(w.shape[0] // head_dim, head_dim, w.shape[1])


def from_head_tensor(tensor, by_columns: bool):
    w = tensor.reshape(-1, tensor.shape[2])
    return w.T if by_columns else w


def _dense(dims) -> float:
    return float(math.prod(dims))


@dataclass(frozen=True)
class _HeadDecomposition(Compressor):
    targets: tuple[Role, ...] = ("attention",)

    def __post_init__(self):
        if tuple(self.targets) != ("attention",):
            raise UserError(f"{self.name} decomposes attention weights stacked by head: leave `targets` unset")

    def prepare(self, model, calibration=None) -> Prepared:
        stacks = head_stacks(model)
        chosen = [(n, p) for n, p in select_targets(model, self.targets, self.groups) if id(p) in stacks]
        prepared = self._snapshot(model, chosen, calibration)
        for t in prepared.targets:
            d, by_columns = stacks[id(t.param)]
            prepared.cache[t.name] = self._precompute(head_tensor(t.matrix(), d, by_columns), by_columns)
        prepared.cache["fractions"] = self._fractions(prepared)
        full = self.uncompressed_bits(prepared)
        prepared.cache["largest"] = shortening(prepared.cache["fractions"].levels(), lambda v: sum(
            self._bits(prepared, v)) < full.payload_bits + full.side_bits)
        return prepared

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        if prepared is None:
            return value
        canonical = prepared.cache["fractions"].snap(value)
        return canonical if canonical <= prepared.cache["largest"] else self.knob.identity

    def levels(self, prepared: Prepared) -> list[float]:
        return [v for v in prepared.cache["fractions"].levels() if v == 1.0 or v <= prepared.cache["largest"]]

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        for t, ranks in zip(prepared.targets, self._ranks(prepared, value)):
            cached = prepared.cache[t.name]
            if self._size(cached, ranks) < _dense(cached["tensor"].shape):
                t.write(from_head_tensor(self._reconstruct(cached, ranks), cached["by_columns"]))

    def _bits(self, prepared: Prepared, value: float) -> tuple[float, float]:
        payload = side = 0.0
        for t, ranks in zip(prepared.targets, self._ranks(prepared, value)):
            cached = prepared.cache[t.name]
            payload += 32.0 * min(self._size(cached, ranks), _dense(cached["tensor"].shape))
            side += 32.0 * len(ranks)
        return payload, side

    def _description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        return self._length(prepared, *self._bits(prepared, value))

    def _precompute(self, tensor, by_columns: bool) -> dict:
        raise NotImplementedError

    def _fractions(self, prepared: Prepared) -> FractionRanks:
        raise NotImplementedError

    def _ranks(self, prepared: Prepared, value: float) -> list[list[int]]:
        raise NotImplementedError

    def _size(self, cached, ranks) -> float:
        raise NotImplementedError

    def _reconstruct(self, cached, ranks):
        raise NotImplementedError


@register
@dataclass(frozen=True)
class Tucker(_HeadDecomposition):
    """Tucker (truncated HOSVD) of head-stacked attention weights at a kept mode-rank fraction."""

    name: ClassVar[str] = "tucker"
    knob: ClassVar[Knob] = Knob(name="rank_fraction", description="fraction of each mode's rank kept", **FRACTION)

    def _precompute(self, tensor, by_columns: bool) -> dict:
        import torch

        factors = [torch.linalg.svd(tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1),
                                    full_matrices=False)[0] for mode in range(3)]
        return {"tensor": tensor, "factors": factors, "by_columns": by_columns}

    def _fractions(self, prepared: Prepared) -> FractionRanks:
        parts = [(d, f.shape[1]) for t in prepared.targets
                 for d, f in zip(prepared.cache[t.name]["tensor"].shape, prepared.cache[t.name]["factors"])]
        return FractionRanks(tuple(d for d, _ in parts), tuple(c for _, c in parts))

    def _ranks(self, prepared: Prepared, value: float) -> list[list[int]]:
        flat = prepared.cache["fractions"].ranks(value)
        return [flat[3 * i: 3 * i + 3] for i in range(len(prepared.targets))]

    def _size(self, cached, ranks) -> float:
        return float(math.prod(ranks) + sum(d * r for d, r in zip(cached["tensor"].shape, ranks)))

    def _reconstruct(self, cached, ranks):
        import torch

        a, b, c = (f[:, :r] for f, r in zip(cached["factors"], ranks))
        core = torch.einsum("xyz,xi,yj,zk->ijk", cached["tensor"], a, b, c)
        return torch.einsum("ijk,xi,yj,zk->xyz", core, a, b, c)


@register
@dataclass(frozen=True)
class CP(_HeadDecomposition):
    """CP (PARAFAC, ALS) of head-stacked attention weights at a fraction of the break-even rank."""

    name: ClassVar[str] = "cp"
    knob: ClassVar[Knob] = Knob(name="rank_fraction", description="CP rank as a fraction of the break-even rank",
                                **FRACTION)
    iterations: Annotated[int, Field(ge=1)] = 50
    seed: int = 0

    def _precompute(self, tensor, by_columns: bool) -> dict:
        return {"tensor": tensor, "by_columns": by_columns}

    def _fractions(self, prepared: Prepared) -> FractionRanks:
        breakeven = tuple(math.ceil(_dense(prepared.cache[t.name]["tensor"].shape)
                                    / sum(prepared.cache[t.name]["tensor"].shape)) for t in prepared.targets)
        return FractionRanks(breakeven, breakeven)

    def _ranks(self, prepared: Prepared, value: float) -> list[list[int]]:
        return [[r] for r in prepared.cache["fractions"].ranks(value)]

    def _size(self, cached, ranks) -> float:
        return float(ranks[0] * sum(cached["tensor"].shape))

    def _reconstruct(self, cached, ranks):
        import tensorly as tl
        import torch
        from tensorly.decomposition import parafac

        key = ("cp", ranks[0])
        if key not in cached:  # ALS on the host in float64, whatever device the model is on
            with warnings.catch_warnings():  # a rank above a mode's size: the SVD start pads from the seed
                warnings.simplefilter("ignore", UserWarning)
                cp = parafac(cached["tensor"].detach().cpu().double().numpy(), rank=ranks[0], init="svd",
                             n_iter_max=self.iterations, tol=1e-8, random_state=self.seed)
            cached[key] = torch.as_tensor(tl.cp_to_tensor(cp), device="cpu").float()
        return cached[key].to(cached["tensor"].device)
