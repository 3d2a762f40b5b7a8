"""Per run: the critical compression on λ̂ of each run, method and ε, beside the held-out loss and
training progress over the same checkpoints; its table page, its figures (the methods side by
side, critical compression against λ̂, residuals) and the appendix of every fit. Needs no torch.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from mdl_slt.report import robustness
from mdl_slt.report.figures import Style, figure, finish, plt, short, spread
from mdl_slt.report.pdf import g, heading, in_order, paged, paragraph, table

BEST = {"llc": "λ̂", "loss": "loss", "tokens": "tokens", "llc_per_param": "λ̂/d", "redundancy": "λ̂·ln n",
        "llc_loss": "λ̂ + loss"}


def figure_pages(a, style: Style) -> list:
    """The per-run figures: (title, caption, draw) per page."""
    window = "filled: in the analysis window; hollow: outside it" if (~a.inside).any() else \
        "every checkpoint is in the window"
    return [
        ("The methods side by side: how well does λ̂ predict each?",
         "Per ε, method and model size, R², the slope in units of its standard error (HC3; dashed ±2: beyond them "
         "the slope is clear of zero) and the leave-one-out error, over the window. Look for: which family has high "
         "R² and a clear positive slope at every size.",
         lambda: methods_compared(a.fits, style)),
        *paged("Critical compression against the LLC, per method and ε",
               f"Lines: per-size OLS fits with their R². {window}. Bars: ±2 standard errors of λ̂ (across) and of the "
               "critical value (along the knob axis, from a bootstrap over the evaluation sequences). Look for: "
               "straight, tight lines with the points outside the window off them if anywhere.",
               lambda part: critical_vs_llc(a.table, a.fits, a.inside, part), style),
        *paged("Residuals of the per-size fits",
               "Residual of each checkpoint in the window from its line. Look for: no curvature and no trend; a "
               "bow means the relation is not linear over the window.",
               lambda part: residuals(a.table, a.fits, a.inside, part), style),
    ]


def table_page(pdf, a, summary: bool = False) -> None:
    """The per-run fits on a page of their own, led by `within_runs` when `summary` (no across-runs
    page said it)."""
    pdf.add_page()
    heading(pdf, "Per run: critical compression on λ̂", 13)
    if summary:
        within_runs(pdf, a)
    base = a.baselines.set_index(["model", "compressor", "epsilon"]) if len(a.baselines) else None
    rows = []
    for _, f in in_order(a.fits, a).iterrows():
        fitted = "slope" in f and pd.notna(f.slope)
        b = base.loc[(f.model, f.compressor, f.epsilon)] if base is not None else None
        against = "–" if b is None or pd.isna(b.best_out_of_sample) else (
            f"{BEST[b.best_out_of_sample]}; {g(b.p_llc_beyond_loss, 2)}{' (r ' + format(b.r_llc_loss, '.2f') + ')' if b.collinear else ''}")
        eiv = fitted and pd.notna(f.get("eiv_slope"))
        rows.append([short(f.model), f.compressor, f"{f.epsilon:g}", str(int(f.n)),
                     f"{f.r_squared:.2f}" if fitted else "too few",
                     f"{f.slope:.3g} [{f.slope_ci_low:.3g}, {f.slope_ci_high:.3g}]" if fitted else "–",
                     f"{f.eiv_slope:.3g} [{f.eiv_slope_ci_low:.3g}, {f.eiv_slope_ci_high:.3g}]" if eiv else "–",
                     g(f.rmse_loco) if fitted else "–", against, f"{f.converged_share:.0%}"])
    table(pdf, ["model", "method", "ε", "n", "R²", "slope β [95% CI]", "errors in both [95% CI]", "LOO error",
                "best LOO; p(λ̂ | loss)", "converged"], rows, [34, 20, 10, 8, 12, 50, 50, 18, 48, 18],
          size=7 if len(rows) > 24 else 8)
    pdf.ln(1)
    paragraph(pdf, "R²: of critical compression on λ̂; slope in knob units per unit of λ̂ (OLS, HC3 interval); errors in "
                   "both: York's slope with the standard errors of λ̂ and of each critical value, its interval scaled "
                   "by the scatter beyond them; LOO error: root-mean-square "
                   "error of each checkpoint predicted from a line through the others (knob units); best LOO: the "
                   "predictor (λ̂, the held-out loss, log tokens seen) with the smallest such error; p(λ̂ | loss): HC3 "
                   "Wald test of λ̂'s coefficient in c* = α + β_L·L + β_λ·λ̂, with r(λ̂, L) where |r| > 0.9 (collinear); "
                   "converged: share of the fitted checkpoints whose chains reached split R̂ ≤ 1.05 and the ESS target. "
                   "Every fit, with and without the window, and every baseline are in the appendix and in the CSV files "
                   "beside this PDF.", 7, 3.6)


def within_runs(pdf, a) -> None:
    """What the fits within each run say, and whether the answer held under other sampler settings."""
    base = a.baselines
    if len(base):
        decided = base[base.best_out_of_sample.notna()]
        adds = decided.p_llc_beyond_loss < 0.05
        paragraph(pdf, (f"Within each run, the same lines on the held-out loss and on log tokens seen, over the same "
                        f"checkpoints: λ̂ predicts best out of sample in {int((decided.best_out_of_sample == 'llc').sum())} "
                        f"of {len(decided)} fits (the loss in {int((decided.best_out_of_sample == 'loss').sum())}, tokens "
                        f"seen in {int((decided.best_out_of_sample == 'tokens').sum())}); λ̂ adds to a line in the loss at "
                        f"p < 0.05 in {int(adds.sum())} (at equal loss, more λ̂ goes with a higher critical value in "
                        f"{int((adds & (decided.coef_llc_beyond_loss > 0)).sum())} of them, a lower one in "
                        f"{int((adds & (decided.coef_llc_beyond_loss < 0)).sum())}); in {int(decided.collinear.sum())} "
                        "the two correlate beyond |r| = 0.9, and those checkpoints cannot separate them."), 8.5, 4.2)
    if len(a.robust):
        paragraph(pdf, robustness.sentence(a.robust), 8.5, 4.2)


def appendix(pdf, a) -> None:
    pdf.add_page()
    heading(pdf, "Appendix: fits inside the window and over every checkpoint")
    both = a.fits.merge(a.fits_all, on=["model", "compressor", "epsilon"], suffixes=("", "_all"), how="outer")
    rows = []
    for _, f in in_order(both, a).iterrows():
        rows.append([short(f.model), f.compressor, f"{f.epsilon:g}"] + [
            g(f.get(f"{k}{s}")) if k != "n" else str(int(f.get(f"n{s}")))
            for s in ("", "_all") for k in ("n", "r_squared", "slope", "spearman_rho", "rmse_loco")])
    table(pdf, ["model", "method", "ε", "n", "R²", "β", "ρ", "LOO", "n (all)", "R² (all)", "β (all)", "ρ (all)",
                "LOO (all)"], rows, [34, 26, 12, 10, 16, 22, 16, 18, 16, 18, 22, 18, 20], 7)
    if len(a.baselines):
        pdf.add_page()
        heading(pdf, "Appendix: λ̂ against the loss and training progress, over the same checkpoints")
        rows = []
        for _, b in in_order(a.baselines, a).iterrows():
            rows.append([short(b.model), b.compressor, f"{b.epsilon:g}", str(int(b.n))]
                        + [g(b[f"{k}_{p}"]) for p in ("llc", "loss", "tokens") for k in ("r2", "rmse_loco")]
                        + [g(b.r_llc_loss, 2), g(b.coef_llc_beyond_loss), g(b.p_llc_beyond_loss, 2),
                           g(b.p_loss_beyond_llc, 2)])
        table(pdf, ["model", "method", "ε", "n", "R² λ̂", "LOO λ̂", "R² loss", "LOO loss", "R² tokens", "LOO tokens",
                    "r(λ̂, L)", "β_λ | L", "p λ̂ | L", "p L | λ̂"], rows,
              [30, 24, 11, 9, 17, 19, 17, 19, 19, 21, 18, 20, 19, 19], 7)
        paragraph(pdf, "Lines of c* on each predictor alone (OLS, HC3; LOO: leave-one-checkpoint-out RMSE in knob "
                       "units); in c* = α + β_L·L + β_λ·λ̂, β_λ | L is λ̂'s coefficient at equal loss (knob units per "
                       "unit of λ̂), p λ̂ | L and p L | λ̂ the HC3 Wald tests of each coefficient. Where |r(λ̂, L)| > 0.9 "
                       "the checkpoints cannot separate the two.", 7, 3.6)
    if "p_same_line" in a.pooled:
        pdf.ln(3)
        heading(pdf, "Across sizes: does one line serve all?", 11)
        rows = [[p.compressor, f"{p.epsilon:g}", str(int(p.n)), str(int(p.n_models)), g(p.get("r2_common")),
                 g(p.get("r2_separate")), g(p.get("p_same_line")), g(p.get("p_same_slope")),
                 g(p.get("r2_per_param"))] for _, p in a.pooled.iterrows()]
        table(pdf, ["method", "ε", "n", "sizes", "R² one line", "R² per size", "p (one line)", "p (equal slopes)",
                    "R² on λ̂/d"], rows, [30, 14, 14, 14, 28, 28, 28, 30, 28], 8)
        paragraph(pdf, "p (one line): F test of one common line against one per size; p (equal slopes): HC3 Wald "
                       "test of the size × λ̂ interactions; λ̂/d: the LLC per sampled parameter.", 7, 3.6)


def methods_compared(fits: pd.DataFrame, style: Style) -> plt.Figure:
    """Per ε (columns) and method (x), each model size's R², slope in units of its standard error
    (HC3; methods' knobs differ in units, so this is the scale they share), and leave-one-out
    error: which family tracks λ̂, and how the answer changes with size."""
    epsilons = sorted(fits.epsilon.unique())
    metrics = [("r_squared", "R² of c* on λ̂"), ("slope_t", "slope / its standard error"),
               ("rmse_loco", "leave-one-out error (knob units)")]
    fits = fits.assign(slope_t=fits.slope / fits.slope_se) if "slope" in fits else fits
    fig, axes = figure(len(metrics), len(epsilons), sharex=True)
    positions = {m: i for i, m in enumerate(style.methods)}
    offsets = spread(style.models, widest=0.15, span=0.6)
    many = len(style.methods) > 4
    for col, eps in enumerate(epsilons):
        part = fits[(fits.epsilon == eps)]
        for row, (metric, label) in enumerate(metrics):
            ax = axes[row][col]
            for _, f in part.iterrows():
                if metric not in f or pd.isna(f[metric]) or f.compressor not in positions:
                    continue
                ax.scatter(positions[f.compressor] + offsets[f.model], f[metric], marker=style.marker[f.compressor],
                           color=style.colour[f.model], s=20 if many else 36, zorder=3)
            if metric == "r_squared":
                lowest = part.r_squared.min() if "r_squared" in part else math.nan
                ax.set_ylim(min(0.0, lowest - 0.05) if pd.notna(lowest) else 0.0, 1.02)
            if metric == "slope_t":
                ax.axhline(0, color="0.5", linewidth=0.8)
                for edge in (-2, 2):
                    ax.axhline(edge, color="0.5", linewidth=0.6, linestyle="--")
            ax.set_ylabel(label if col == 0 else "")
            if row == 0:
                ax.set_title(f"ε = {eps:g}")
            ax.set_xticks(range(len(style.methods)), style.methods, rotation=60 if many else 0,
                          ha="right" if many else "center", fontsize=6 if many else 7)
            ax.set_xlim(-0.5, len(style.methods) - 0.5)
    return finish(fig, style.size_handles())


def critical_vs_llc(table: pd.DataFrame, fits: pd.DataFrame, inside: pd.Series, style: Style) -> plt.Figure:
    """Critical compression against λ̂, one row per method and one column per ε; filled points are
    in the analysis window, hollow ones outside it, each with ±2 standard errors of both; lines are
    the per-size fits (R² in the key)."""
    epsilons, methods = sorted(table.epsilon.unique()), style.methods
    fig, axes = figure(len(methods), len(epsilons))
    for r, comp in enumerate(methods):
        for c, eps in enumerate(epsilons):
            ax = axes[r][c]
            part = table[(table.compressor == comp) & (table.epsilon == eps) & table.critical_value.notna()]
            labels = []
            for model in style.models:
                group = part[part.model == model]
                if not len(group):
                    continue
                win = inside.reindex(group.index).fillna(False).astype(bool)
                colour = style.colour[model]
                ax.scatter(group.llc_mean[win], group.critical_value[win], color=colour, s=16,
                           marker=style.marker[comp])
                ax.errorbar(group.llc_mean, group.critical_value, xerr=2 * group.llc_std_error.fillna(0),
                            yerr=2 * group.critical_se.fillna(0), fmt="none", ecolor=colour, elinewidth=0.6, alpha=0.6)
                ax.scatter(group.llc_mean[~win], group.critical_value[~win], facecolor="none", edgecolor=colour,
                           s=16, marker=style.marker[comp], linewidth=0.7)
                fit = fits[(fits.model == model) & (fits.compressor == comp) & (fits.epsilon == eps)]
                if len(fit) and "slope" in fit and pd.notna(fit.slope.iloc[0]):
                    f = fit.iloc[0]
                    xs = np.linspace(group.llc_mean[win].min(), group.llc_mean[win].max(), 20)
                    ax.plot(xs, f.intercept + f.slope * xs, color=colour, linewidth=1)
                    labels.append(Line2D([], [], color=colour, label=f"R² {f.r_squared:.2f}"))
            if labels:
                ax.legend(handles=labels, fontsize=6, loc="best", frameon=False)
            knob = part.knob_name.iloc[0] if len(part) else "knob"
            ax.set_title(f"{comp}, ε = {eps:g}", fontsize=8)
            ax.set_xlabel("λ̂" if r == len(methods) - 1 else "")
            ax.set_ylabel(f"critical {knob}" if c == 0 else "")
    return finish(fig, style.size_handles())


def residuals(table: pd.DataFrame, fits: pd.DataFrame, inside: pd.Series, style: Style) -> plt.Figure:
    """Residuals of the per-size fits against λ̂, one row per method and column per ε: curvature or
    a trend here means a line is the wrong shape."""
    epsilons, methods = sorted(table.epsilon.unique()), style.methods
    fig, axes = figure(len(methods), len(epsilons), sharex=True)
    used = table[inside]
    for r, comp in enumerate(methods):
        for c, eps in enumerate(epsilons):
            ax = axes[r][c]
            for _, f in fits[(fits.compressor == comp) & (fits.epsilon == eps)].iterrows():
                if pd.isna(f.get("slope")):
                    continue
                part = used[(used.model == f.model) & (used.epsilon == eps) & (used.compressor == comp)]
                ax.scatter(part.llc_mean, part.critical_value - (f.intercept + f.slope * part.llc_mean), s=14,
                           color=style.colour[f.model], marker=style.marker[comp])
            ax.axhline(0, color="0.5", linewidth=0.8)
            ax.set_title(f"{comp}, ε = {eps:g}", fontsize=8)
            ax.set_xlabel("λ̂" if r == len(methods) - 1 else "")
            ax.set_ylabel("residual" if c == 0 else "")
    return finish(fig, style.size_handles())
