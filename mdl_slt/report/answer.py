"""The answer, first: does λ̂ predict the critical compression beyond the held-out loss, on runs the
fit never saw, and in which direction? Page 1 (a picture, one sentence per family), the across-runs
table after it, and the appendix of every form across runs. Needs no torch.

The picture pools the runs where λ̂ and the loss can part without a size between them: the largest
pool of runs of one size, else all runs (a rule fixed before any fit is seen), at the middle
tolerance of the experiment's list; per family, the critical value against λ̂ and against the loss,
one colour per run, each panel with its predictor's line and its leave-one-run-out error (with a
single run, its leave-one-checkpoint-out error).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from mdl_slt.analysis.pooled import FORMS
from mdl_slt.analysis.tables import usable
from mdl_slt.report.figures import FIGURE_SIZE, Style, plt, short
from mdl_slt.report.layers import sentence as layer_sentence
from mdl_slt.report.measures import sentence as measures_sentence
from mdl_slt.report.pdf import PAGE_WIDTH_MM, g, heading, paragraph, paragraph_height, save_figure, table
from mdl_slt.report.per_run import BEST, within_runs

PER_ROW = 3  # families per row of the picture, two panels each


def pool(a) -> tuple[str, list[str]]:
    """(label, runs) of page 1's picture: the largest pool of runs of one size, else all runs."""
    runs = list(usable(a.table, a.inside).model.unique())
    if not len(a.across_runs):
        return ("the run" if len(runs) == 1 else "all runs"), runs
    sized = a.across_runs[a.across_runs.scope.str.startswith("runs of d")]
    scope = sized.sort_values("n_runs", ascending=False, kind="stable").scope.iloc[0] if len(sized) else "all runs"
    rows = a.across_lines[next(k for k in a.across_lines if k[0] == scope)][1]
    return scope, list(rows.model.unique())


def middle_epsilon(a) -> float:
    epsilons = sorted(a.table.epsilon.unique())
    return epsilons[len(epsilons) // 2]


def errors_of(a, scope: str, comp: str, eps: float) -> dict:
    """Each predictor's error on what its line never saw: leave-one-run-out across runs, else
    leave-one-checkpoint-out of the one run's lines."""
    if len(a.across_runs):
        row = a.across_runs[(a.across_runs.scope == scope) & (a.across_runs.compressor == comp)
                            & (a.across_runs.epsilon == eps)]
        return {} if not len(row) else {"llc": row.rmse_loro_llc.iloc[0], "loss": row.rmse_loro_loss.iloc[0]}
    row = a.baselines[(a.baselines.compressor == comp) & (a.baselines.epsilon == eps)]
    return {} if not len(row) else {"llc": row.rmse_loco_llc.iloc[0], "loss": row.rmse_loco_loss.iloc[0]}


def picture(a, style: Style) -> plt.Figure:
    """Page 1's picture (module docstring)."""
    scope, runs = pool(a)
    eps = middle_epsilon(a)
    rows = usable(a.table, a.inside)
    rows = rows[rows.model.isin(runs) & (rows.epsilon == eps)]
    methods = style.methods
    lines = math.ceil(len(methods) / PER_ROW)
    fig, axes = plt.subplots(lines, 2 * min(PER_ROW, len(methods)), squeeze=False,
                             figsize=(FIGURE_SIZE[0], 0.6 + 3.2 * lines))
    error = "LORO" if len(runs) > 1 else "LOO"
    for i, comp in enumerate(methods):
        part = rows[rows.compressor == comp]
        errors = errors_of(a, scope, comp, eps)
        for j, (column, label) in enumerate((("llc_mean", "λ̂"), ("base_loss", "held-out loss (nats/token)"))):
            ax = axes[i // PER_ROW][2 * (i % PER_ROW) + j]
            for model, group in part.groupby("model"):
                ax.scatter(group[column], group.critical_value, s=14, color=style.colour[model])
            if part[column].nunique() > 1 and part.llc_params.nunique() == 1:  # one size: the fitted line itself
                slope, intercept = np.polyfit(part[column], part.critical_value, 1)
                xs = np.linspace(part[column].min(), part[column].max(), 2)
                ax.plot(xs, intercept + slope * xs, color="0.3", linewidth=0.9)
            knob = part.knob_name.iloc[0] if len(part) else "knob"
            found = errors.get("llc" if j == 0 else "loss", math.nan)
            ax.set_title(f"{comp} on {'λ̂' if j == 0 else 'the loss'}: {error} {g(found)}", fontsize=8)
            ax.set_xlabel(label)
            ax.set_ylabel(f"critical {knob}" if j == 0 else "")
    for ax in axes.flat[len(methods) * 2:]:
        ax.axis("off")
    handles = [Line2D([], [], color=style.colour[m], marker="o", linestyle="", label=short(m)) for m in runs]
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), frameon=False, fontsize=7)
    fig.tight_layout(rect=(0, 0.08 if lines == 1 else 0.04, 1, 1))
    return fig


def family_sentence(comp: str, part: pd.DataFrame, knob: str, sign: int | None) -> str:
    """One family's answer across runs, in words: the best predictor of unseen runs per ε, whether
    λ̂ adds to the loss out of sample, and λ̂'s coefficient at equal loss against the theory's sign."""
    part = part.sort_values("epsilon")
    each = " / ".join(f"{e:g}" for e in part.epsilon)
    best = " / ".join(BEST.get(b, "–") for b in part.best_across_runs)
    adds = int(part.llc_adds_out_of_sample.fillna(False).astype(bool).sum())
    text = (f"{comp} ({knob}) at ε = {each}: best on unseen runs {best} (LORO λ̂ "
            f"{' / '.join(g(v) for v in part.rmse_loro_llc)}, loss {' / '.join(g(v) for v in part.rmse_loro_loss)}). "
            f"λ̂ adds to the loss out of sample at {adds} of {len(part)} (λ̂ + loss "
            f"{' / '.join(g(v) for v in part.rmse_loro_llc_loss)}). At equal loss, λ̂'s coefficient is "
            + " / ".join(f"{g(r.coef_llc_loss)} [{g(r.coef_ci_low_llc_loss)}, {g(r.coef_ci_high_llc_loss)}]"
                         for r in part.itertuples()) + f" {knob} per unit of λ̂")
    if sign is None:
        return text + "."
    against, theory = int((part.llc_direction == "against theory").sum()), int((part.llc_direction == "as theory").sum())
    expected = f"a {'higher' if sign > 0 else 'lower'} {knob}"
    return text + (f": in the theory's direction (more λ̂, less compressible: {expected}) at {theory} of {len(part)}, "
                   f"against it at {against}, unclear (interval across 0) at {len(part) - against - theory}.")


def first_page(pdf, a, stamp: str, folder) -> None:
    """Page 1: what was measured, the picture, and one sentence per family."""
    from mdl_slt import __version__

    exp, t = a.experiment, a.table
    style = Style(t, a.entries)
    pdf.add_page()
    heading(pdf, f"mdl-slt report: {exp.name}", 18)
    paragraph(pdf, f"Written {stamp} by mdl-slt {__version__} from {exp.store}; device {exp.device}.", 8)
    models = ", ".join(f"{short(m)} ({int(t[t.model == m].num_params.iloc[0]):,} parameters, "
                       f"{t[t.model == m].step.nunique()} checkpoints)" for m in style.models)
    methods = ", ".join(f"{c} ({p.method.iloc[0]}, knob {p.knob_name.iloc[0]})" for c, p in t.groupby("compressor", sort=False))
    scope, runs = pool(a)
    paragraph(pdf, (f"Measured: {models}. For each checkpoint, the LLC λ̂ by SGLD and the critical compression c*(ε), "
                    f"the most compression whose held-out loss increase stays within ε, of {methods}, at ε = "
                    f"{', '.join(f'{e:g}' for e in sorted(t.epsilon.unique()))} nats/token, over the analysis window "
                    f"fixed in advance ({a.window_text}). Below, pooling {scope} ({len(runs)} run"
                    f"{'s' if len(runs) != 1 else ''}) at ε = {middle_epsilon(a):g}: does λ̂ predict c* where the "
                    "held-out loss does not?"), 8.5, 4.2)
    sentences = [(family_sentence(comp, part, t[t.compressor == comp].knob_name.iloc[0],
                                  None if pd.isna(part.theory_sign.iloc[0]) else int(part.theory_sign.iloc[0])), 8.5, 4.2)
                 for comp in style.methods
                 if len(part := a.across_runs[(a.across_runs.scope == scope) & (a.across_runs.compressor == comp)]
                        if len(a.across_runs) else [])]
    if len(a.layers):
        sentences.append((layer_sentence(a.layers), 8.5, 4.2))
    if len(a.measures) or len(a.allocations):
        sentences.append((measures_sentence(a), 8.5, 4.2))
    sentences.append(("Points: checkpoints in the window, one colour per run; a run that parts λ̂ from the loss sits off "
                      "one line and on the other. Lines: c* on each predictor alone over the pooled runs (drawn for runs "
                      "of one size). LORO: root-mean-square error (knob units) of each run predicted from the others. "
                      "The theory's direction: more λ̂, less compressible. Every figure per ε follows on the next page.",
                      7, 3.6))
    fig = picture(a, style)
    below = sum(paragraph_height(pdf, *s) for s in sentences) + 2
    aspect = fig.get_size_inches()[1] / fig.get_size_inches()[0]
    height = min(aspect * PAGE_WIDTH_MM, pdf.h - pdf.b_margin - pdf.get_y() - below)
    svg = save_figure(fig, folder, "01-answer")
    pdf.image(str(svg), x=pdf.l_margin + (PAGE_WIDTH_MM - height / aspect) / 2, w=height / aspect, h=height)
    pdf.ln(1)
    for text, size, line in sentences:
        paragraph(pdf, text, size, line)


def across_runs_page(pdf, a) -> None:
    """The answer across runs per scope, method and ε, and what within-run fits and the sampler's
    robustness add."""
    pdf.add_page()
    heading(pdf, "Across runs: does λ̂ predict the critical compression beyond the loss?", 13)
    rows = []
    order = {c: i for i, c in enumerate(a.entries)}
    for _, r in a.across_runs.sort_values(["compressor", "epsilon"], key=lambda c: c.map(order) if c.name ==
                                          "compressor" else c, kind="stable").iterrows():
        rows.append([r.scope, r.compressor, f"{r.epsilon:g}", f"{int(r.n)} ({int(r.n_runs)})",
                     f"{r.r_llc_loss:.2f}{' collinear' if r.collinear else ''}", g(r.p_llc_beyond_loss, 2),
                     g(r.p_loss_beyond_llc, 2), g(r.rmse_loro_llc), g(r.rmse_loro_loss), g(r.rmse_loro_llc_loss),
                     f"{g(r.coef_llc_loss)} ({r.llc_direction})", BEST.get(r.best_across_runs, "–")])
    paragraph(pdf, " ".join(scope_sentence(scope, part) for scope, part in a.across_runs.groupby("scope", sort=False)),
              8.5, 4.2)
    table(pdf, ["runs pooled", "method", "ε", "n (runs)", "r(λ̂, L)", "p(λ̂ | L)", "p(L | λ̂)", "LORO λ̂", "LORO loss",
                "LORO λ̂ + loss", "λ̂ at equal loss", "best on unseen runs"], rows,
          [40, 20, 9, 16, 24, 16, 16, 16, 18, 22, 50, 30], size=7 if len(rows) > 12 else 8)
    pdf.ln(1)
    paragraph(pdf, "Each method and ε fitted once over the pooled runs' checkpoints in the window: c* on λ̂, on the "
                   "held-out loss L and on both, each with log d where the pool holds several sizes. p(λ̂ | L): HC3 Wald "
                   "test of λ̂'s coefficient in c* = α + β_L·L + β_λ·λ̂ (+ γ·log d); p(L | λ̂) the converse. LORO: "
                   "root-mean-square error (knob units) of each run's checkpoints predicted from the other runs; best on "
                   "unseen runs also weighs log tokens, λ̂/d (pools of several sizes) and λ̂·ln n. λ̂ at equal loss: "
                   "β_λ in knob units per unit of λ̂, against the theory's direction (more λ̂, less compressible) where "
                   "its 95% interval excludes 0. collinear: |r| > 0.9, these checkpoints cannot separate λ̂ from the "
                   "loss. Every figure, with the intervals, is in the across-runs CSV.", 7, 3.6)
    pdf.ln(1)
    within_runs(pdf, a)


def scope_sentence(scope: str, part: pd.DataFrame) -> str:
    """One pooled scope's answer in words: who predicts unseen runs best, and whether λ̂ adds to the loss."""
    decided = part[part.best_across_runs.notna()]
    wins = ", ".join(f"{BEST[k]} in {n}" for k, n in decided.best_across_runs.value_counts().items())
    collinear = " (collinear: these checkpoints cannot separate them)" if part.collinear.any() else ""
    adds = int(part.llc_adds_out_of_sample.fillna(False).astype(bool).sum())
    return (f"Pooling {scope} (r(λ̂, L) = {part.r_llc_loss.iloc[0]:.2f}{collinear}), of {len(part)} method × ε: best "
            f"on unseen runs {wins or 'undefined'}; λ̂ adds to the loss at p < 0.05 in "
            f"{int((part.p_llc_beyond_loss < 0.05).sum())} and out of sample in {adds}, the loss to λ̂ at p < 0.05 in "
            f"{int((part.p_loss_beyond_llc < 0.05).sum())}.")


def appendix(pdf, a) -> None:
    """Every form across runs: R² and leave-one-run-out error."""
    pdf.add_page()
    heading(pdf, "Appendix: every form across runs, judged on runs left out")
    rows = [[r.scope, r.compressor, f"{r.epsilon:g}", str(int(r.n))]
            + [f"{g(r[f'r2_{f}'], 2)} / {g(r[f'rmse_loro_{f}'])}" for f in FORMS] for _, r in a.across_runs.iterrows()]
    table(pdf, ["runs pooled", "method", "ε", "n"] + [f"{label}: R² / LORO" for label in FORMS.values()], rows,
          [40, 20, 9, 10] + [33] * len(FORMS), 7)
    paragraph(pdf, "OLS with HC3 errors over the pooled checkpoints in the window; log d (d the sampled parameters) "
                   "joins λ̂, the loss, log tokens and λ̂ + loss where the pool holds several sizes; λ̂/d only there "
                   "(among runs of one size it is λ̂ rescaled); λ̂·ln n is the LLC's description length in bits (n "
                   "tokens seen). LORO: each run's checkpoints predicted from the others (knob units). The "
                   "coefficients and their 95% intervals are in the across-runs CSV.", 7, 3.6)
