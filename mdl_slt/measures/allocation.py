"""Per-group knob values that keep the whole model within ε, chosen by each sensitivity measure and
judged by one held-out criterion: the measured loss of the whole compressed model.

Each method gives every weight group g a cost curve C_g(b) over a grid of knob values b (the same
grid for every method, the group's identity first):

    uniform  no curves: one knob value for every group (the one knob of a critical search, on the grid)
    hawq     C_g(b) = ½·(tr(H_g)/d_g)·‖ΔW_g(b)‖²     HAWQ-V2's Ω
    llc      C_g(b) = ½·(λ̂_g/d_g)·‖ΔW_g(b)‖²         the refined λ̂ per parameter in the trace's place
    fisher   C_g(b) = ½·(F_g/d_g)·‖ΔW_g(b)‖²         the empirical Fisher's
    oracle   C_g(b) = the measured ΔL of the model with group g alone compressed at b

(costs below zero, from a negative trace or a loss that fell, count as zero). A method's
allocations are the Pareto frontier of Σ_g bits_g(b_g) against Σ_g C_g(b_g): moving groups along
the lower convex hulls of their (cost, bits) points, steepest saving of bits per unit of cost
first, which is for each multiplier μ the allocation b_g = argmin_b bits_g(b) + μ·C_g(b) — the
Lagrangian of the multiple-choice knapsack, each the fewest bits for its own Σ C (HAWQ-V2's
frontier). Ordered from least to most compressing, the frontier is one knob; the critical search
(`mdl_slt.measures.critical`) finds its most compressing allocation within ε on the measured loss, so no
method is judged by its own prediction. Its length is every group's payload and side information
at its value plus every other parameter at 32 bits, with a standard error from a bootstrap over the
held-out sequences (the passing allocation found again in each draw among those evaluated).
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np

METHODS = ("uniform", "hawq", "llc", "fisher", "oracle")
SE_DRAWS = 500


@dataclass
class Group:
    """One weight group's side of an allocation: its restricted compressor and prepared state, the
    grid of its realisable knob values (identity first), the bits of each and its ‖ΔW‖²."""

    name: str
    size: int
    method: object
    prepared: object
    values: list = field(default_factory=list)
    bits: list = field(default_factory=list)
    delta2: list = field(default_factory=list)


def groups_for(model, entry, calibration, grid: list[float]) -> list[Group]:
    """Every weight group the entry acts on, restricted to it, on the knob values `grid` as it snaps
    them (repeats dropped), each with its bits (payload and side) and ‖ΔW‖²."""
    from compressors.groups import weight_groups

    found = []
    for g in weight_groups(model):
        method = entry.build()
        if not method.acts_on(g.name):
            continue
        method = entry.restricted(g.name).build()
        prepared = method.prepare(model, calibration)
        values = [method.knob.identity]
        for value in grid:
            snapped = method.snap(value, prepared)
            if snapped not in values and snapped != method.knob.identity:
                values.append(snapped)
        group = Group(g.name, g.size, method, prepared, values)
        for value in values:
            length = method.description_length(prepared, value)
            group.bits.append(length.payload_bits + length.side_bits)
            with method.applied(model, prepared, value):
                group.delta2.append(sum(float((t.param.detach().float() - t.original.to(t.param.device).float())
                                              .pow(2).sum()) for t in prepared.targets))
        found.append(group)
    return found


def frontier(bits: list, costs: list) -> list[tuple[int, ...]]:
    """The Pareto frontier of Σ bits against Σ cost (module docstring), least compressing first: each
    allocation an index into every group's points. Every group starts at its point of least cost
    (the fewest bits among ties) and moves along the lower convex hull of its (cost, bits) points."""
    hulls = [_hull(np.asarray(b, float), np.maximum(np.asarray(c, float), 0.0)) for b, c in zip(bits, costs)]
    moves = []  # (bits saved per unit of cost, group, hull position)
    for g, (hull, b, c) in enumerate(zip(hulls, bits, costs)):
        c = np.maximum(np.asarray(c, float), 0.0)
        for k in range(1, len(hull)):
            gain, spent = b[hull[k - 1]] - b[hull[k]], c[hull[k]] - c[hull[k - 1]]
            moves.append((math.inf if spent <= 0 else gain / spent, g, k))
    position = [0] * len(hulls)
    found = [tuple(h[0] for h in hulls)]
    for _, g, k in sorted(moves, key=lambda m: (-m[0], m[1], m[2])):
        position[g] = k
        found.append(tuple(h[p] for h, p in zip(hulls, position)))
    return found


def _hull(bits: np.ndarray, costs: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of (cost, bits) from the least cost to the fewest bits: each
    later point has fewer bits, and the bits saved per unit of cost fall along it."""
    order = sorted(range(len(bits)), key=lambda i: (costs[i], bits[i]))
    chain = []
    for i in order:
        if chain and bits[i] >= bits[chain[-1]]:
            continue  # no fewer bits for more cost: never chosen
        while len(chain) >= 2:
            a, b = chain[-2], chain[-1]  # b is kept only if it saves at a steeper rate than i does
            if (bits[a] - bits[b]) * (costs[i] - costs[a]) <= (bits[a] - bits[i]) * (costs[b] - costs[a]):
                chain.pop()
            else:
                break
        chain.append(i)
    return chain


def uniform(groups: list[Group], grid: list[float]) -> list[tuple[int, ...]]:
    """One knob value for every group, the grid's values least compressing first (each group at its
    own snap of the value), the identity for all first."""
    found = [tuple(0 for _ in groups)]
    for value in grid:
        chosen = tuple(g.values.index(g.method.snap(value, g.prepared)) if g.method.snap(value, g.prepared) in g.values
                       else 0 for g in groups)
        if chosen not in found:
            found.append(chosen)
    return found


def applied(model, groups: list[Group], allocation: tuple[int, ...]):
    """A context in which every group is compressed at its allocated value (restored afterwards)."""
    stack = ExitStack()
    for g, k in zip(groups, allocation):
        stack.enter_context(g.method.applied(model, g.prepared, g.values[k]))
    return stack


def total_bits(groups: list[Group], allocation: tuple[int, ...], other_params: int) -> float:
    """Every group's payload and side information at its value, every other parameter at 32 bits."""
    return sum(g.bits[k] for g, k in zip(groups, allocation)) + 32.0 * other_params


@dataclass
class Result:
    method: str
    epsilon: float
    bits: float | None  # the passing allocation's total description length; None if none passes
    bits_se: float
    delta_loss: float | None
    allocation: dict  # group → knob value
    evaluations: int
    frontier: int  # allocations on the method's knob


def judge(model, tokens, base, groups: list[Group], options: list[tuple[int, ...]], epsilons, other_params: int,
          method: str, numerics: str = "fp32") -> list[Result]:
    """The most compressing of `options` (least compressing first) within each ε on the measured
    held-out loss of the whole model (the critical search over their order), with its bits."""
    from compressors.registry import Knob
    from mdl_slt.compute.loss import sequence_losses
    from mdl_slt.measures.critical import find_critical

    differences = {}

    def loss_at(index: float) -> float:
        with applied(model, groups, options[int(index)]):
            per_sequence = sequence_losses(model, tokens, numerics=numerics)
        differences[int(index)] = per_sequence - base
        return float(per_sequence.mean())

    knob = Knob("allocation", 0.0, float(len(options) - 1), -1.0, "higher", "", "frontier position", 1.0)
    search = find_critical(loss_at, float(np.mean(base)), epsilons, knob, 1.0, levels=[float(i) for i in
                                                                                        range(len(options))])
    found = []
    for point in search.points:
        chosen = None if point.value is None else options[int(point.value)]
        bits = None if chosen is None else total_bits(groups, chosen, other_params)
        found.append(Result(method, point.epsilon, bits, _bits_se(differences, point.epsilon, groups, options,
                                                                 other_params),
                            None if chosen is None else float(differences[int(point.value)].mean()),
                            {} if chosen is None else {g.name: g.values[k] for g, k in zip(groups, chosen)},
                            search.num_evaluations, len(options)))
    return found


def _bits_se(differences: dict, epsilon: float, groups, options, other_params: int, seed: int = 0) -> float:
    """Standard error of the passing allocation's bits: sequences resampled, the most compressing
    evaluated allocation before the first failing one found again in each draw."""
    evaluated = sorted(differences)
    if not evaluated:
        return math.nan
    matrix = np.stack([np.asarray(differences[i], float) for i in evaluated])
    n = matrix.shape[1]
    picks = np.random.default_rng(seed).integers(0, n, size=(SE_DRAWS, n))
    bits = []
    for p in picks:
        means = matrix[:, p].mean(axis=1)
        failing = np.nonzero(~(means <= epsilon))[0]
        last = (failing[0] - 1) if len(failing) else len(evaluated) - 1
        bits.append(total_bits(groups, options[evaluated[last]], other_params) if last >= 0 else math.nan)
    bits = np.asarray(bits)
    return float(np.std(bits[np.isfinite(bits)], ddof=1)) if np.isfinite(bits).sum() > 1 else math.nan
