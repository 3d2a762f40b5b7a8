"""GPTQ (Frantar et al. 2022) as fake quantization in torch, at any bit width and group size.

Columns of each weight W (out × in) are quantized in order; the error of column i is spread over
the not-yet-quantized columns with the inverse Hessian of the layer's inputs, H = 2XᵀX/N:
    err = (w_i − q_i) / [U]_ii,   W[:, j>i] −= err · U[i, j>i],   U = chol(H⁻¹) (upper).
`prepare` collects H layer by layer (one forward pass over the calibration tokens per transformer
layer, so only that layer's Hessians are in memory) and factorises each once (with 1% dampening);
each bit width then costs only the column sweep.
The grid (symmetric, per output channel or group, clip ratio by weight error) and the
description length are those of `rtn` with the same options.

auto-gptq cannot quantize without CUDA and breaks with transformers 5, so this is our own;
the tensor math (`gptq_quantize`) is apart from the module walking, as in llm-compressor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from compressors.grid import Grid, as_groups, clip_ratios, fit_grid, side_bits_per_group
from compressors.quantize import BITS_KNOB, code_entropy, levels_for
from compressors.registry import Compressor, DescriptionLength, Knob, Prepared, register
from mdl_slt.errors import UserError

GPTQ_TARGETS = ("attention", "mlp", "unembedding")


def inverse_hessian_factor(hessian, damp: float):
    """U = upper Cholesky factor of (H + damp·mean(diag H)·I)⁻¹; dead inputs get H_ii = 1."""
    import torch

    h = hessian.clone().double()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(len(h), dtype=h.dtype, device=h.device)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True).float(), dead


def gptq_quantize(weight, factor, dead, grids: list[Grid], group_of_column, block: int = 128):
    """Quantize `weight` column by column with error feedback; returns (dequantized, codes)."""
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


def _by_layer(targets) -> list[list]:
    """Targets grouped by transformer layer (`….layers.<i>.…`), others alone, in model order."""
    import re

    blocks: dict = {}
    for t in targets:
        found = re.search(r"\.layers\.(\d+)\.", t.name)
        blocks.setdefault(found.group(1) if found else t.name, []).append(t)
    return list(blocks.values())


@register
@dataclass(frozen=True)
class GPTQ(Compressor):
    """GPTQ: column-wise quantization with inverse-Hessian error feedback (symmetric grid)."""

    name: ClassVar[str] = "gptq"
    knob: ClassVar[Knob] = BITS_KNOB
    targets: tuple[str, ...] = GPTQ_TARGETS
    granularity: Literal["channel", "group"] = "channel"
    group_size: int = 128
    damp: float = 0.01
    clip_candidates: int = 50
    calibration_sequences: int = 256

    def __post_init__(self):
        if "embedding" in self.targets:
            raise UserError("gptq needs each layer's inputs, which an embedding does not have: drop "
                            "'embedding' from targets (rtn can quantize it)")
        if self.granularity not in ("channel", "group"):
            raise UserError(f"gptq: granularity must be 'channel' or 'group', got {self.granularity!r}")

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        return math.log2(levels_for(value, True))

    def prepare(self, model, calibration=None) -> Prepared:
        import torch

        if calibration is None:
            raise UserError("gptq needs calibration tokens to estimate each layer's input Hessian")
        prepared = super().prepare(model, calibration)
        modules = {id(m.weight): m for m in model.modules() if isinstance(m, torch.nn.Linear)}
        for block in _by_layer(prepared.targets):  # one layer's Hessians at a time
            sums, hooks = {}, []
            for t in block:
                module = modules[id(t.param)]
                sums[t.name] = [torch.zeros(module.in_features, module.in_features, dtype=torch.float64,
                                            device=module.weight.device), 0]

                def collect(mod, args, name=t.name):
                    x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
                    sums[name][0] += x.T @ x
                    sums[name][1] += x.shape[0]

                hooks.append(module.register_forward_pre_hook(collect))
            try:
                with torch.inference_mode():
                    tokens = calibration[:self.calibration_sequences]
                    for start in range(0, len(tokens), 16):
                        model(input_ids=tokens[start:start + 16])
            finally:
                for hook in hooks:
                    hook.remove()
            for t in block:
                total, count = sums.pop(t.name)
                factor, dead = inverse_hessian_factor(2 * total / count, self.damp)
                prepared.cache[t.name] = (prepared.keep(factor), dead)
        return prepared

    def _groups_per_row(self, columns: int) -> int:
        return 1 if self.granularity == "channel" else columns // min(self.group_size, columns)

    def _grids(self, weight, levels: int):
        """Per-channel grid, or one per group of `group_size` columns (static groups)."""
        ratios = clip_ratios(self.clip_candidates)
        w = weight.detach().float()
        if self.granularity == "channel":
            return [fit_grid(w, levels, True, ratios)], [0] * w.shape[1]
        size = as_groups(w, "group", self.group_size).shape[1]
        grids = [fit_grid(w[:, s:s + size], levels, True, ratios) for s in range(0, w.shape[1], size)]
        return grids, [c // size for c in range(w.shape[1])]

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        import torch

        levels = levels_for(value)
        entropy = 0.0
        with torch.no_grad():
            for t in prepared.targets:
                factor, dead = prepared.cache[t.name]
                original = t.working
                grids, group_of_column = self._grids(original, levels)
                q, codes = gptq_quantize(original, factor.to(original.device), dead.to(original.device), grids,
                                         group_of_column)
                t.param.copy_(q.to(t.param.dtype))
                entropy += code_entropy(codes, levels)
        prepared.cache[("entropy", levels)] = entropy

    def description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        if value == self.knob.identity:
            return self.uncompressed_bits(prepared)
        levels = levels_for(value)
        if ("entropy", levels) not in prepared.cache:
            self.apply(None, prepared, value)
            self.restore(prepared)
        count = sum(t.original.numel() for t in prepared.targets)
        groups = sum(t.original.shape[0] * self._groups_per_row(t.original.shape[1]) for t in prepared.targets)
        return self._length(prepared, payload=count * math.log2(levels),
                            side=groups * side_bits_per_group(levels, True),
                            entropy=prepared.cache[("entropy", levels)])
