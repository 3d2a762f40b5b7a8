"""What each method compresses to: every method's critical description length on one axis, the
critical compression over training, every evaluated point of every search, the ε sweep and the
two description lengths over training; their figure pages. Needs no torch.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from mdl_slt.report.figures import (Style, beyond, clipped_scatter, figure, finish, plt, robust_limits, short, spread,
                             steps_axis)
from mdl_slt.report.pdf import paged

SWEEP_PER_PAGE = 6  # panels of the ε sweep per page


def one_axis_page(a, style: Style) -> tuple:
    return ("Critical description lengths of every method on one axis",
            "The compressed model's size at the critical point (kB, log axis), a row per method, most compressing "
            "first; per size a line through its checkpoints in the window in order of λ̂, the arrow at the largest; "
            "dotted: the size in fp32, where inside the axis. Look for: which method compresses furthest, and arrows "
            "pointing right: the size rising with λ̂ within a model.",
            lambda: description_lengths_vs_llc(a.table, a.inside, style))


def figure_pages(a, style: Style) -> list:
    """Over training, every search, the ε sweep and both description lengths: (title, caption, draw)."""
    pages = paged("Critical compression over training",
                  "Each method's critical value at each ε over training. Look for: less compression where λ̂ is "
                  "higher (more bits and more rank kept, fewer heads removed), as the compressibility paper finds "
                  "over training.", lambda part: critical_over_training(a.table, part), style)
    pages += paged("Every evaluated point of every critical search",
                   "Loss increase against the knob, darker for later checkpoints; dashed: the tolerances ε. Look for: "
                   "monotone curves (a bump makes the critical value ambiguous; such searches are flagged).",
                   lambda part: loss_curves(a.records, a.table, part), style)
    for part in style.pages(SWEEP_PER_PAGE) if len(a.sweep) else []:
        sweep = a.sweep[a.sweep.compressor.isin(part.methods)]
        edge = sweep_edge(sweep)
        pages.append(("ε sweep: description-length slope against λ̂",
                      f"Per checkpoint, the slope of the critical description length per halving of ε; dashed: slope "
                      f"= λ̂. {edge} of {len(sweep)} points lie beyond the axes (triangles at the edge, or ≤ 0). "
                      "Look for: whether the slope tracks λ̂.", functools.partial(eps_sweep, sweep, part)))
    pages += paged("Description lengths over training",
                   "The LLC's redundancy λ̂·log n (n = tokens seen, m = 1) beside each method's critical description "
                   "length (faint: smaller ε). Look for: how far the two MDL figures are apart, and their trends.",
                   lambda part: description_lengths(a.table, part), style)
    return pages


def description_lengths_vs_llc(table: pd.DataFrame, inside: pd.Series, style: Style) -> plt.Figure:
    """The critical description length of every method on one axis, per ε: one row per method
    (most compressing first), one line per model size through its checkpoints in the window in
    order of λ̂, arrowhead at the largest λ̂, so an arrow pointing right is a size that rises with
    λ̂. The uncompressed size of each model is a dotted line where it falls inside the axis."""
    epsilons = sorted(table.epsilon.unique())
    shown = table[inside & table.critical_dl_bits.notna()]
    order = shown.groupby("compressor").critical_dl_bits.median().sort_values().index
    methods = [m for m in order if m in style.methods]
    fig, axes = figure(1, len(epsilons), sharey=True, sharex=True)
    offsets = spread(style.models, widest=0.22, span=0.76)  # the sizes of a row within ±0.38 of its centre
    xlim = tuple(v / 8e3 for v in robust_limits(shown.critical_dl_bits, log=True, spread=6))
    for ax, eps in zip(axes[0], epsilons):
        part = shown[shown.epsilon == eps]
        for row, comp in enumerate(methods):
            for model, group in part[part.compressor == comp].groupby("model"):
                group = group.sort_values("llc_mean")
                y = np.full(len(group), row + offsets[model])
                kb = group.critical_dl_bits.to_numpy() / 8e3
                colour = style.colour[model]
                ax.plot(kb, y, color=colour, linewidth=0.8, marker="o", markersize=2.5)
                if len(group) > 1 and kb[-1] != kb[-2]:
                    ax.annotate("", xy=(kb[-1], y[-1]), xytext=(kb[-2], y[-2]),
                                arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 0.8, "mutation_scale": 7})
        for model in style.models:  # every parameter in fp32, where it falls inside the data's axis
            fp32 = 32 * table[table.model == model].num_params.iloc[0] / 8e3
            if xlim[0] <= fp32 <= xlim[1]:
                ax.axvline(fp32, color=style.colour[model], linestyle=":", linewidth=0.8)
        ax.set(xscale="log", xlim=xlim, title=f"ε = {eps:g}", xlabel="critical description length (kB)")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 1-2-5 labels in plain numbers, no crowded minors
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yticks(range(len(methods)), methods, fontsize=7 if len(methods) <= 12 else 6)
        ax.set_ylim(len(methods) - 0.5, -0.5)
        ax.grid(axis="y", visible=False)
        for row in range(1, len(methods)):
            ax.axhline(row - 0.5, color="0.9", linewidth=0.5)
    return finish(fig, style.size_handles())


def critical_over_training(table: pd.DataFrame, style: Style) -> plt.Figure:
    """Critical compression over training: one row per method, one column per model, a line per ε."""
    fig, axes = figure(len(style.methods), len(style.models))
    palette = dict(zip(sorted(table.epsilon.unique()), sns.color_palette("flare", table.epsilon.nunique())))
    for r, comp in enumerate(style.methods):
        for c, model in enumerate(style.models):
            ax = axes[r][c]
            part = table[(table.compressor == comp) & (table.model == model)].sort_values("step")
            for eps, group in part.groupby("epsilon"):
                ax.plot(group.step, group.critical_value, marker=style.marker[comp], markersize=3, linewidth=0.8,
                        color=palette[eps], label=f"ε = {eps:g}")
            steps_axis(ax, table.step)
            ax.set_title(f"{comp}: {short(model)}", fontsize=8)
            ax.set_ylabel(f"critical {part.knob_name.iloc[0]}" if c == 0 and len(part) else "")
            if r != len(style.methods) - 1:
                ax.set_xlabel("")
    handles = [Line2D([], [], color=colour, label=f"ε = {eps:g}") for eps, colour in palette.items()]
    return finish(fig, handles)


def loss_curves(records: pd.DataFrame, table: pd.DataFrame, style: Style) -> plt.Figure:
    """Every evaluated knob value of every search: loss increase against the knob, one row per
    method, one column per model, darker for later checkpoints; dashed lines are the tolerances."""
    curve = records[records.task == "loss_curve"].copy()
    curve["increase"] = (curve.loss - curve.base_loss)
    fig, axes = figure(len(style.methods), len(style.models))
    epsilons = sorted(table.epsilon.unique())
    floor = min(epsilons) / 30
    for r, comp in enumerate(style.methods):
        for c, model in enumerate(style.models):
            ax = axes[r][c]
            part = curve[(curve.compressor == comp) & (curve.model == model)]
            steps = sorted(part.step.dropna().unique())
            colours = dict(zip(steps, sns.color_palette("viridis", max(1, len(steps)))))
            for step, group in part.groupby("step"):
                group = group.sort_values("knob")
                ax.plot(group.knob, group.increase.clip(lower=floor), marker=".", markersize=2, linewidth=0.5,
                        color=colours.get(step, "0.5"))
            for eps in epsilons:
                ax.axhline(eps, color="0.4", linestyle="--", linewidth=0.6)
            ax.set_yscale("log")
            ax.set_ylim(floor * 0.8, max(1.0, part.increase.max() * 1.5) if len(part) else 1.0)
            knob = table[table.compressor == comp].knob_name
            ax.set_title(f"{comp}: {short(model)}", fontsize=8)
            ax.set_xlabel(knob.iloc[0] if len(knob) and r == len(style.methods) - 1 else "")
            ax.set_ylabel("loss increase (nats)" if c == 0 else "")
    return finish(fig)


def _sweep_limits(sweep: pd.DataFrame):
    """(the positive points, the shared λ̂ limits, each compressor's slope limits) of the ε sweep."""
    shown = sweep[(sweep.eps_slope_bits > 0) & (sweep.llc_mean > 0)]
    return shown, robust_limits(shown.llc_mean, log=True), {
        comp: robust_limits(part.eps_slope_bits, log=True) for comp, part in shown.groupby("compressor")}


def sweep_edge(sweep: pd.DataFrame) -> int:
    """Points of the ε sweep drawn at the edge of their axes or left out (slope ≤ 0)."""
    shown, xlim, ylims = _sweep_limits(sweep)
    edge = sum(int(beyond(part.llc_mean, part.eps_slope_bits, xlim, ylims[comp]).sum())
               for comp, part in shown.groupby("compressor"))
    return edge + int((sweep.eps_slope_bits <= 0).sum())


def eps_sweep(sweep: pd.DataFrame, style: Style) -> plt.Figure:
    """Slope of the critical description length per halving of ε, per checkpoint, against λ̂ on
    log axes (the volume-law heuristic puts points on the diagonal); points beyond the axes at
    the edge (`sweep_edge` counts them)."""
    fig, axes = figure(1, max(1, sweep.compressor.nunique()))
    shown, xlim, ylims = _sweep_limits(sweep)
    for ax, (comp, part) in zip(axes[0], shown.groupby("compressor")):
        ylim = ylims[comp]
        for model, group in part.groupby("model"):
            clipped_scatter(ax, group.llc_mean, group.eps_slope_bits, xlim, ylim, s=18,
                            color=style.colour[model], marker=style.marker[comp])
        low, high = max(xlim[0], ylim[0]), min(xlim[1], ylim[1])
        if low < high:
            ax.plot([low, high], [low, high], color="0.5", linestyle="--", linewidth=0.8)
        ax.set(xscale="log", yscale="log", xlim=xlim, ylim=ylim, title=comp, xlabel="LLC estimate λ̂",
               ylabel="d DL* / d log₂(1/ε) (bits)" if ax is axes[0][0] else "")
    return finish(fig, style.size_handles())


def description_lengths(table: pd.DataFrame, style: Style) -> plt.Figure:
    """Both description lengths over training, in bits on one axis: the LLC's redundancy
    λ̂·log n (n = tokens seen) and each method's compressed size at the critical point."""
    fig, axes = figure(1, len(style.models), sharey=False)
    for ax, model in zip(axes[0], style.models):
        part = table[table.model == model].sort_values("step")
        llc = part.drop_duplicates("step")
        ax.plot(llc.step, llc.llc_dl_bits, color="black", marker="s", markersize=3, label="LLC: λ̂ log n")
        for (comp, eps), crit in part[part.compressor.isin(style.methods)].groupby(["compressor", "epsilon"]):
            ax.plot(crit.step, crit.critical_dl_bits, marker=style.marker[comp], markersize=3, linewidth=0.6,
                    color=style.colour[model], alpha=0.4 + 0.6 * (eps == part.epsilon.max()),
                    label=f"{comp} ε={eps:g}")
        values = pd.concat([llc.llc_dl_bits, part.critical_dl_bits])
        ax.set_yscale("log")
        ax.set_ylim(*robust_limits(values, log=True, spread=10))
        steps_axis(ax, table.step)
        ax.set(title=short(model), ylabel="bits" if ax is axes[0][0] else "")
        ax.legend(fontsize=5, ncol=2, loc="best")
    return finish(fig)
