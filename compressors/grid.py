"""Uniform quantization grids: the pure tensor math shared by round-to-nearest and GPTQ.

Weights are viewed as groups (rows of 2-D arrays): one group per tensor, per output channel,
or per `group_size` consecutive inputs of a channel (the last one of a row shorter where
`group_size` does not divide it). With N levels, each group g has a scale
s_g and a zero point z_g and decodes codes q ∈ {0..N−1} to s_g·(q − z_g):

- symmetric: z = (N−1)/2, a grid symmetric about zero, clipped at ±α·max|w_g|;
- asymmetric: the grid spans [α·min w_g, α·max w_g], z the rounded code of zero.

α is chosen per group from {1/c, 2/c, …, 1} (c = `candidates`) to minimise the group's squared
error. `search: fast` (default) tries every (c/10)-th ratio, then the ratios around the best
one, and judges a group longer than SAMPLE weights by an estimate of its error: exact on its
TAIL largest-magnitude weights (where clipping errs), scaled up from SAMPLE evenly spaced ones
elsewhere; the range itself always comes from the whole group. That is 19 trial encodes of
at most 69,632 weights per group instead of c encodes of the whole group, and the chosen grid's
squared error stays within 1% of the exhaustive search's (tested). `search: exhaustive` tries
every ratio on every weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GRANULARITIES = ("tensor", "channel", "group")
SAMPLE = 65536  # evenly spaced weights per long group the fast search judges α on
TAIL = 4096  # and its largest-magnitude weights, whose clipping error the even sample would miss
COARSE = 10  # ratios tried in the first, coarse pass of the fast search


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


def as_groups(weight, granularity: str, group_size: int) -> list:
    """View an (out × in) weight as its groups: a list of (G, L) float arrays, one per group length;
    `from_groups` undoes it. Per tensor and per channel one array; in groups of `group_size`
    inputs, a row that `group_size` does not divide ends in a shorter group of its own, with its
    own scale (as GPTQ implementations allow), so every width is quantizable on the defaults."""
    w = weight.detach().float()
    if granularity == "tensor":
        return [w.reshape(1, -1)]
    rows = w.reshape(w.shape[0], -1)
    if granularity == "channel":
        return [rows]
    return consecutive(rows, group_size)


def consecutive(rows, size: int) -> list:
    """Each row of a (R, C) array in groups of `size` consecutive values: [(R·⌊C/size⌋, size)], and
    where `size` does not divide C, then each row's last r = C mod size values, (R, r)."""
    size = min(size, rows.shape[1])
    whole = rows.shape[1] // size * size
    parts = [rows[:, :whole].reshape(-1, size)]
    if whole < rows.shape[1]:
        parts.append(rows[:, whole:])
    return parts


def from_groups(parts: list, like):
    """The groups of `as_groups` or `consecutive` (as computed, e.g. dequantized) in `like`'s shape
    and dtype."""
    import torch

    if len(parts) == 1:
        return parts[0].reshape(like.shape).to(like.dtype)
    rows = parts[1].shape[0]  # a partial last group holds one group per row
    return torch.cat([parts[0].reshape(rows, -1), parts[1]], dim=1).reshape(like.shape).to(like.dtype)


def rounded(parts: list, like, grid_of):
    """(dequantized weight in `like`'s shape, the integer codes, flat) of groups `parts` on the grid
    `grid_of(groups)` of each array of them."""
    import torch

    grids = [grid_of(groups) for groups in parts]
    codes = [grid.encode(groups) for grid, groups in zip(grids, parts)]
    return (from_groups([grid.decode(c) for grid, c in zip(grids, codes)], like),
            torch.cat([c.reshape(-1) for c in codes]))


def group_count(parts: list) -> int:
    return sum(groups.shape[0] for groups in parts)


def grid_at(groups, levels: int, symmetric: bool, ratio) -> Grid:
    """The grid of each group at clip ratio `ratio` (a number, or a (G, 1) tensor of them)."""
    import torch

    if symmetric:
        peak = groups.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
        scale = 2 * ratio * peak / (levels - 1)
        return Grid(scale, torch.full_like(scale, (levels - 1) / 2), levels)
    lo = (ratio * groups.amin(dim=1, keepdim=True)).clamp_max(0)
    hi = (ratio * groups.amax(dim=1, keepdim=True)).clamp_min(0)
    scale = ((hi - lo) / (levels - 1)).clamp_min(1e-12)
    return Grid(scale, torch.round(-lo / scale), levels)


def _errors(groups, samples, levels, symmetric, ratios):
    """(len(ratios), G) squared error of each group on the grid of each ratio, estimated from
    `samples`: (values, weight per value) pairs whose weighted errors add up; the ratios are
    numbers or (G, 1) tensors."""
    import torch

    rows = []
    for ratio in ratios:
        grid = grid_at(groups, levels, symmetric, ratio)
        rows.append(sum((weight * (grid.decode(grid.encode(values)) - values) ** 2).sum(dim=1)
                        for values, weight in samples))
    return torch.stack(rows)


def _samples(groups):
    """The whole groups, or for long ones their TAIL largest-magnitude weights (each counted once)
    and SAMPLE evenly spaced ones below them standing for all the rest."""
    import torch

    length = groups.shape[1]
    if length <= SAMPLE + TAIL:
        return [(groups, 1.0)]
    top = groups.abs().topk(TAIL, dim=1)
    tail = groups.gather(1, top.indices)
    # integer positions: float32 linspace rounds past the end beyond 2²⁴ weights
    spaced = groups[:, torch.arange(SAMPLE, device=groups.device) * (length - 1) // (SAMPLE - 1)]
    below = (spaced.abs() < top.values[:, -1:]).to(groups.dtype)
    return [(tail, 1.0), (spaced, below * (length - TAIL) / below.sum(dim=1, keepdim=True).clamp_min(1))]


def fit_grid(groups, levels: int, symmetric: bool, candidates: int = 50, search: str = "fast") -> Grid:
    """The per-group grid whose clip ratio α ∈ {1/c, …, 1} minimises each group's squared error."""
    import torch

    ratios = torch.tensor(clip_ratios(candidates), dtype=groups.dtype, device=groups.device)
    if search == "exhaustive" or candidates <= 2 * COARSE:
        best = _errors(groups, [(groups, 1.0)], levels, symmetric, ratios.tolist()).argmin(dim=0)
        return grid_at(groups, levels, symmetric, ratios[best][:, None])
    samples = _samples(groups)
    stride = math.ceil(candidates / COARSE)
    coarse = list(range(candidates - 1, -1, -stride))[::-1]  # every stride-th ratio, ending at α = 1
    best = torch.tensor(coarse, device=groups.device)[_errors(groups, samples, levels, symmetric,
                                                             ratios[coarse].tolist()).argmin(dim=0)]
    around = [(best + offset).clamp(0, candidates - 1) for offset in range(-stride + 1, stride)]
    pick = _errors(groups, samples, levels, symmetric, [ratios[i][:, None] for i in around]).argmin(dim=0)
    chosen = torch.stack(around).gather(0, pick[None, :])[0]
    return grid_at(groups, levels, symmetric, ratios[chosen][:, None])


def side_bits_per_group(levels: int, symmetric: bool) -> float:
    """An fp32 scale per group, and for an asymmetric grid its zero point at the code width."""
    return 32.0 + (0.0 if symmetric else math.ceil(math.log2(levels)))
