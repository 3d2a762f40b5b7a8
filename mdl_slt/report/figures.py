"""What every figure of the report shares, from tidy tables: Matplotlib's Agg backend; no torch.

Every figure fills a landscape page (FIGURE_SIZE), colours each model the same way and marks each
compressor entry the same way on every page (`Style`), and takes its axes from its data:
training-step axes start at 0, logarithmic axes span the data and no more, and points beyond
robust limits are drawn at the edge (as triangles) and counted. The figures themselves live with
their pages (`mdl_slt.report`).
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
from matplotlib.ticker import FuncFormatter  # noqa: E402

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
        sizes = table.groupby("model").num_params.first().sort_values(kind="stable")  # runs of one size by name
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


def figure(rows: int, cols: int, **options):
    fig, axes = plt.subplots(rows, cols, figsize=FIGURE_SIZE, squeeze=False, **options)
    return fig, axes


def finish(fig, legend_handles=None):
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
