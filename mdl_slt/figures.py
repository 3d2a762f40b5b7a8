"""The report's figures, one function each, from tidy tables. Matplotlib's Agg backend; no torch.

Every figure fills a landscape page (FIGURE_SIZE), colours each model size the same way and
marks each compressor entry the same way on every page (`Style`), and takes its axes from its
data: training-step axes start at 0, logarithmic axes span the data and no more, and points
beyond robust limits are drawn at the edge (as triangles) and counted.
"""

from __future__ import annotations

import copy
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

sns.set_theme(style="whitegrid", context="paper")
plt.rcParams.update({"svg.fonttype": "path", "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7,
                     "ytick.labelsize": 7, "legend.fontsize": 7})

FIGURE_SIZE = (10.9, 6.2)  # inches: the width of a landscape A4 page inside its margins
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "p", "h", "<", ">", "d", "H", "8"]


def short(model: str) -> str:
    return model.split("/")[-1]


class Style:
    """Colours per model size (smallest first) and markers per compressor entry, for every page."""

    def __init__(self, table: pd.DataFrame, entries: list[str] | None = None):
        sizes = table.groupby("model").num_params.first().sort_values()
        self.models = list(sizes.index)
        self.colour = dict(zip(self.models, sns.color_palette("deep", max(3, len(self.models)))))
        present = set(table.compressor)
        self.methods = [e for e in (entries or []) if e in present] + sorted(present - set(entries or []))
        self.marker = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(self.methods)}

    def only(self, methods: list[str]) -> "Style":
        """The same colours and markers, for a subset of the methods (a page of them)."""
        part = copy.copy(self)
        part.methods = [m for m in self.methods if m in methods]
        return part

    def pages(self, per_page: int) -> list["Style"]:
        """The methods in runs of at most `per_page`, for figures with a row or panel per method."""
        return [self.only(self.methods[i:i + per_page]) for i in range(0, len(self.methods), per_page)]

    def size_handles(self):
        return [Line2D([], [], color=self.colour[m], marker="o", linestyle="", label=short(m)) for m in self.models]


def _figure(rows: int, cols: int, **options):
    fig, axes = plt.subplots(rows, cols, figsize=FIGURE_SIZE, squeeze=False, **options)
    return fig, axes


def _finish(fig, legend_handles=None):
    if legend_handles:
        fig.legend(handles=legend_handles, loc="lower center", ncol=min(8, len(legend_handles)), frameon=False,
                   fontsize=8)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    else:
        fig.tight_layout()
    return fig


def steps_axis(ax, steps) -> None:
    """Training steps from 0: linear, or symmetric-log when they span decades (never below 0)."""
    steps = np.asarray(pd.to_numeric(pd.Series(steps), errors="coerce").dropna(), float)
    if not len(steps):
        return
    high = max(1.0, steps.max())
    positive = steps[steps > 0]
    if len(positive) and high / positive.min() > 100:
        ax.set_xscale("symlog", linthresh=1, linscale=0.5)
        ticks = [0] + [10**k for k in range(0, int(math.log10(high)) + 1)]
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_xlim(0, high * 1.3)
    else:
        ax.set_xlim(0, high * 1.04)
    ax.set_xlabel("training step")


def robust_limits(values, log: bool = False, spread: float = 3.0) -> tuple[float, float]:
    """Limits covering the data between robust bounds: quartiles ± `spread` IQR (of log10 values
    on a log axis), never wider than the data, with a 6% margin."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & ((v > 0) if log else True)]
    if not len(v):
        return (1.0, 10.0) if log else (0.0, 1.0)
    w = np.log10(v) if log else v
    q1, q3 = np.percentile(w, [25, 75])
    low, high = max(w.min(), q1 - spread * (q3 - q1)), min(w.max(), q3 + spread * (q3 - q1))
    if high <= low:
        low, high = low - 0.5, high + 0.5
    pad = 0.06 * (high - low)
    low, high = low - pad, high + pad
    return (10**low, 10**high) if log else (low, high)


def beyond(x, y, xlim, ylim):
    """Which points fall outside the limits (a boolean array)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return (np.clip(x, *xlim) != x) | (np.clip(y, *ylim) != y)


def clipped_scatter(ax, x, y, xlim, ylim, **style) -> None:
    """Scatter with points outside the limits (`beyond`) drawn at the edge as triangles."""
    outside = beyond(x, y, xlim, ylim)
    cx, cy = np.clip(np.asarray(x, float), *xlim), np.clip(np.asarray(y, float), *ylim)
    ax.scatter(cx[~outside], cy[~outside], **style)
    if outside.any():
        ax.scatter(cx[outside], cy[outside], **{**style, "marker": "^"}, edgecolor="black", linewidth=0.5)


def spread(names: list[str], widest: float, span: float) -> dict[str, float]:
    """Offsets that place `names` side by side about a category's centre: `widest` apart at most,
    together never wider than `span`."""
    step = min(widest, span / max(1, len(names) - 1))
    return {name: (i - (len(names) - 1) / 2) * step for i, name in enumerate(names)}


def methods_compared(fits: pd.DataFrame, style: Style) -> plt.Figure:
    """Per ε (columns) and method (x), each model size's R², slope in units of its standard error
    (HC3; methods' knobs differ in units, so this is the scale they share), and leave-one-out
    error: which family tracks λ̂, and how the answer changes with size."""
    epsilons = sorted(fits.epsilon.unique())
    metrics = [("r_squared", "R² of c* on λ̂"), ("slope_t", "slope / its standard error"),
               ("loo_rmse", "leave-one-out error (knob units)")]
    fits = fits.assign(slope_t=fits.slope / fits.slope_se) if "slope" in fits else fits
    fig, axes = _figure(len(metrics), len(epsilons), sharex=True)
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
    return _finish(fig, style.size_handles())


def description_lengths_vs_llc(table: pd.DataFrame, inside: pd.Series, style: Style) -> plt.Figure:
    """The critical description length of every method on one axis, per ε: one row per method
    (most compressing first), one line per model size through its checkpoints in the window in
    order of λ̂, arrowhead at the largest λ̂, so an arrow pointing right is a size that rises with
    λ̂. The uncompressed size of each model is a dotted line where it falls inside the axis."""
    epsilons = sorted(table.epsilon.unique())
    shown = table[inside & table.critical_dl_bits.notna()]
    order = shown.groupby("compressor").critical_dl_bits.median().sort_values().index
    methods = [m for m in order if m in style.methods]
    fig, axes = _figure(1, len(epsilons), sharey=True, sharex=True)
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
    return _finish(fig, style.size_handles())


def critical_vs_llc(table: pd.DataFrame, fits: pd.DataFrame, inside: pd.Series, style: Style) -> plt.Figure:
    """Critical compression against λ̂, one row per method and one column per ε; filled points are
    in the analysis window, hollow ones outside it, each with ±2 standard errors of both; lines are
    the per-size fits (R² in the key)."""
    epsilons, methods = sorted(table.epsilon.unique()), style.methods
    fig, axes = _figure(len(methods), len(epsilons))
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
    return _finish(fig, style.size_handles())


def residuals(table: pd.DataFrame, fits: pd.DataFrame, inside: pd.Series, style: Style) -> plt.Figure:
    """Residuals of the per-size fits against λ̂, one row per method and column per ε: curvature or
    a trend here means a line is the wrong shape."""
    epsilons, methods = sorted(table.epsilon.unique()), style.methods
    fig, axes = _figure(len(methods), len(epsilons), sharex=True)
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
    return _finish(fig, style.size_handles())


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
    return _finish(fig, style.size_handles())


def chain_traces(traces: list[tuple[dict, object]], style: Style, per_model: int = 3) -> plt.Figure:
    """Every step of the SGLD chains, burn-in shaded, at the first, middle and last checkpoints of
    each model: a healthy chain rises, levels off, and agrees with the others."""
    by_model: dict[str, list] = {}
    for row, trace in traces:
        by_model.setdefault(row["model"], []).append((row, trace))
    models = [m for m in style.models if m in by_model] or list(by_model)
    fig, axes = _figure(max(1, len(models)), per_model)
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
    return _finish(fig)


def critical_over_training(table: pd.DataFrame, style: Style) -> plt.Figure:
    """Critical compression over training: one row per method, one column per model, a line per ε."""
    fig, axes = _figure(len(style.methods), len(style.models))
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
    return _finish(fig, handles)


def loss_curves(records: pd.DataFrame, table: pd.DataFrame, style: Style) -> plt.Figure:
    """Every evaluated knob value of every search: loss increase against the knob, one row per
    method, one column per model, darker for later checkpoints; dashed lines are the tolerances."""
    curve = records[records.task == "loss_curve"].copy()
    curve["increase"] = (curve.loss - curve.base_loss)
    fig, axes = _figure(len(style.methods), len(style.models))
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
    return _finish(fig)


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
    fig, axes = _figure(1, max(1, sweep.compressor.nunique()))
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
    return _finish(fig, style.size_handles())


def description_lengths(table: pd.DataFrame, style: Style) -> plt.Figure:
    """Both description lengths over training, in bits on one axis: the LLC's redundancy
    λ̂·log n (n = tokens seen) and each method's compressed size at the critical point."""
    fig, axes = _figure(1, len(style.models), sharey=False)
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
    return _finish(fig)
