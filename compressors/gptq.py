"""GPTQ (Frantar et al. 2022) as fake quantization in torch, at any bit width and group size.

Columns of each weight W (out × in, see compressors.layout) are quantized in order; the error of
column i is spread over the not-yet-quantized columns with the inverse Hessian of the layer's
inputs, H = 2XᵀX/N:
    err = (w_i − q_i) / [U]_ii,   W[:, j>i] −= err · U[i, j>i],   U = chol(H⁻¹) (upper).
Targets are the weights of linear layers (`nn.Linear`, GPT-2's Conv1D) in the chosen roles; any
other weight stays untouched. `prepare` collects the Hessians block by block: the calibration tokens run through the model
once, up to the first decoder block, whose inputs are kept; then each block runs once on its
inputs, its layers' Hessians are collected and factorised (1% dampening), and its outputs are
the next block's inputs. So prepare costs one pass through each block (O(layers)), and only one
block's Hessians are in memory at a time. Weights outside the blocks (the unembedding) take one
more full pass. Hessians come from the uncompressed model (static groups); each bit width then
costs only the column sweep.

The grid (symmetric, per output channel or group, clip ratio by weight error) and the
description length are those of `rtn` with the same options.
auto-gptq cannot quantize without CUDA and breaks with transformers 5, so this is our own;
the tensor math (`gptq_quantize`) is apart from the module walking, as in llm-compressor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from compressors import layout
from compressors.grid import Grid, as_groups, fit_grid
from compressors.quantize import BITS_KNOB, bit_levels, code_counts, levels_for, quantized_length
from compressors.registry import Compressor, DescriptionLength, Knob, Prepared, register
from compressors.targets import Role, select_targets
from mdl_slt.errors import UserError

GPTQ_TARGETS = ("attention", "mlp", "unembedding")
BATCH = 16  # calibration sequences per forward pass


def inverse_hessian_factor(hessian, damp: float):
    """U = upper Cholesky factor of (H + damp·mean(diag H)·I)⁻¹; dead inputs get H_ii = 1."""
    import torch

    h = hessian.clone().double()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(len(h), dtype=h.dtype, device=h.device)
    try:
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
        return torch.linalg.cholesky(inverse, upper=True).float(), dead
    except RuntimeError:  # torch.linalg.LinAlgError: not positive definite
        raise UserError(f"gptq: a layer's input Hessian is not positive definite with damp={damp:g}: "
                        "raise `damp` (e.g. 0.1)") from None


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


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the inputs it wanted are caught."""


def block_inputs(model, first_block, calibration) -> list[tuple[tuple, dict]]:
    """The (args, kwargs) the first decoder block receives, per calibration batch: one pass that
    stops at that block."""
    import torch

    caught = []

    def catch(module, args, kwargs):
        caught.append((args, kwargs))
        raise _Stop

    hook = first_block.register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.inference_mode():
            for batch in calibration.split(BATCH):
                try:
                    model(input_ids=batch, use_cache=False)
                except _Stop:
                    pass
    finally:
        hook.remove()
    return caught


def _next_inputs(args, kwargs, output):
    hidden = output[0] if isinstance(output, (tuple, list)) else output
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def collect_hessians(model, targets, calibration, on_block) -> None:
    """Run the calibration tokens through the model block by block, calling
    `on_block({target name: H = 2XᵀX/N})` after each block (and once more for targets outside
    the blocks), so only one block's Hessians are ever held."""
    import torch

    blocks = layout.blocks(model)
    inside = {id(p): i for i, b in enumerate(blocks) for p in b.parameters()}
    per_block: dict[int, list] = {}
    for t in targets:
        per_block.setdefault(inside.get(id(t.param), -1), []).append(t)

    def hooked(chosen):
        sums, hooks = {}, []
        for t in chosen:
            width = t.original.shape[0] if layout.is_transposed(t.module) else t.original.shape[-1]
            sums[t.name] = [torch.zeros(width, width, dtype=torch.float64, device=t.param.device), 0]

            def add(module, args, name=t.name):
                x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
                sums[name][0] += x.T @ x
                sums[name][1] += x.shape[0]

            hooks.append(t.module.register_forward_pre_hook(add))
        return sums, hooks

    def finish(sums, hooks):
        for hook in hooks:
            hook.remove()
        if sums:
            on_block({name: 2 * total / count for name, (total, count) in sums.items()})

    last = max(per_block)
    inputs = block_inputs(model, blocks[0], calibration) if last >= 0 else []
    with torch.inference_mode():
        for i, block in enumerate(blocks[:last + 1]):
            sums, hooks = hooked(per_block.get(i, []))
            try:
                inputs = [_next_inputs(args, kwargs, block(*args, **kwargs)) for args, kwargs in inputs]
            finally:
                finish(sums, hooks)
        if -1 in per_block:  # weights outside the blocks: one full pass
            sums, hooks = hooked(per_block[-1])
            try:
                for batch in calibration.split(BATCH):
                    model(input_ids=batch, use_cache=False)
            finally:
                finish(sums, hooks)


@register
@dataclass(frozen=True)
class GPTQ(Compressor):
    """GPTQ: column-wise quantization with inverse-Hessian error feedback (symmetric grid)."""

    name: ClassVar[str] = "gptq"
    knob: ClassVar[Knob] = BITS_KNOB
    targets: tuple[Role, ...] = GPTQ_TARGETS
    granularity: Literal["channel", "group"] = "channel"
    group_size: Annotated[int, Field(ge=1)] = 128
    damp: Annotated[float, Field(gt=0, le=1)] = 0.01
    clip_candidates: Annotated[int, Field(ge=1, le=1000)] = 50
    range_search: Literal["fast", "exhaustive"] = "fast"
    calibration_sequences: Annotated[int, Field(ge=1)] = 256

    def __post_init__(self):
        if "embedding" in self.targets:
            raise UserError("gptq needs each layer's inputs, which an embedding does not have: drop "
                            "'embedding' from targets (rtn can quantize it)")
        if {"norm", "bias"} & set(self.targets):
            raise UserError("gptq quantizes weight matrices: drop 'norm' and 'bias' from targets")

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        return math.log2(levels_for(value, True))

    def levels(self, prepared: Prepared) -> list[float]:
        return bit_levels(True)

    def prepare(self, model, calibration=None) -> Prepared:
        import torch

        if calibration is None:
            raise UserError("gptq needs calibration tokens to estimate each layer's input Hessian")
        modules = layout.owners(model)
        linear = [(n, p) for n, p in select_targets(model, self.targets)  # other weights stay untouched
                  if isinstance(modules.get(id(p)), torch.nn.Linear) or layout.is_transposed(modules.get(id(p)))]
        prepared = self._snapshot(model, linear, calibration)

        def factorise(hessians):
            for name, hessian in hessians.items():
                factor, dead = inverse_hessian_factor(hessian, self.damp)
                prepared.cache[name] = (prepared.keep(factor), dead)

        collect_hessians(model, prepared.targets, calibration[:self.calibration_sequences], factorise)
        return prepared

    def _grids(self, weight, levels: int):
        """Per-channel grid, or one per group of `group_size` columns (static groups)."""
        if self.granularity == "channel":
            return [fit_grid(weight, levels, True, self.clip_candidates, self.range_search)], [0] * weight.shape[1]
        size = as_groups(weight, "group", self.group_size).shape[1]
        grids = [fit_grid(weight[:, s:s + size], levels, True, self.clip_candidates, self.range_search)
                 for s in range(0, weight.shape[1], size)]
        return grids, [c // size for c in range(weight.shape[1])]

    def _quantize(self, prepared: Prepared, t, levels: int):
        factor, dead = prepared.cache[t.name]
        weight = t.matrix().float()
        grids, group_of_column = self._grids(weight, levels)
        return gptq_quantize(weight, factor.to(weight.device), dead.to(weight.device), grids, group_of_column)

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        levels = levels_for(value)
        counts = []
        for t in prepared.targets:
            q, codes = self._quantize(prepared, t, levels)
            t.write(q)
            counts.append(code_counts(codes, levels))
        prepared.cache[("counts", levels)] = counts

    def _groups_per_row(self, columns: int) -> int:
        return 1 if self.granularity == "channel" else columns // min(self.group_size, columns)

    def _description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        levels = levels_for(value)
        key = ("counts", levels)
        if key not in prepared.cache:  # from the originals alone; the model is not touched
            prepared.cache[key] = [code_counts(self._quantize(prepared, t, levels)[1], levels)
                                   for t in prepared.targets]
        groups = 0
        for t in prepared.targets:
            rows, columns = layout.matrix(t.original, t.module).shape
            groups += rows * self._groups_per_row(columns)
        return quantized_length(self, prepared, levels, True, groups, prepared.cache[key])
