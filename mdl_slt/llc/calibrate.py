"""Choosing SGLD hyperparameters with reason: a step size × nβ sweep on one checkpoint.

Each setting runs short chains and is *stable* when no chain diverged, λ̂ > 0, split R̂ < 1.1
and the draws are stationary (the means of the first and second half of the draws differ by
less than 10% of λ̂). Per nβ, the recommended step is the largest stable one whose λ̂ is within
10% of the λ̂ at the next smaller stable step (on the plateau, before discretization bias); nβ
is preferred in the order given (the paper's 30 first). Hold the recommendation fixed across
the checkpoints you compare.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.sampling import estimate_llc
from mdl_slt.llc.trace import AllChainsDiverged

STEP_SIZES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
N_BETAS = (30.0, 10.0, 100.0)


@dataclass
class Setting:
    step_size: float
    n_beta: float
    llc_mean: float
    llc_std_error: float
    r_hat: float
    drift: float  # |mean of second half − mean of first half| of nβ(L − L*), relative to λ̂
    diverged: int
    stable: bool
    trace: list[float]  # chain-averaged nβ(L − L*) per draw, for the plot


def run_sweep(model, data, base: LLCConfig, step_sizes=STEP_SIZES, n_betas=N_BETAS, progress=None) -> list[Setting]:
    settings = []
    for n_beta in n_betas:
        for step in step_sizes:
            config = base.model_copy(update={"step_size": step, "n_beta": n_beta})
            try:
                r = estimate_llc(model, data, config)
            except AllChainsDiverged:  # any other error (a glob matching nothing, a bad setting) is the user's to see
                settings.append(Setting(step, n_beta, math.nan, math.nan, math.nan, math.nan,
                                        config.num_chains, False, []))
            else:
                drift = abs(r.drift)
                stable = (not r.diverged_chains and r.llc_mean > 0 and drift < 0.1
                          and (math.isnan(r.r_hat) or r.r_hat < 1.1))
                settings.append(Setting(step, n_beta, r.llc_mean, r.llc_std_error, r.r_hat, drift,
                                        len(r.diverged_chains), stable, r.mean_level.tolist()))
            if progress is not None:
                progress()
    return settings


def recommend(settings: list[Setting], n_betas=N_BETAS) -> Setting | None:
    for n_beta in n_betas:
        stable = sorted((s for s in settings if s.n_beta == n_beta and s.stable), key=lambda s: s.step_size)
        if not stable:
            continue
        choice = stable[0]
        for smaller, larger in zip(stable, stable[1:]):
            if abs(larger.llc_mean - smaller.llc_mean) > 0.1 * abs(smaller.llc_mean):
                break
            choice = larger
        return choice
    return None


def plot_sweep(settings: list[Setting], chosen: Setting | None, path) -> None:
    """λ̂ against step size per nβ (hollow: unstable), and the mean trace of every setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for n_beta in sorted({s.n_beta for s in settings}):
        rows = [s for s in settings if s.n_beta == n_beta and not math.isnan(s.llc_mean)]
        line, = left.plot([s.step_size for s in rows], [s.llc_mean for s in rows], label=f"nβ = {n_beta:g}")
        for s in rows:
            left.scatter(s.step_size, s.llc_mean, color=line.get_color(),
                         facecolors=line.get_color() if s.stable else "none", zorder=3)
            if s.trace:
                right.plot(s.trace, color=line.get_color(), alpha=0.35 if s is not chosen else 1.0,
                           linewidth=0.7 if s is not chosen else 1.6)
    if chosen is not None:
        left.scatter(chosen.step_size, chosen.llc_mean, s=160, marker="*", color="black", zorder=4,
                     label=f"recommended: η = {chosen.step_size:g}, nβ = {chosen.n_beta:g}")
    left.set(xscale="log", xlabel="step size η", ylabel="λ̂", title="LLC by step size (hollow: unstable)")
    left.legend(fontsize=7)
    right.set(xlabel="draw", ylabel="nβ·(L − L*) (chain mean)", title="Traces (bold: recommended)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def as_rows(settings: list[Setting]) -> list[dict]:
    return [{k: v for k, v in asdict(s).items() if k != "trace"} for s in settings]
