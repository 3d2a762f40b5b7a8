"""Is λ̂ worth its cost? The field's sensitivity measures beside it, across runs and inside checkpoints,
each with what it costs; the allocations each buys, and a figure of the knob each gives every group;
page 1's line. Needs no torch."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mdl_slt.analysis.measures import LABELS
from mdl_slt.analysis.tournament import MIN_UNITS
from mdl_slt.report.figures import Style, figure, finish, plt, short
from mdl_slt.report.layers import NAMES
from mdl_slt.report.pdf import g, heading, paragraph, table

ACROSS = {"llc": "λ̂", "loss": "loss", "tokens": "log tokens", "llc_per_param": "λ̂/d", "redundancy": "λ̂·ln n",
          **LABELS}
WITHIN = NAMES
COST = {"llc": "llc", "llc_per_param": "llc", "redundancy": "llc", "loss": "loss", "llc_group": "llc_group",
        "hessian_trace": "hessian_trace", "fisher": "fisher", "max_over_rms": "outliers", "kurtosis": "outliers",
        "hawq": "hawq"}
METHODS = {"uniform": "uniform", "hawq": "HAWQ (tr H)", "llc": "λ̂_g/d_g", "fisher": "Fisher", "oracle": "oracle"}


def candidates(figures: pd.DataFrame, error: str, names: dict) -> list[str]:
    """The predictors among `names` with an error on unseen units somewhere."""
    scored = set(figures[figures[error].notna()].predictor)
    return [n for n in names if n in scored]


def seconds(a, name: str, per_group: bool = False) -> str:
    """A predictor's cost: seconds per checkpoint, or for the refined λ̂ per group."""
    key = "llc_group" if per_group and name in ("llc", "llc_per_param") else COST.get(name)
    value = a.costs.set_index("measure").seconds.get(key)
    return "0" if name in ("tokens", "log_params") else ("–" if value is None else f"{value:.3g} s")


def sentence(a) -> str:
    """Page 1's line: the best measure on unseen runs, whether λ̂ adds to the best other, and the
    allocations λ̂ and HAWQ buy against uniform's and the oracle's."""
    parts = []
    if len(a.measures) and not a.measures.best.notna().any():
        parts.append(f"Measures across runs: no pool holds the {MIN_UNITS} runs a comparison on unseen runs needs.")
    elif len(a.measures):
        rows = a.measures
        best = rows.best.value_counts()
        adds = int(rows.llc_adds.fillna(False).astype(bool).sum())
        parts.append(f"Measures across runs: best on unseen runs {', '.join(f'{ACROSS[k]} in {n}' for k, n in best.items())}"
                     f" (of {len(rows)}); λ̂ adds to the best other measure out of sample in {adds}, its sign beside it "
                     + ", ".join(f"{d} in {int((rows.llc_direction_beside == d).sum())}" for d in
                                 ("as theory", "against theory", "unclear")) + ".")
    if len(a.allocations):
        medians = a.allocations.groupby("allocation_method")[["dl_vs_uniform", "dl_vs_oracle"]].median()
        parts.append("Allocations within ε (median bits against uniform's / the oracle's): " + "; ".join(
            f"{METHODS[m]} {r.dl_vs_uniform:.3f} / {r.dl_vs_oracle:.3f}" for m, r in medians.iterrows()) + ".")
    return " ".join(parts) + (" (measures page)" if parts else "")


def tournament_table(pdf, a, answers: pd.DataFrame, figures: pd.DataFrame, names: dict, error: str,
                     per_group: bool) -> None:
    """Rows: the predictors with their cost; columns: each method and ε, the error on unseen units (the
    median over the pools or runs there are; * the best of that many of them)."""
    shown = candidates(figures, error, names)
    keys = list(answers[["compressor", "epsilon"]].drop_duplicates().itertuples(index=False, name=None))
    rows = []
    for name in shown:
        cells = []
        for comp, eps in keys:
            own = figures[(figures.compressor == comp) & (figures.epsilon == eps) & (figures.predictor == name)]
            wins = int(((answers.compressor == comp) & (answers.epsilon == eps) & (answers.best == name)).sum())
            cells.append(f"{g(own[error].median())}{'*' * min(wins, 3)}")
        rows.append([names[name], seconds(a, name, per_group), *cells])
    table(pdf, ["predictor", "cost"] + [f"{c} ε {e:g}" for c, e in keys], rows,
          [30, 18] + [min(26, 229 / max(1, len(keys)))] * len(keys), 7)
    paragraph(pdf, f"Cells: the {'leave-one-group-out' if per_group else 'leave-one-run-out'} RMSE (knob units; the "
                   f"median over the {'runs' if per_group else 'pools'} where there are several); * the best predictor "
                   "of that many of them. Cost: seconds per checkpoint on this machine (the refined λ̂: per group).",
              7, 3.6)


def page(pdf, a) -> None:
    """The measures' page: across runs, inside checkpoints, and the allocations."""
    pdf.add_page()
    heading(pdf, "Is λ̂ worth its cost? The field's sensitivity measures beside it", 13)
    paragraph(pdf, sentence(a), 8.5, 4.2)
    if len(a.measures):
        paragraph(pdf, "Across runs: each predictor alone (with log d where the pool holds several sizes), judged on "
                       "runs left out.", 8.5, 4.2)
        tournament_table(pdf, a, a.measures, a.measure_predictors, ACROSS, "rmse_loro", False)
        for comp, part in a.measures.groupby("compressor", sort=False):
            other = part.best_other.dropna()
            paragraph(pdf, f"{comp}: the best measure that is not λ̂ is {', '.join(ACROSS[b] for b in other)} at ε "
                           f"{', '.join(f'{e:g}' for e in part.epsilon)}; λ̂ beside it predicts unseen runs better at "
                           f"{int(part.llc_adds.fillna(False).astype(bool).sum())} of {len(part)}, its coefficient "
                           + ", ".join(part.llc_direction_beside) + ".", 7.5, 3.8)
    if len(a.layers):
        scope = "pooled" if (a.layers.scope == "pooled").any() else None
        keep = (lambda t: t[t.scope == scope]) if scope else (lambda t: t)
        paragraph(pdf, "Inside checkpoints: each predictor over a run's weight groups, judged on groups left out.",
                  8.5, 4.2)
        tournament_table(pdf, a, keep(a.layers), keep(a.layer_predictors), WITHIN, "rmse_logo", True)
    if len(a.allocations):
        allocation_table(pdf, a)


def se(error: float, bits: float) -> str:
    """A standard error in kB, 0 where it is below a millionth of the bits (rounding, not spread)."""
    return "0" if not error > 1e-6 * bits else g(error / 8e3, 2)


def allocation_table(pdf, a) -> None:
    t = a.allocations
    methods = [m for m in METHODS if m in set(t.allocation_method)]
    rows = []
    for (model, revision, comp, eps), part in t.groupby(["model", "revision", "compressor", "epsilon"], sort=False):
        own = part.set_index("allocation_method")
        rows.append([f"{short(model)}@{revision}", comp, f"{eps:g}"] + [
            "none passes" if pd.isna(own.dl_bits.get(m)) else
            f"{own.dl_bits[m] / 8e3:.1f} ± {se(own.dl_bits_se[m], own.dl_bits[m])} ({own.dl_vs_uniform[m]:.3f})"
            for m in methods])
    paragraph(pdf, "Allocations: per-group knob values within ε, each scaled on the measured loss of the whole model.",
              8.5, 4.2)
    table(pdf, ["checkpoint", "method", "ε"] + [METHODS[m] for m in methods], rows,
          [40, 16, 10] + [211 / len(methods)] * len(methods), 7)
    paragraph(pdf, "kB at the most compressing allocation within ε ± its standard error (a bootstrap over the held-out "
                   "sequences), and in brackets against uniform's on the same checkpoint. Every allocation's knob "
                   "per group is in the allocations CSV.", 7, 3.6)


def figure_pages(a, style: Style) -> list:
    if not len(a.allocations):
        return []
    return [("Allocations: the knob each method gives every weight group",
             "At the middle ε, per checkpoint of the allocation study, the knob value of each group in the most "
             "compressing allocation within ε under each method (bars), and the total kB in the legend. Look for: "
             "where the measures send bits, against the oracle's measured curves.",
             lambda: allocation_figure(a.allocations))]


def allocation_figure(t: pd.DataFrame) -> plt.Figure:
    epsilons = sorted(t.epsilon.unique())
    eps = epsilons[len(epsilons) // 2]
    part = t[t.epsilon == eps]
    panels = part[["model", "revision", "compressor"]].drop_duplicates()
    cols = min(3, len(panels))
    fig, axes = figure(math.ceil(len(panels) / cols), cols)
    methods = [m for m in METHODS if m in set(part.allocation_method)]
    for ax, panel in zip(axes.flat, panels.itertuples(index=False)):
        own = part[(part.model == panel.model) & (part.revision == panel.revision) & (part.compressor == panel.compressor)]
        groups = sorted({gr for alloc in own.allocation for gr in (alloc or {})})
        width = 0.8 / max(1, len(methods))
        for i, m in enumerate(methods):
            row = own[own.allocation_method == m]
            if not len(row) or not row.allocation.iloc[0]:
                continue
            values = [row.allocation.iloc[0].get(gr, np.nan) for gr in groups]
            ax.bar(np.arange(len(groups)) + i * width, values, width,
                   label=f"{METHODS[m]} {row.dl_bits.iloc[0] / 8e3:.0f} kB")
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, [gr.removeprefix("block") for gr in groups],
                      rotation=60, ha="right", fontsize=5)
        ax.set_title(f"{short(panel.model)}@{panel.revision} {panel.compressor}, ε = {eps:g}", fontsize=7)
        ax.legend(fontsize=5, frameon=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    return finish(fig)
