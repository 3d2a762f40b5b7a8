"""Divergence checks, every CHECK_EVERY steps on each chain's window mean, against scales that mean
something for the model: a non-finite loss; a mean minibatch loss above that of a uniform
prediction, ln V (a language model that far from w* is destroyed; judged where w* itself is at
least half a nat better than uniform, so not for barely trained checkpoints); nβ·(L − L*) above
`runaway`·d (8× a regular model's λ); or above `jump` × the largest of the other chains' median
level, the chain's own earlier median level, and the noise of a window's level at w*,
nβ·σ_B/√CHECK_EVERY (σ_B the spread of one minibatch's loss at w*), floored at 1. The noise floor
tells a warm-up rise from a jump at large nβ: a chain climbing from w* starts at a level of zero
give or take that noise (±870 at nβ = 3·10⁴ on micro-pythia-90k@step1000, against a level of
thousands), which without it looked like a jump from nothing. A diverged chain is stopped
(vmapped: held at w*), excluded and named; when all diverge, one error with a smaller step to try.
"""

from __future__ import annotations

import statistics

CHECK_EVERY = 25  # steps between divergence checks (each costs one host synchronisation)
UNIFORM_MARGIN = 0.5  # nats: the uniform-prediction check needs w* this much better than uniform


class Health:
    """Divergence checks on each chain's window means (see the module docstring)."""

    def __init__(self, config, n_beta: float, init_loss: float, uniform: float | None, d: int, spread: float = 0.0):
        """`spread`: σ_B, the standard deviation of one minibatch's loss at w*."""
        self.n_beta, self.init_loss = n_beta, init_loss
        self.noise = max(1.0, n_beta * spread / CHECK_EVERY ** 0.5)
        self.uniform = uniform if uniform is not None and init_loss < uniform - UNIFORM_MARGIN else None
        self.limit, self.jump = config.runaway * d, config.jump
        self.history: list[list[float]] = [[] for _ in range(config.num_chains)]
        self.stopped: dict[int, tuple[int, str]] = {}  # chain → (steps taken, why)

    def active(self, chain: int) -> bool:
        return chain not in self.stopped

    def any_active(self, chains: int) -> bool:
        return len(self.stopped) < chains

    def check(self, traces, upto: int, chains) -> list[int]:
        """Judge `chains` on the window of CHECK_EVERY steps ending at `upto`; return those newly stopped."""
        import numpy as np

        window = traces[:, upto - CHECK_EVERY:upto].double().cpu().numpy()
        with np.errstate(invalid="ignore"):
            means = window.mean(axis=1)
        levels = self.n_beta * (means - self.init_loss)
        finite = np.isfinite(window).all(axis=1)
        ready = [c for c in range(len(window)) if self.active(c) and finite[c]]
        ranked = sorted(ready, key=lambda c: levels[c])
        place = {c: i for i, c in enumerate(ranked)}
        others = [levels[c] for c in ranked]  # sorted once; each chain's median leaves its own out
        stopped = []
        for c in chains:
            if not self.active(c):
                continue
            own = self.history[c]
            median = _median_without(others, place.get(c))
            reference = max(self.noise, float(median) if median is not None else 1.0,
                            float(statistics.median(own)) if len(own) >= 2 else 1.0)
            why = None
            if not finite[c]:
                why = "its loss became non-finite"
            elif self.uniform is not None and means[c] > self.uniform:
                why = f"its loss ({means[c]:.2f} nats) rose above a uniform prediction's ({self.uniform:.2f})"
            elif levels[c] > self.limit:
                why = f"nβ·(L − L*) = {levels[c]:.3g} passed {self.limit:.3g} (runaway × d)"
            elif (median is not None or len(own) >= 2) and levels[c] > self.jump * reference:
                why = f"nβ·(L − L*) = {levels[c]:.3g} jumped past {self.jump:g}× the other chains' and its own level"
            if why is None:
                self.history[c].append(float(levels[c]))
            else:
                self.stopped[c] = (upto, f"{why} by step {upto}")
                stopped.append(c)
        return stopped


def _median_without(ranked: list, position: int | None):
    """The median of the sorted values `ranked` with the one at `position` left out (none left out
    when None), as numpy's median gives it; None when no value is left."""
    n = len(ranked) - (position is not None)
    if n == 0:
        return None
    at = lambda j: ranked[j + 1] if position is not None and j >= position else ranked[j]  # noqa: E731
    return at(n // 2) if n % 2 else (at(n // 2 - 1) + at(n // 2)) / 2
