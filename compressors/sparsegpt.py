"""SparseGPT (Frantar & Alistarh 2023): pruning with second-order weight updates.

Columns of each linear layer's weight W (out × in) are visited in order, in blocks of
`block_size`; with U = chol(H⁻¹) (upper), H = 2XᵀX/N the layer's input Hessian (shared with
gptq, wanda and awq: compressors.calibration), a pruned weight's error is spread over the
columns not yet visited, as GPTQ spreads a rounding error:
    err = w_i·[pruned] / U_ii,   W[:, j≥i] −= err · U[i, j≥i].
The mask is chosen as the sweep goes, by the score w²/U_ii²: unstructured, the ⌊s·n⌋ lowest of
each block of rows × `block_size` columns (the paper's adaptive mask selection); under `pattern:
n:M`, the z = ⌊s·M⌋ lowest of every M inputs of a row, chosen when the sweep reaches them.
Description length: that of magnitude pruning (compressors.sparsity); the kept weights are the
updated ones, in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from pydantic import Field

from compressors.calibration import DataAware
from compressors.gptq import prepare_factors
from compressors.registry import DescriptionLength, Prepared, register
from compressors.sparsity import Pruner, group_of, nm_length, removed, unstructured_length
from mdl_slt.errors import UserError


def sparsegpt_prune(weight, factor, dead, value: float, m: int | None, block: int = 128):
    """(pruned and updated weight, kept mask) of an (out × in) `weight` at sparsity `value`,
    unstructured (`m` None) or N:M in groups of `m` inputs. Dead input columns are set to zero."""
    import torch

    w = weight.detach().float().contiguous().clone()
    w[:, dead] = 0
    kept = torch.ones_like(w, dtype=torch.bool)
    columns = w.shape[1]
    for start in range(0, columns, block):
        stop = min(start + block, columns)
        w1, u1 = w[:, start:stop].contiguous(), factor[start:stop, start:stop]
        diagonal = u1.diagonal()
        pruned = torch.zeros_like(w1, dtype=torch.bool)
        if m is None:
            order = torch.argsort(((w1 / diagonal) ** 2).reshape(-1), stable=True)
            pruned.view(-1)[order[:removed(value, w1.numel())]] = True
        err1 = torch.zeros_like(w1)
        for i in range(stop - start):
            if m is not None and i % m == 0:
                lowest = torch.argsort((w1[:, i:i + m] / diagonal[i:i + m]) ** 2, dim=1, stable=True)
                pruned[:, i:i + m].scatter_(1, lowest[:, :removed(value, m)], True)
            column = w1[:, i]
            q = column.masked_fill(pruned[:, i], 0.0)
            err = (column - q) / u1[i, i]
            w1[:, i:] -= err[:, None] * u1[i, i:][None, :]
            w1[:, i] = q
            err1[:, i] = err
        w[:, start:stop] = w1
        kept[:, start:stop] = ~pruned
        w[:, stop:] -= err1 @ factor[start:stop, stop:]
    return w, kept


@register
@dataclass(frozen=True)
class SparseGPT(DataAware, Pruner):
    """SparseGPT: second-order pruning with inverse-Hessian weight updates, unstructured or N:M."""

    name: ClassVar[str] = "sparsegpt"
    block_size: Annotated[int, Field(ge=8)] = 128
    damp: Annotated[float, Field(gt=0, le=1)] = 0.01

    def __post_init__(self):
        super().__post_init__()
        m = group_of(self.pattern)
        if m and self.block_size % m:
            raise UserError(f"sparsegpt: block_size {self.block_size} must be a multiple of {m} for pattern "
                            f"{self.pattern}: choose e.g. 128")

    def prepare(self, model, calibration=None) -> Prepared:
        prepared = prepare_factors(self, model, calibration)
        self._check_pattern(prepared)
        return prepared

    def _blocks(self, t) -> list[int]:
        """Weights in each column block of target `t`."""
        rows, columns = t.shape
        return [rows * (min(s + self.block_size, columns) - s) for s in range(0, columns, self.block_size)]

    def _group_sizes(self, prepared: Prepared) -> list[int]:
        return [size for t in prepared.targets for size in self._blocks(t)]

    def _prune(self, prepared: Prepared, t, value: float):
        factor, dead = prepared.cache[t.name]
        weight = t.matrix().float()
        return sparsegpt_prune(weight, factor.to(weight.device), dead.to(weight.device), value,
                               group_of(self.pattern), self.block_size)

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        masks = []
        for t in prepared.targets:
            pruned, kept = self._prune(prepared, t, value)
            t.write(pruned)
            masks.append(kept)
        if group_of(self.pattern):
            prepared.cache[("masks", value)] = masks

    def _description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        m = group_of(self.pattern)
        if m:
            key = ("masks", value)
            if key not in prepared.cache:  # from the originals alone; the model is not touched
                prepared.cache[key] = [self._prune(prepared, t, value)[1] for t in prepared.targets]
            parts = [nm_length(mask, m) for mask in prepared.cache[key]]
        else:  # the mask's size follows from the knob: ⌊s·n⌋ removed from every block
            parts = [unstructured_length(t.original.numel(),
                                         t.original.numel() - sum(removed(value, b) for b in self._blocks(t)))
                     for t in prepared.targets]
        return self._mask_length(prepared, parts)
