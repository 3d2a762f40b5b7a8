"""The critical compression: the most compression whose loss increase stays within ε.

For a knob with a least- and a most-compressing end, c*(ε) = the most compressing knob value v
with L(v) − L(base) ≤ ε. One search serves every ε: the loss at each knob value is evaluated
at most once and shared, each ε is bracketed by the evaluated points (a passing point and the
next failing point beyond it), then bisected until the bracket is narrower than `precision`
or no realisable knob value lies inside it. When the evaluations (those made for every ε)
contradict monotonicity at some ε, that ε's result is flagged rather than trusted; bisection
cannot see a bump it never evaluates, so a clean flag is evidence, not proof.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class CriticalPoint:
    epsilon: float
    value: float | None  # most compressing passing value; None if even the least compressing end fails
    beyond: float | None  # the evaluated failing value just beyond it; None if the most compressing end passes
    loss: float | None
    monotone: bool


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


def find_critical(loss_at: Callable[[float], float], base_loss: float, epsilons, knob,
                  precision: float, snap: Callable[[float], float] = lambda v: v) -> CriticalSearch:
    """Bracket-and-bisect search for c*(ε) at every ε in `epsilons`, sharing evaluations."""
    evaluations: dict[float, float] = {}

    def loss(value: float) -> float:
        if value not in evaluations:
            evaluations[value] = float(loss_at(value))
        return evaluations[value]

    def passes(value: float, eps: float) -> bool:
        return loss(value) - base_loss <= eps

    order = knob.compression
    least, most = snap(knob.least), snap(knob.most)
    points = []
    for eps in sorted(set(float(e) for e in epsilons)):
        if eps < 0:
            raise ValueError(f"tolerance ε must be non-negative, got {eps}")
        if not passes(least, eps):
            points.append((eps, None, least, None))
            continue
        if passes(most, eps):
            points.append((eps, most, None, loss(most)))
            continue
        good, bad = _bracket(evaluations, base_loss, eps, order)
        while abs(good - bad) > precision:
            mid = snap((good + bad) / 2)
            if mid in (good, bad):
                break
            if passes(mid, eps):
                good = mid
            else:
                bad = mid
        points.append((eps, good, bad, loss(good)))
    # judged on all evaluations, those made for other ε included
    final = [CriticalPoint(*p, _monotone(evaluations, base_loss, p[0], order)) for p in points]
    return CriticalSearch(base_loss, precision, final, evaluations)


def _bracket(evaluations, base_loss, eps, order):
    """The least compressing failing value, and the most compressing passing value short of it."""
    failing = [v for v, l in evaluations.items() if l - base_loss > eps]
    bad = min(failing, key=order)
    good = max((v for v, l in evaluations.items() if l - base_loss <= eps and order(v) < order(bad)), key=order)
    return good, bad


def _monotone(evaluations, base_loss, eps, order) -> bool:
    """False if some evaluated value passes ε while a less compressing one fails it."""
    ranked = sorted(evaluations.items(), key=lambda item: order(item[0]))
    seen_fail = False
    for _, l in ranked:
        if l - base_loss > eps:
            seen_fail = True
        elif seen_fail:
            return False
    return True
