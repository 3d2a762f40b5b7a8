"""Inside checkpoints: each weight group's critical value against its refined λ̂ per parameter, a page
per family, and the fits over groups in a table; page 1's line. Needs no torch."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mdl_slt.analysis.layers import PREDICTORS
from mdl_slt.analysis.measures import GROUP_LABELS
from mdl_slt.analysis.tournament import MIN_UNITS
from mdl_slt.report.figures import Style, figure, finish, plt, short
from mdl_slt.report.pdf import g, heading, paragraph, table

DIRECTIONS = ("as theory", "against theory", "unclear")
NAMES = {**PREDICTORS, **GROUP_LABELS}


def label(group: str) -> str:
    """A weight group's name, short enough to print beside its point: block0.mlp.in → 0.mlp.in."""
    return group.removeprefix("block")


def middle_epsilon(groups: pd.DataFrame) -> float:
    epsilons = sorted(groups.epsilon.unique())
    return epsilons[len(epsilons) // 2]


def figure_pages(a, style: Style) -> list:
    """A page per compressor entry of the layer study: (title, caption, draw)."""
    if not len(a.groups):
        return []
    eps = middle_epsilon(a.groups)
    return [(f"Inside checkpoints: {comp}'s critical value per weight group against its λ̂ per parameter",
             f"One panel per checkpoint at ε = {eps:g} (each group at its own tolerance, the ε of the whole model "
             "shared among its groups); a point per group, labelled; the line: the groups' OLS fit on λ̂_g/d_g, its "
             "R² and leave-one-group-out error in the title. Look for: the theory's direction (more λ̂ per parameter, "
             "less compressible) across the parts of one model, where training progress is the same for all.",
             lambda comp=comp: per_group(a.groups, a.layer_predictors, comp, eps, style))
            for comp in style.methods if comp in set(a.groups.compressor)]


def per_group(groups: pd.DataFrame, predictors: pd.DataFrame, comp: str, eps: float, style: Style) -> plt.Figure:
    """Critical value against λ̂_g/d_g, one panel per checkpoint, a labelled point per group."""
    part = groups[(groups.compressor == comp) & (groups.epsilon == eps)]
    checkpoints = part[["model", "revision", "step"]].drop_duplicates()
    checkpoints = checkpoints.assign(_size=checkpoints.model.map({m: i for i, m in enumerate(style.models)}))
    checkpoints = checkpoints.sort_values(["_size", "step"])
    cols = min(4, len(checkpoints))
    fig, axes = figure(math.ceil(len(checkpoints) / cols), cols)
    for ax, point in zip(axes.flat, checkpoints.itertuples()):
        one = part[(part.model == point.model) & (part.revision == point.revision)]
        colour = style.colour[point.model]
        ax.scatter(one.llc_per_param, one.critical_value, s=14, color=colour)
        for row in one.itertuples():
            ax.annotate(label(row.weight_group), (row.llc_per_param, row.critical_value), fontsize=5,
                        xytext=(2, 2), textcoords="offset points")
        fit = predictors[(predictors.model == point.model) & (predictors.scope == point.revision)
                         & (predictors.compressor == comp) & (predictors.epsilon == eps)
                         & (predictors.predictor == "llc_per_param")] if len(predictors) else predictors
        title = f"{short(point.model)}@{point.revision}"
        if len(fit) and pd.notna(fit.coef.iloc[0]):
            f = fit.iloc[0]
            slope, intercept = np.polyfit(one.llc_per_param, one.critical_value, 1)
            xs = np.linspace(one.llc_per_param.min(), one.llc_per_param.max(), 2)
            ax.plot(xs, intercept + slope * xs, color=colour, linewidth=0.8)
            title += f": R² {f.r2:.2f}, LOGO {g(f.rmse_logo)}"
        ax.set_title(title, fontsize=7)
        ax.set_xlabel("λ̂_g / d_g")
        ax.set_ylabel(f"critical {one.knob_name.iloc[0]}" if len(one) else "")
    for ax in axes.flat[len(checkpoints):]:
        ax.axis("off")
    return finish(fig)


def sentence(layers: pd.DataFrame) -> str:
    """Page 1's line: over groups pooled per run, which predictor wins on unseen groups, and λ̂_g/d_g's
    direction against the theory's."""
    pooled = layers[layers.scope == "pooled"] if (layers.scope == "pooled").any() else layers
    decided = pooled[pooled.best.notna()]
    wins = ", ".join(f"{NAMES[k]} in {n}" for k, n in decided.best.value_counts().items())
    ways = ", ".join(f"{d} in {int((pooled.llc_direction == d).sum())}" for d in DIRECTIONS)
    return (f"Inside checkpoints (the layer study, {int(pooled.n_groups.max())} weight groups a model at most): of "
            f"{len(pooled)} run × method × ε, each group's critical value is best predicted on groups left out by "
            f"{wins or 'nothing (too few groups)'}; λ̂_g/d_g's coefficient: {ways} (layers page).")


def table_page(pdf, a) -> None:
    """The fits over groups, pooled per run (every checkpoint alone is in the layers CSV)."""
    pdf.add_page()
    heading(pdf, "Inside checkpoints: which parts of a model compress, and does λ̂_g say which?", 13)
    paragraph(pdf, sentence(a.layers), 8.5, 4.2)
    scope = "pooled" if (a.layers.scope == "pooled").any() else None
    pooled = a.layers[a.layers.scope == scope] if scope else a.layers
    figures = a.layer_predictors.set_index(["model", "scope", "compressor", "epsilon", "predictor"])
    rows = []
    for _, r in pooled.iterrows():
        own = {p: figures.loc[(r.model, r.scope, r.compressor, r.epsilon, p)] for p in PREDICTORS}
        per_param = own["llc_per_param"]
        rows.append([short(r.model), r.scope, r.compressor, f"{r.epsilon:g}", f"{int(r.n_groups)} ({int(r.n_checkpoints)})"]
                    + [f"{g(own[p].r2, 2)} / {g(own[p].rmse_logo)}" for p in PREDICTORS]
                    + [f"{g(per_param.coef, 2)} [{g(per_param.coef_ci_low, 2)}, {g(per_param.coef_ci_high, 2)}]",
                       g(own["log_params"].p_llc_beside, 2), r.llc_direction,
                       NAMES.get(r.best, f"too few groups ({int(r.n_groups)})" if r.n_groups < MIN_UNITS else "–")])
    table(pdf, ["run", "checkpoints", "method", "ε", "groups (ckpts)"] + [f"{v}: R² / LOGO" for v in PREDICTORS.values()]
          + ["β on λ̂_g/d_g [95% CI]", "p beyond d_g", "direction", "best on unseen groups"], rows,
          [28, 20, 14, 9, 17, 27, 27, 27, 40, 14, 24, 26], 7)
    paragraph(pdf, "Per run, method and ε, over its weight groups at the checkpoints of the layer study, each with an "
                   "offset of its own: c*_g on λ̂_g, on λ̂_g/d_g and on log d_g (OLS, HC3). LOGO: root-mean-square error "
                   "(knob units) of each group predicted from the others, at every checkpoint at once. p beyond d_g: "
                   "HC3 Wald test of λ̂_g/d_g added to log d_g. direction: β against the theory's sign (more λ̂, less "
                   "compressible) where its 95% interval excludes 0. Each group's tolerance is ε shared among the "
                   "model's groups (layers.tolerance). Every checkpoint alone is in the layers CSV.", 7, 3.6)
