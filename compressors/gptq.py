"""GPTQ (Frantar et al. 2022) as fake quantization in torch, at any bit width and group size.

Columns of each weight W (out × in, see compressors.layout) are quantized in order; the error of
column i is spread over the not-yet-quantized columns with the inverse Hessian of the layer's
inputs, H = 2XᵀX/N:
    err = (w_i − q_i) / [U]_ii,   W[:, j>i] −= err · U[i, j>i],   U = chol(H⁻¹) (upper).
Targets are the weights of linear layers (`nn.Linear`, GPT-2's Conv1D) in the chosen roles; any
other weight stays untouched. `prepare` takes the Hessians from compressors.calibration (one
block-by-block pass, shared with sparsegpt, wanda and awq) and factorises them (1% dampening).
Hessians come from the uncompressed model (static groups); each bit width then costs only the
column sweep.

The grid (symmetric by default, per output channel or group, clip ratio by weight error) and the
description length are those of `rtn` with the same options (compressors.quantize.GridQuantizer).
auto-gptq cannot quantize without CUDA and breaks with transformers 5, so this is our own;
the tensor math (`gptq_quantize`) is apart from the module walking, as in llm-compressor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from compressors.calibration import DataAware, inverse_hessian_factor
from compressors.grid import Grid, fit_grid
from compressors.quantize import GridQuantizer
from compressors.registry import Prepared, register


def gptq_quantize(weight, factor, dead, grids: list[Grid], group_of_column, block: int = 128):
    """Quantize an (out × in) `weight` column by column with error feedback; returns
    (dequantized, codes). Dead input columns (never active) are set to zero."""
    import torch

    w = weight.detach().float().clone()
    w[:, dead] = 0
    q = torch.zeros_like(w)
    codes = torch.zeros_like(w)
    columns = w.shape[1]
    for start in range(0, columns, block):
        stop = min(start + block, columns)
        w1, u1 = w[:, start:stop].clone(), factor[start:stop, start:stop]
        err1 = torch.zeros_like(w1)
        for i in range(stop - start):
            grid = grids[group_of_column[start + i]]
            col = w1[:, i:i + 1]
            code = grid.encode(col)
            qcol = grid.decode(code)
            q[:, start + i] = qcol[:, 0]
            codes[:, start + i] = code[:, 0]
            err = (col - qcol) / u1[i, i]
            w1[:, i:] -= err @ u1[i:i + 1, i:]
            err1[:, i] = err[:, 0]
        w[:, stop:] -= err1 @ factor[start:stop, stop:]
    return q, codes


def prepare_factors(compressor, model, calibration) -> Prepared:
    """Snapshot the linear targets and keep each one's inverse-Hessian factor U and dead inputs
    (from the shared input statistics, compressors.calibration): gptq's and sparsegpt's prepare."""
    prepared, statistics = compressor._with_statistics(model, calibration)
    for t in prepared.targets:
        factor, dead = inverse_hessian_factor(statistics[t.name].hessian, compressor.damp)
        prepared.cache[t.name] = (prepared.keep(factor), dead)
    return prepared


@register
@dataclass(frozen=True)
class GPTQ(DataAware, GridQuantizer):
    """GPTQ: column-wise quantization with inverse-Hessian error feedback (symmetric grid by default)."""

    name: ClassVar[str] = "gptq"
    granularity: Literal["channel", "group"] = "channel"
    group_size: Annotated[int, Field(ge=1)] = 128
    damp: Annotated[float, Field(gt=0, le=1)] = 0.01
    clip_candidates: Annotated[int, Field(ge=1, le=1000)] = 50
    range_search: Literal["fast", "exhaustive"] = "fast"

    def prepare(self, model, calibration=None) -> Prepared:
        return prepare_factors(self, model, calibration)

    def _grids(self, weight, levels: int):
        """Per-channel grid, or one per group of `group_size` columns (static groups)."""
        if self.granularity == "channel":
            grid = fit_grid(weight, levels, self.symmetric, self.clip_candidates, self.range_search)
            return [grid], [0] * weight.shape[1]
        size = min(self.group_size, weight.shape[1])  # a last, shorter group where size does not divide the row
        grids = [fit_grid(weight[:, s:s + size], levels, self.symmetric, self.clip_candidates, self.range_search)
                 for s in range(0, weight.shape[1], size)]
        return grids, [c // size for c in range(weight.shape[1])]

    def _quantize(self, prepared: Prepared, t, levels: int):
        factor, dead = prepared.cache[t.name]
        weight = t.matrix().float()
        grids, group_of_column = self._grids(weight, levels)
        return gptq_quantize(weight, factor.to(weight.device), dead.to(weight.device), grids, group_of_column)
