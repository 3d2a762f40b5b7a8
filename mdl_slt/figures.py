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


def loss_curves(records: pd.DataFrame, epsilons) -> plt.Figure:
    """Loss increase against bits per weight, one panel per model, one line per checkpoint."""
    curve = records[records.task == "loss_curve"].copy()
    curve["increase"] = (curve.loss - curve.base_loss).clip(lower=1e-5)
    models = _model_order(curve)
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.4), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        part = curve[curve.model == model].sort_values("knob")
        sns.lineplot(part, x="knob", y="increase", hue="step", palette="viridis", marker="o",
                     markersize=3, linewidth=0.8, ax=ax, legend=ax is axes[0][-1])
        for eps in epsilons:
            ax.axhline(eps, color="grey", linestyle="--", linewidth=0.6)
        ax.set(yscale="log", title=_short(model), xlabel="bits per weight", ylabel="loss increase (nats/token)")
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1, 1), title="step", fontsize=7)
    fig.suptitle("Loss increase against quantization bits (dashed: tolerances ε)")
    fig.tight_layout()
    return fig


def llc_over_training(table: pd.DataFrame) -> plt.Figure:
    """λ̂ against training step with ±2 standard errors, one line per model."""
    llc = table.drop_duplicates(["model", "step"]).sort_values("step")
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for model in _model_order(llc):
        part = llc[llc.model == model]
        ax.errorbar(part.step, part.llc_mean, yerr=2 * part.llc_std_error.fillna(0), marker="o",
                    markersize=3, capsize=2, label=_short(model))
    ax.set(xscale="symlog", xlabel="training step", ylabel="LLC estimate λ̂",
           title="Local learning coefficient over training (±2 s.e. across chains)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def critical_over_training(table: pd.DataFrame) -> plt.Figure:
    models = _model_order(table)
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.4), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        part = table[table.model == model]
        sns.lineplot(part, x="step", y="critical_bits", hue="epsilon", style="compressor", marker="o",
                     markersize=3, palette="flare", ax=ax, legend=ax is axes[0][-1])
        ax.set(xscale="symlog", title=_short(model), xlabel="training step", ylabel="critical bits b*(ε)")
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1, 1), fontsize=7)
    fig.suptitle("Critical bits over training")
    fig.tight_layout()
    return fig


def critical_vs_llc(table: pd.DataFrame, fits: pd.DataFrame, min_step: int) -> plt.Figure:
    """Critical bits against λ̂, one panel per ε, OLS line and R² per model."""
    epsilons = sorted(table.epsilon.unique())
    fig, axes = plt.subplots(1, len(epsilons), figsize=(3.8 * len(epsilons), 3.8), squeeze=False)
    palette = dict(zip(_model_order(table), sns.color_palette("deep")))
    usable = table[table.step >= min_step]
    for ax, eps in zip(axes[0], epsilons):
        for model, color in palette.items():
            part = usable[(usable.model == model) & (usable.epsilon == eps)]
            ax.scatter(part.llc_mean, part.critical_bits, s=14, color=color)
            fit = fits[(fits.model == model) & (fits.epsilon == eps)]
            label = _short(model)
            if len(fit) and "slope" in fit and pd.notna(fit.slope.iloc[0]):
                f = fit.iloc[0]
                xs = np.linspace(part.llc_mean.min(), part.llc_mean.max(), 20)
                ax.plot(xs, f.intercept + f.slope * xs, color=color, linewidth=1)
                label += f"  R²={f.r_squared:.2f}"
            ax.plot([], [], color=color, marker="o", label=label)
        ax.set(title=f"ε = {eps:g}", xlabel="LLC estimate λ̂", ylabel="critical bits b*(ε)")
        ax.legend(fontsize=7)
    fig.suptitle(f"Critical bits against λ̂ with OLS fits (checkpoints with step ≥ {min_step})")
    fig.tight_layout()
    return fig
