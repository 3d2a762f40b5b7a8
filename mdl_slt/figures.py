"""The report's figures, one function each, from tidy tables. Matplotlib's Agg backend; no torch."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="paper")


def _short(model: str) -> str:
    return model.split("/")[-1]


def _model_order(frame: pd.DataFrame) -> list[str]:
    sizes = frame.groupby("model").num_params.first().sort_values()
    return list(sizes.index)


def loss_curves(records: pd.DataFrame, epsilons, compressor: str, knob_name: str) -> plt.Figure:
    """Loss increase against the knob, one panel per model, one line per checkpoint."""
    curve = records[(records.task == "loss_curve") & (records.compressor == compressor)].copy()
    curve["increase"] = (curve.loss - curve.base_loss).clip(lower=1e-5)
    models = _model_order(curve)
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.4), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        part = curve[curve.model == model].sort_values("knob")
        sns.lineplot(part, x="knob", y="increase", hue="step", palette="viridis", marker="o",
                     markersize=3, linewidth=0.8, ax=ax, legend=ax is axes[0][-1])
        for eps in epsilons:
            ax.axhline(eps, color="grey", linestyle="--", linewidth=0.6)
        ax.set(yscale="log", title=_short(model), xlabel=knob_name, ylabel="loss increase (nats/token)")
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1, 1), title="step", fontsize=7)
    fig.suptitle(f"{compressor}: loss increase against {knob_name}, every evaluated point (dashed: tolerances ε)")
    fig.tight_layout()
    return fig


def llc_over_training(table: pd.DataFrame) -> plt.Figure:
    """λ̂ against training step with ±2 standard errors, and the chains' split R̂ beside it."""
    llc = table.drop_duplicates(["model", "step"]).sort_values("step")
    fig, (ax, diag) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for model in _model_order(llc):
        part = llc[llc.model == model]
        line = ax.errorbar(part.step, part.llc_mean, yerr=2 * part.llc_std_error.fillna(0), marker="o",
                           markersize=3, capsize=2, label=_short(model))
        diag.plot(part.step, part.r_hat, marker="o", markersize=3, color=line[0].get_color(), label=_short(model))
    ax.set(xscale="symlog", xlabel="training step", ylabel="LLC estimate λ̂",
           title="Local learning coefficient over training (±2 s.e. across chains)")
    diag.axhline(1.1, color="firebrick", linestyle="--", linewidth=0.8, label="R̂ = 1.1")
    diag.set(xscale="symlog", xlabel="training step", ylabel="split R̂", title="Chain agreement (≈ 1 is healthy)")
    ax.legend(fontsize=8)
    diag.legend(fontsize=7)
    fig.tight_layout()
    return fig


def chain_traces(records: pd.DataFrame, per_model: int = 3) -> plt.Figure:
    """SGLD loss traces, nβ·(L − L(w*)) per draw and chain, at the first, middle and last fitted
    checkpoints of each model: a healthy chain rises and levels off, without drift or spikes."""
    llc = records[records.task == "llc"].sort_values("step")
    models = _model_order(llc)
    fig, axes = plt.subplots(len(models), per_model, figsize=(3.6 * per_model, 2.3 * len(models)), squeeze=False)
    for row, model in zip(axes, models):
        part = llc[llc.model == model]
        picks = part.iloc[np.unique(np.linspace(0, len(part) - 1, per_model).round().astype(int))]
        for ax, (_, rec) in zip(row, picks.iterrows()):
            n_beta = rec.detail.get("n_beta", 1.0)
            for chain, trace in enumerate(rec.detail.get("loss_trace", [])):
                ax.plot(n_beta * (np.asarray(trace, float) - rec.loss), linewidth=0.6, label=f"chain {chain}")
            ax.axhline(rec.llc_mean, color="black", linestyle="--", linewidth=0.7)
            ax.set_title(f"{_short(model)} step {rec.step}: λ̂ {rec.llc_mean:.1f}, R̂ {rec.detail.get('r_hat', np.nan):.2f}",
                         fontsize=8)
            ax.tick_params(labelsize=6)
        for ax in row[len(picks):]:
            ax.axis("off")
    axes[-1][0].set_xlabel("draw (after burn-in)")
    axes[0][0].set_ylabel("nβ·(L_B − L(w*))")
    fig.suptitle("SGLD chains (dashed: λ̂)")
    fig.tight_layout()
    return fig


def critical_over_training(table: pd.DataFrame) -> plt.Figure:
    models = _model_order(table)
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.4), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        part = table[table.model == model]
        sns.lineplot(part, x="step", y="critical_value", hue="epsilon", style="compressor", marker="o",
                     markersize=3, palette="flare", ax=ax, legend=ax is axes[0][-1])
        ax.set(xscale="symlog", title=_short(model), xlabel="training step", ylabel="critical compression c*(ε)")
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1, 1), fontsize=7)
    fig.suptitle("Critical compression over training (rtn: bits per weight)")
    fig.tight_layout()
    return fig


def critical_vs_llc(table: pd.DataFrame, fits: pd.DataFrame, min_step: int) -> plt.Figure:
    """Critical compression of one compressor against λ̂, one panel per ε, OLS line and R² per model."""
    epsilons = sorted(table.epsilon.unique())
    fig, axes = plt.subplots(1, len(epsilons), figsize=(3.8 * len(epsilons), 3.8), squeeze=False)
    palette = dict(zip(_model_order(table), sns.color_palette("deep")))
    usable = table[table.step >= min_step]
    for ax, eps in zip(axes[0], epsilons):
        for model, color in palette.items():
            part = usable[(usable.model == model) & (usable.epsilon == eps)]
            ax.scatter(part.llc_mean, part.critical_value, s=14, color=color)
            fit = fits[(fits.model == model) & (fits.epsilon == eps)]
            label = _short(model)
            if len(fit) and "slope" in fit and pd.notna(fit.slope.iloc[0]):
                f = fit.iloc[0]
                xs = np.linspace(part.llc_mean.min(), part.llc_mean.max(), 20)
                ax.plot(xs, f.intercept + f.slope * xs, color=color, linewidth=1)
                label += f"  R²={f.r_squared:.2f}"
            ax.plot([], [], color=color, marker="o", label=label)
        ax.set(title=f"ε = {eps:g}", xlabel="LLC estimate λ̂", ylabel="critical compression c*(ε)")
        ax.legend(fontsize=7)
    fig.suptitle(f"{table.compressor.iloc[0]}: critical compression against λ̂ with OLS fits "
                 f"(checkpoints with step ≥ {min_step})")
    fig.tight_layout()
    return fig


def residuals(table: pd.DataFrame, fits: pd.DataFrame, min_step: int) -> plt.Figure:
    """Residuals of each per-size fit against λ̂, one panel per ε: structure here means a line is wrong."""
    epsilons = sorted(table.epsilon.unique())
    fig, axes = plt.subplots(1, len(epsilons), figsize=(3.8 * len(epsilons), 3.4), squeeze=False, sharey=True)
    palette = dict(zip(_model_order(table), sns.color_palette("deep")))
    used = table[table.step >= min_step]
    for ax, eps in zip(axes[0], epsilons):
        for (_, f) in fits[(fits.epsilon == eps)].iterrows():
            if pd.isna(f.get("slope")):
                continue
            part = used[(used.model == f.model) & (used.epsilon == eps) & (used.compressor == f.compressor)]
            ax.scatter(part.llc_mean, part.critical_value - (f.intercept + f.slope * part.llc_mean), s=14,
                       color=palette[f.model], label=f"{_short(f.model)} {f.compressor}")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set(title=f"ε = {eps:g}", xlabel="LLC estimate λ̂", ylabel="residual (critical value − fit)")
        ax.legend(fontsize=7)
    fig.suptitle("Residuals of the per-size fits")
    fig.tight_layout()
    return fig


def eps_sweep(sweep: pd.DataFrame) -> plt.Figure:
    """Slope of the critical description length against log₂(1/ε), per checkpoint, beside λ̂ on
    log axes (the heuristic of SCIENCE.md §1 puts the points on the diagonal)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    palette = dict(zip(_model_order(sweep), sns.color_palette("deep")))
    shown = sweep[(sweep.eps_slope_bits > 0) & (sweep.llc_mean > 0)]
    for (model, comp), part in shown.groupby(["model", "compressor"]):
        ax.scatter(part.llc_mean, part.eps_slope_bits, s=16, color=palette[model], label=f"{_short(model)} {comp}")
    if len(shown):
        low = min(shown.llc_mean.min(), shown.eps_slope_bits.min())
        high = max(shown.llc_mean.max(), shown.eps_slope_bits.max())
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=0.8, label="slope = λ̂")
    ax.set(xscale="log", yscale="log", xlabel="LLC estimate λ̂", ylabel="d DL* / d log₂(1/ε)  (bits)",
           title=f"ε sweep: description-length slope against λ̂ ({len(sweep) - len(shown)} of {len(sweep)} "
                 f"checkpoints with a slope ≤ 0 not shown)")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def description_lengths(table: pd.DataFrame) -> plt.Figure:
    """Both description lengths over training on one axis, in bits: the LLC-based redundancy
    λ̂·log n − (m − 1)·log log n and the compressed model's size at the critical point."""
    models = _model_order(table)
    fig, axes = plt.subplots(1, len(models), figsize=(3.8 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        part = table[table.model == model].sort_values("step")
        llc = part.drop_duplicates("step")
        ax.plot(llc.step, llc.llc_dl_bits, color="black", marker="s", markersize=3, label="LLC: λ̂ log n")
        for (comp, eps), crit in part.groupby(["compressor", "epsilon"]):
            ax.plot(crit.step, crit.critical_dl_bits, marker="o", markersize=3, linewidth=0.8,
                    label=f"{comp} at ε={eps:g}")
        ax.set(xscale="symlog", yscale="log", title=_short(model), xlabel="training step", ylabel="bits")
        ax.legend(fontsize=6)
    fig.suptitle("Description lengths over training (n = training tokens seen; m = 1)")
    fig.tight_layout()
    return fig
