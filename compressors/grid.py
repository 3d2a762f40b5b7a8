"""Uniform quantization grids: the pure tensor math shared by round-to-nearest and GPTQ.

Weights are viewed as groups (rows of a 2-D array): one group per tensor, per output channel,
or per `group_size` consecutive inputs of a channel. With N levels, each group g has a scale
s_g and a zero point z_g and decodes codes q ∈ {0..N−1} to s_g·(q − z_g):

- symmetric: z = (N−1)/2, a grid symmetric about zero, clipped at ±α·max|w_g|;
- asymmetric: the grid spans [α·min w_g, α·max w_g], z the rounded code of zero.

α is chosen per group from `clip_ratios` to minimise the squared error of the group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GRANULARITIES = ("tensor", "channel", "group")


@dataclass
class Grid:
    scale: object  # (G, 1) tensor
    zero: object  # (G, 1) tensor, in code units
    levels: int

    def encode(self, groups):
        import torch

        return torch.clamp(torch.round(groups / self.scale + self.zero), 0, self.levels - 1)

    def decode(self, codes):
        return self.scale * (codes - self.zero)


def clip_ratios(candidates: int) -> list[float]:
    """α ∈ {1/c, 2/c, …, 1}: the clip ratios the weight-error search tries."""
    return [(i + 1) / candidates for i in range(candidates)]


def as_groups(weight, granularity: str, group_size: int):
    """View a weight as a (G, L) float array of groups; `from_groups` undoes it."""
    w = weight.detach().float()
    if granularity == "tensor":
        return w.reshape(1, -1)
    rows = w.reshape(w.shape[0], -1)
    if granularity == "channel":
        return rows
    size = min(group_size, rows.shape[1])
    if rows.shape[1] % size:
        from mdl_slt.errors import UserError

        raise UserError(f"group_size {group_size} does not divide a weight row of {rows.shape[1]}: "
                        "choose a divisor, or granularity 'channel'")
    return rows.reshape(-1, size)


def from_groups(groups, like):
    return groups.reshape(like.shape).to(like.dtype)


def _grid(groups, levels: int, symmetric: bool, ratio: float) -> Grid:
    import torch

    if symmetric:
        peak = groups.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
        scale = 2 * ratio * peak / (levels - 1)
        return Grid(scale, torch.full_like(scale, (levels - 1) / 2), levels)
    lo = (ratio * groups.amin(dim=1, keepdim=True)).clamp_max(0)
    hi = (ratio * groups.amax(dim=1, keepdim=True)).clamp_min(0)
    scale = ((hi - lo) / (levels - 1)).clamp_min(1e-12)
    return Grid(scale, torch.round(-lo / scale), levels)


def fit_grid(groups, levels: int, symmetric: bool, clip_ratios) -> Grid:
    """The per-group grid, α chosen from `clip_ratios` to minimise each group's squared error."""
    import torch

    best, best_err = None, None
    for ratio in clip_ratios:
        grid = _grid(groups, levels, symmetric, ratio)
        err = ((grid.decode(grid.encode(groups)) - groups) ** 2).sum(dim=1, keepdim=True)
        if best is None:
            best, best_err = grid, err
            continue
        better = err < best_err
        best = Grid(torch.where(better, grid.scale, best.scale), torch.where(better, grid.zero, best.zero), levels)
        best_err = torch.minimum(err, best_err)
    return best


def side_bits_per_group(levels: int, symmetric: bool) -> float:
    """An fp32 scale per group, and for an asymmetric grid its zero point at the code width."""
    return 32.0 + (0.0 if symmetric else math.ceil(math.log2(levels)))
