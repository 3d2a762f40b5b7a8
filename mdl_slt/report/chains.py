"""The LLC over training and its chains: λ̂ with its errors, split R̂ and ESS per checkpoint, and
every SGLD step at the first, middle and last checkpoints; their figure pages. Needs no torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mdl_slt.report.figures import FIGURE_SIZE, Style, figure, finish, plt, robust_limits, short, steps_axis


def figure_pages(a, style: Style) -> list:
    """(title, caption, draw) of the LLC's pages: over training, and the chains where traces are stored."""
    pages = [("The LLC over training and whether its chains converged",
              "λ̂ with ±2 standard errors (Monte-Carlo and between chains), split R̂ and pooled ESS. Look for: R̂ at "
              "or below 1.05 everywhere; a checkpoint above it is flagged in the tables and counted on page 1.",
              lambda: llc_over_training(a.table, style))]
    if a.traces:
        pages.append(("SGLD chains, every step",
                      "nβ·(L_B − L(w*)) of each chain at the first, middle and last checkpoints; shaded: the burn-in "
                      "read from the trace; dashed: λ̂. Look for: a rise, a level plateau, chains that agree.",
                      lambda: chain_traces(a.traces, style)))
    return pages


def llc_over_training(table: pd.DataFrame, style: Style) -> plt.Figure:
    """λ̂ over training with ±2 standard errors, split R̂ (converged at ≤ 1.05) and pooled ESS."""
    llc = table.drop_duplicates(["model", "step"]).sort_values("step")
    fig, (ax, rhat, ess) = plt.subplots(1, 3, figsize=FIGURE_SIZE, gridspec_kw={"width_ratios": [2.2, 1, 1]})
    for model in style.models:
        part = llc[llc.model == model]
        colour = style.colour[model]
        ax.errorbar(part.step, part.llc_mean, yerr=2 * part.llc_std_error.fillna(0), marker="o", markersize=3,
                    capsize=2, color=colour, label=short(model))
        rhat.plot(part.step, part.r_hat, marker="o", markersize=3, color=colour)
        ess.plot(part.step, part.ess, marker="o", markersize=3, color=colour)
    rhat.axhline(1.05, color="firebrick", linestyle="--", linewidth=0.8)
    for panel in (ax, rhat, ess):
        steps_axis(panel, llc.step)
    ax.set(ylabel="LLC estimate λ̂ (±2 s.e.)", title="λ̂ over training")
    rhat.set(ylabel="split R̂", title="chain agreement (dashed: 1.05)")
    rhat.set_ylim(min(0.99, llc.r_hat.min() - 0.005), max(1.07, llc.r_hat.max() + 0.01))
    ess.set(ylabel="bulk ESS (pooled)", title="effective draws")
    ess.set_ylim(0, llc.ess.max() * 1.1 if llc.ess.notna().any() else 1)
    return finish(fig, style.size_handles())


def chain_traces(traces: list[tuple[dict, object]], style: Style, per_model: int = 3) -> plt.Figure:
    """Every step of the SGLD chains, burn-in shaded, at the first, middle and last checkpoints of
    each model: a healthy chain rises, levels off, and agrees with the others."""
    by_model: dict[str, list] = {}
    for row, trace in traces:
        by_model.setdefault(row["model"], []).append((row, trace))
    models = [m for m in style.models if m in by_model] or list(by_model)
    fig, axes = figure(max(1, len(models)), per_model)
    from mdl_slt.llc.trace import burnin_of

    for r, model in enumerate(models):
        items = by_model[model]
        picks = [items[i] for i in sorted(set(np.linspace(0, len(items) - 1, per_model).round().astype(int)))]
        for ax, (row, trace) in zip(axes[r], picks):
            levels = trace.n_beta * (trace.losses.astype(float) - trace.init_loss)
            for chain in range(len(levels)):
                ax.plot(levels[chain], linewidth=0.5, alpha=0.8)
            burnin, _ = burnin_of(trace)
            ax.axvspan(0, burnin, color="0.85", zorder=0)
            ax.axhline(row["llc_mean"], color="black", linestyle="--", linewidth=0.7)
            ax.set_title(f"{short(model)} step {row['step']}: λ̂ {row['llc_mean']:.1f}, burn-in {burnin}", fontsize=7)
            finite = levels[np.isfinite(levels)]
            if len(finite):
                ax.set_ylim(*robust_limits(finite, spread=6))
            ax.set_xlim(0, levels.shape[1])
        for ax in axes[r][len(picks):]:
            ax.axis("off")
        axes[r][0].set_ylabel("nβ·(L_B − L(w*))")
    for ax in axes[-1]:
        ax.set_xlabel("SGLD step")
    return finish(fig)
