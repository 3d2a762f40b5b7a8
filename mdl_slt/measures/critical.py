"""The critical compression: the most compression whose loss increase stays within ε.

For a knob with a least- and a most-compressing end, c*(ε) = the most compressing knob value v
with ΔL(v) = L(v) − L(base) ≤ ε. One search serves every ε: the loss at each knob value is
evaluated at most once and shared, each ε is bracketed by the evaluated points (a passing point
and the next failing point beyond it), then bisected until the bracket is narrower than the
precision or no realisable knob value lies inside it. A knob with finitely many realisable
values (level counts, ranks, heads, formats) is bisected over that list, so no compressed model
is ever evaluated twice.

A non-finite loss fails every tolerance (ΔL = +∞) and is listed in the result. When the
evaluations (those made for every ε) contradict monotonicity at some ε, that ε's result is
flagged rather than trusted; bisection cannot see a bump it never evaluates, so a clean flag is
evidence, not proof.

Beside the bracket, each ε gets a continuous critical value: where log ΔL, interpolated linearly
between the bracketing evaluations, crosses log ε (linear in ΔL when the passing point's ΔL ≤ 0).
A realisable grid is coarse (even level counts are 0.2–0.3 bits apart at 3–5 bits); the
interpolated value is what fits use by default, flagged `wide` when the bracket is wider than
the precision.

Its standard error comes from the per-sequence losses the evaluations already made: every
compressed model and the base model are evaluated on the same sequences, so each ΔL(v) is a mean
of paired differences. A bootstrap over sequences redraws those means at every evaluated value
and finds the crossing again exactly as above (`critical_standard_error`); no model is evaluated
again. A method with random draws (head pruning) averages each sequence over its draws first,
so the error is that of the held-out sample given those draws.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class CompressorEntry(BaseModel):
    """One compressor of an experiment: a registered method with its options, under its own id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(None, description="unique within the experiment; default: the compressor's name")
    name: str = Field(description="a registered compressor (`mdl-slt compressors`)")
    options: dict[str, Any] = Field(default_factory=dict)
    precision: float | None = Field(None, gt=0, description="search precision in the knob's units "
                                                            "(default: the knob's own, e.g. 0.05 bits for rtn)")

    @model_validator(mode="after")
    def _known(self):
        import compressors

        compressors.get(self.name, **self.options)  # an unknown name or a bad option is one UserError line
        return self

    @property
    def key(self) -> str:
        return self.id or self.name

    def build(self):
        import compressors

        return compressors.get(self.name, **self.options)

    def search_precision(self, compressor) -> float:
        return self.precision if self.precision is not None else compressor.knob.precision

    def restricted(self, group: str) -> "CompressorEntry":
        """This entry restricted to one weight group (the others left exact), under its own id."""
        return CompressorEntry(id=self.key, name=self.name, options={**self.options, "groups": [group]},
                               precision=self.precision)


class CriticalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    compressors: list[CompressorEntry] = Field(default_factory=lambda: [CompressorEntry(name="rtn")])
    epsilons: list[float] = Field(default_factory=lambda: [0.02, 0.05, 0.1])
    numerics: Literal["fp32", "bf16"] = Field("fp32", description="loss evaluation of the base loss and the search: "
                                                                  "fp32, or bf16 autocast (CUDA; see the README)")

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, values):
        if isinstance(values, dict) and "precision" in values:
            raise ValueError("`critical.precision` is set per compressor entry now, in its knob's units: "
                             "write `precision:` beside the entry's `name`")
        return values

    @field_validator("epsilons")
    @classmethod
    def _positive(cls, values):
        if not values or any(not (v > 0) for v in values):
            raise ValueError("epsilons must be a non-empty list of positive loss increases (nats/token)")
        return sorted(values)

    @field_validator("compressors")
    @classmethod
    def _unique(cls, entries):
        seen = [e.key for e in entries]
        twice = sorted({k for k in seen if seen.count(k) > 1})
        if twice:
            raise ValueError(f"compressor ids must be unique, but {', '.join(repr(k) for k in twice)} appears more "
                             "than once: give each entry its own `id`")
        return entries


@dataclass(frozen=True)
class CriticalPoint:
    epsilon: float
    value: float | None  # most compressing passing value; None if even the least compressing end fails
    beyond: float | None  # the evaluated failing value just beyond it; None if the most compressing end passes
    loss: float | None
    monotone: bool
    interpolated: float | None  # where log ΔL crosses log ε inside the bracket
    interpolation: Literal["log-linear", "linear", "end", "none"]
    wide: bool  # the bracket is wider than the search precision


@dataclass
class CriticalSearch:
    base_loss: float
    precision: float
    points: list[CriticalPoint]
    evaluations: dict[float, float] = field(default_factory=dict)  # knob value -> loss, in order made

    @property
    def num_evaluations(self) -> int:
        return len(self.evaluations)

    @property
    def monotone(self) -> bool:
        return all(p.monotone for p in self.points)

    @property
    def nonfinite(self) -> list[float]:
        """Knob values whose loss was NaN or infinite (each failed every tolerance)."""
        return [v for v, l in self.evaluations.items() if not math.isfinite(l)]


def find_critical(loss_at: Callable[[float], float], base_loss: float, epsilons, knob, precision: float,
                  snap: Callable[[float], float] = lambda v: v, levels: list[float] | None = None) -> CriticalSearch:
    """Bracket-and-bisect search for c*(ε) at every ε in `epsilons`, sharing evaluations.

    `levels`: the realisable knob values from least to most compressing, for a discrete knob;
    otherwise values are bisected continuously and mapped to realisable ones by `snap`.
    """
    evaluations: dict[float, float] = {}
    order = knob.compression

    def excess(value: float) -> float:
        if value not in evaluations:
            evaluations[value] = float(loss_at(value))
        increase = evaluations[value] - base_loss
        return increase if math.isfinite(increase) else math.inf

    def passes(value: float, eps: float) -> bool:
        return excess(value) <= eps

    if levels is not None:
        levels = list(levels)
        least, most = levels[0], levels[-1]
        index = {v: i for i, v in enumerate(levels)}
        coordinate = [order(v) for v in levels]  # increasing: levels run from least to most compressing
    else:
        least, most = snap(knob.least), snap(knob.most)
    results = []
    for eps in sorted(set(float(e) for e in epsilons)):
        if not eps >= 0:
            raise ValueError(f"tolerance ε must be non-negative, got {eps}")
        if not passes(least, eps):
            results.append((eps, None, least))
            continue
        if passes(most, eps):
            results.append((eps, most, None))
            continue
        good, bad = _bracket(evaluations, base_loss, eps, order)
        while abs(good - bad) > precision:
            if levels is not None:  # the realisable value nearest the middle, strictly inside the bracket
                low, high = index[good], index[bad]
                if high - low <= 1:
                    break
                at = bisect.bisect_left(coordinate, (order(good) + order(bad)) / 2, low + 1, high)
                mid = levels[min(max(at, low + 1), high - 1)]
            else:
                mid = snap((good + bad) / 2)
                if mid in (good, bad):
                    break
            if passes(mid, eps):
                good = mid
            else:
                bad = mid
        results.append((eps, good, bad))
    points = []
    for eps, good, bad in results:  # judged on all evaluations, those made for other ε included
        at, kind = _interpolate(good, bad, excess, eps)
        points.append(CriticalPoint(eps, good, bad, None if good is None else evaluations[good],
                                    _monotone(evaluations, base_loss, eps, order), at, kind,
                                    good is not None and bad is not None and abs(good - bad) > precision))
    return CriticalSearch(base_loss, precision, points, evaluations)


def _interpolate(good, bad, excess, eps):
    """Where log ΔL crosses log ε, linear between the passing and the failing evaluation."""
    if good is None:
        return None, "none"
    if bad is None:
        return good, "end"
    low, high = excess(good), excess(bad)
    if not math.isfinite(high):
        return good, "none"
    if low > 0:
        t, kind = (math.log(eps) - math.log(low)) / (math.log(high) - math.log(low)), "log-linear"
    else:
        t, kind = (eps - low) / (high - low), "linear"
    return good + min(max(t, 0.0), 1.0) * (bad - good), kind


def _fails(loss: float, base_loss: float, eps: float) -> bool:
    return not (loss - base_loss <= eps)  # NaN fails


def _bracket(evaluations, base_loss, eps, order):
    """The least compressing failing value, and the most compressing passing value short of it."""
    bad = min((v for v, l in evaluations.items() if _fails(l, base_loss, eps)), key=order)
    good = max((v for v, l in evaluations.items() if not _fails(l, base_loss, eps) and order(v) < order(bad)),
               key=order)
    return good, bad


def _monotone(evaluations, base_loss, eps, order) -> bool:
    """False if some evaluated value passes ε while a less compressing one fails it."""
    seen_fail = False
    for value, loss in sorted(evaluations.items(), key=lambda item: order(item[0])):
        if _fails(loss, base_loss, eps):
            seen_fail = True
        elif seen_fail:
            return False
    return True


SE_DRAWS = 1000


def critical_standard_error(differences: dict[float, Any], eps: float, order, draws: int = SE_DRAWS,
                            seed: int = 0) -> float:
    """Standard error of the interpolated critical value at ε: a bootstrap over the evaluation
    sequences of `differences` (knob value → per-sequence loss differences, compressed − base,
    the same sequences for every value). Each draw resamples the sequences, takes every value's
    mean ΔL, brackets ε among the evaluated values and interpolates (`_bracket`, `_interpolate`);
    a draw in which every value fails gives the least compressing one, in which none fails the
    most compressing one. NaN with fewer than two sequences or no evaluation."""
    import numpy as np

    values = sorted(differences, key=order)
    if not values:
        return math.nan
    matrix = np.stack([np.asarray(differences[v], float) for v in values])  # (values, sequences)
    n = matrix.shape[1]
    if n < 2:
        return math.nan
    picks = np.random.default_rng(seed).integers(0, n, size=(draws, n))
    means = np.stack([matrix[:, p].mean(axis=1) for p in picks])  # (draws, values)
    found = []
    for row in means:
        excess = dict(zip(values, np.where(np.isfinite(row), row, np.inf).tolist()))
        if all(not _fails(e, 0.0, eps) for e in excess.values()):
            found.append(values[-1])
        elif _fails(excess[values[0]], 0.0, eps):
            found.append(values[0])
        else:
            good, bad = _bracket(excess, 0.0, eps, order)
            found.append(_interpolate(good, bad, excess.__getitem__, eps)[0])
    return float(np.std(found, ddof=1))
