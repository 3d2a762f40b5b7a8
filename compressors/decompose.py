"""Tucker and CP decompositions of attention weights stacked by head (tensorly).

Each target matrix (out × in) whose rows fall into attention heads is viewed as a 3-way tensor
(out/d_head × d_head × in): for GPT-NeoX's fused query_key_value that is the stack of every
head's query, key and value matrices; for the output projection, the per-head row blocks.

`tucker`: truncated higher-order SVD with mode ranks r_i = ⌈f·d_i⌉; the mode factors are
computed once in `prepare`, so each fraction costs two multi-mode products.
`cp`: CANDECOMP/PARAFAC of rank R = max(1, round(f·R_max)) by ALS (SVD start, seeded), where
R_max = ⌈(d₁d₂d₃)/(d₁+d₂+d₃)⌉ is the rank at which the factors are as large as the tensor.

Description length: core and factors (Tucker) or factors (CP) in fp32, plus 32 bits per rank,
or the dense tensor when smaller; float factors are not entropy-coded.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

from compressors.registry import Compressor, DescriptionLength, Knob, Prepared, register
from mdl_slt.errors import UserError

FRACTION = dict(low=0.0, high=1.0, identity=1.0, more_compression="lower", unit="", precision=0.01)


def head_dim(model) -> int:
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    if not heads:
        raise UserError("tucker/cp need a transformer with `config.num_attention_heads` to stack head weights")
    return config.hidden_size // heads


def head_tensor(weight, d_head: int):
    w = weight.detach().float()
    if w.ndim != 2 or w.shape[0] % d_head:
        raise UserError(f"a {tuple(w.shape)} weight does not split into heads of {d_head} rows")
    return w.reshape(w.shape[0] // d_head, d_head, w.shape[1])


def _dense_or(bits: float, dims) -> tuple[float, float]:
    dense = 32.0 * math.prod(dims)
    return (bits, 32.0 * len(dims)) if bits < dense else (dense, 0.0)


@dataclass(frozen=True)
class _HeadDecomposition(Compressor):
    targets: tuple[str, ...] = ("attention",)

    def prepare(self, model, calibration=None) -> Prepared:
        prepared = super().prepare(model, calibration)
        d_head = head_dim(model)
        prepared.targets = [t for t in prepared.targets if t.original.ndim == 2]
        for t in prepared.targets:
            prepared.cache[t.name] = self._precompute(head_tensor(t.original, d_head))
        return prepared

    def _precompute(self, tensor):
        return {"tensor": tensor}

    def _reconstruct(self, cached, value: float):
        raise NotImplementedError

    def _bits(self, cached, value: float) -> tuple[float, float]:
        raise NotImplementedError

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        import torch

        with torch.no_grad():
            for t in prepared.targets:
                approx = self._reconstruct(prepared.cache[t.name], value)
                t.param.copy_(approx.reshape(t.original.shape).to(t.param.dtype))

    def description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        if value == self.knob.identity:
            return self.uncompressed_bits(prepared)
        payload = side = 0.0
        for t in prepared.targets:
            p, s = self._bits(prepared.cache[t.name], value)
            payload, side = payload + p, side + s
        return self._length(prepared, payload, side)


@register
@dataclass(frozen=True)
class Tucker(_HeadDecomposition):
    """Tucker (truncated HOSVD) of head-stacked attention weights at a kept mode-rank fraction."""

    name: ClassVar[str] = "tucker"
    knob: ClassVar[Knob] = Knob(name="rank_fraction", description="fraction of each mode's rank kept", **FRACTION)

    def _precompute(self, tensor):
        import tensorly as tl
        import torch

        factors = [torch.linalg.svd(torch.as_tensor(tl.unfold(tensor.numpy(), mode)), full_matrices=False)[0]
                   for mode in range(3)]
        return {"tensor": tensor, "factors": factors}

    def ranks(self, cached, value: float) -> list[int]:
        return [max(1, min(f.shape[1], math.ceil(value * d)))
                for f, d in zip(cached["factors"], cached["tensor"].shape)]

    def _reconstruct(self, cached, value: float):
        import tensorly as tl
        import torch

        factors = [f[:, :r].numpy() for f, r in zip(cached["factors"], self.ranks(cached, value))]
        core = tl.tenalg.multi_mode_dot(cached["tensor"].numpy(), factors, transpose=True)
        return torch.as_tensor(tl.tenalg.multi_mode_dot(core, factors))

    def _bits(self, cached, value: float) -> tuple[float, float]:
        ranks, dims = self.ranks(cached, value), cached["tensor"].shape
        size = math.prod(ranks) + sum(d * r for d, r in zip(dims, ranks))
        return _dense_or(32.0 * size, dims)


@register
@dataclass(frozen=True)
class CP(_HeadDecomposition):
    """CP (PARAFAC, ALS) of head-stacked attention weights at a fraction of the break-even rank."""

    name: ClassVar[str] = "cp"
    knob: ClassVar[Knob] = Knob(name="rank_fraction", description="CP rank as a fraction of the break-even rank",
                                **FRACTION)
    iterations: int = 50
    seed: int = 0

    def rank(self, cached, value: float) -> int:
        dims = cached["tensor"].shape
        return max(1, round(value * math.ceil(math.prod(dims) / sum(dims))))

    def _reconstruct(self, cached, value: float):
        import tensorly as tl
        import torch
        from tensorly.decomposition import parafac

        key = ("cp", value)
        if key not in cached:
            with warnings.catch_warnings():  # a rank above a mode's size: the SVD start pads from the seed
                warnings.simplefilter("ignore", UserWarning)
                cp = parafac(cached["tensor"].double().numpy(), rank=self.rank(cached, value), init="svd",
                             n_iter_max=self.iterations, tol=1e-8, random_state=self.seed)
            cached[key] = torch.as_tensor(tl.cp_to_tensor(cp)).float()
        return cached[key]

    def _bits(self, cached, value: float) -> tuple[float, float]:
        dims = cached["tensor"].shape
        return _dense_or(32.0 * self.rank(cached, value) * (sum(dims) + 1), dims)
