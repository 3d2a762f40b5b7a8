"""A line y = α + β·x by OLS with HC3 errors, with what is known of its quality; and a saved line on
several predictors (`Regression`) with its prediction interval. Needs no torch.

Its prediction interval at a new x₀ measured with standard error s₀ is
    ŷ₀ ± t_{n−2} · √( x₀ᵀ Σ_HC3 x₀ + s² + β² s₀² ),   x₀ = (1, x₀),
the last term carrying the new estimate's own uncertainty. A bootstrap over checkpoints, with
each x redrawn from N(x, se²), gives a slope interval that carries the errors of x. One rule for a
missing or non-finite standard error, used by every fit, bootstrap and leave-one-out: it takes the
largest finite one among the points fitted with it (`llc_errors`), never zero unless none is known.

Both variables are measured with error: λ̂ (its MCSE) and the critical value (a bootstrap over the
evaluation sequences). The slope with errors in both (`york`) is York's weighted fit (York et al.
2004, uncorrelated errors), its standard error scaled by √MSWD when the points scatter beyond their
stated errors (the relation's own scatter), with a t interval on n − 2 degrees of freedom (a
normal one where the stated errors explain the scatter). The
prediction interval's s² is the scatter of measured critical values about the line, so it holds
their errors as well as the relation's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

LEVEL = 0.95
BOOTSTRAP_DRAWS = 2000


def llc_errors(se) -> np.ndarray:
    """The standard errors of λ̂ a fit uses: a missing or non-finite one takes the largest finite
    one of the same fit (0 when none is known)."""
    se = np.asarray(se, float)
    finite = se[np.isfinite(se)]
    return np.where(np.isfinite(se), se, finite.max() if len(finite) else 0.0)


@dataclass
class LineFit:
    """y = intercept + slope·x by OLS with HC3 covariance, and what is known of its quality."""

    n: int
    intercept: float
    slope: float
    cov: list  # 2×2 HC3 covariance of (intercept, slope)
    scale: float  # residual variance s²
    df_resid: int
    r_squared: float
    pearson_r: float
    spearman_rho: float
    slope_ci: tuple
    intercept_ci: tuple
    bootstrap_slope_ci: tuple  # with each λ̂ redrawn from its standard error
    rmse_loco: float  # leave-one-checkpoint-out prediction error, in units of y
    coverage_loco: float  # share of left-out points inside their prediction interval
    loo_points: list = field(default_factory=list)  # (i, prediction, lower, upper) of each left-out point; not saved
    eiv_slope: float = math.nan  # York's slope with the errors of both λ̂ and the critical value
    eiv_slope_ci: tuple = (math.nan, math.nan)

    @property
    def slope_se(self) -> float:
        return math.sqrt(self.cov[1][1])

    def predict(self, x: float, x_se: float = 0.0, level: float = LEVEL) -> tuple[float, float, float]:
        """(prediction, lower, upper) for a new observation at x measured with standard error x_se."""
        from scipy import stats

        x0 = np.array([1.0, x])
        mean = self.intercept + self.slope * x
        var = float(x0 @ np.asarray(self.cov) @ x0) + self.scale + (self.slope * x_se) ** 2
        half = stats.t.ppf(0.5 + level / 2, self.df_resid) * math.sqrt(var)
        return mean, mean - half, mean + half

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "loo_points"}

    @classmethod
    def from_dict(cls, values: dict) -> "LineFit":
        return cls(**{k: tuple(v) if k.endswith("_ci") else v for k, v in values.items()})


def ols(x, y, min_points: int):
    """statsmodels' OLS of y on (1, x) with HC3 covariance and t intervals; None below
    `min_points` points or for a constant x."""
    import statsmodels.api as sm

    if len(x) < min_points or np.ptp(x) == 0:
        return None
    return sm.OLS(y, sm.add_constant(x)).fit(cov_type="HC3", use_t=True)


def r_squared(fit) -> float:
    """statsmodels' R² of a fit, NaN where y does not vary (every critical value the same: R² is
    undefined, not −∞)."""
    return math.nan if np.ptp(fit.model.endog) == 0 else float(fit.rsquared)


def line(x, y) -> LineFit | None:
    """The OLS + HC3 line alone (no bootstrap or leave-one-out); None below 3 points or constant x."""
    fit = ols(np.asarray(x, float), np.asarray(y, float), 3)
    if fit is None:
        return None
    nan2 = (math.nan, math.nan)
    return LineFit(len(x), float(fit.params[0]), float(fit.params[1]), fit.cov_params().tolist(), float(fit.scale),
                   int(fit.df_resid), r_squared(fit), math.nan, math.nan, nan2, nan2, nan2, math.nan, math.nan)


def leave_one_out(x, y, se) -> list[tuple[int, float, float, float]]:
    """(i, prediction, lower, upper) for each point predicted from a line through the others,
    its interval carrying its own λ̂ error; the one routine behind LOO errors and tables."""
    x, y, se = np.asarray(x, float), np.asarray(y, float), llc_errors(se)
    rows = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        rest = line(x[keep], y[keep])
        if rest is not None:
            rows.append((i, *rest.predict(x[i], float(se[i]))))
    return rows


def york(x, y, x_se, y_se, iterations: int = 100) -> tuple[float, float, float, float] | None:
    """(intercept, slope, slope's standard error, MSWD) of York's straight-line fit with errors in
    both variables; the standard error is scaled by √MSWD when MSWD > 1. None where undefined
    (fewer than 3 points, a zero error in both variables of a point, constant x)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    sx, sy = np.asarray(x_se, float), np.asarray(y_se, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.any((sx <= 0) & (sy <= 0)):
        return None
    floor = 1e-9 * (np.ptp(x) + np.ptp(y))  # a zero error in one variable: weight it as nearly exact
    wx, wy = 1 / np.maximum(sx, floor) ** 2, 1 / np.maximum(sy, floor) ** 2
    slope = np.polyfit(x, y, 1)[0]
    for _ in range(iterations):
        weight = wx * wy / (wx + slope**2 * wy)
        xbar, ybar = weight @ x / weight.sum(), weight @ y / weight.sum()
        u, v = x - xbar, y - ybar
        beta = weight * (u / wy + slope * v / wx)
        new = (weight * beta) @ v / ((weight * beta) @ u)
        converged = abs(new - slope) <= 1e-12 * max(1.0, abs(slope))
        slope = new
        if converged:
            break
    weight = wx * wy / (wx + slope**2 * wy)
    xbar, ybar = weight @ x / weight.sum(), weight @ y / weight.sum()
    beta = weight * ((x - xbar) / wy + slope * (y - ybar) / wx)
    adjusted = xbar + beta
    spread = weight @ (adjusted - weight @ adjusted / weight.sum()) ** 2
    intercept = ybar - slope * xbar
    mswd = float(weight @ (y - intercept - slope * x) ** 2 / (len(x) - 2))
    return float(intercept), float(slope), float(math.sqrt(1 / spread * max(mswd, 1.0))), mswd


def fit_line(x, y, x_se=None, seed: int = 0, y_se=None) -> LineFit | None:
    """OLS of y on x with HC3 errors, bootstrap and leave-one-out, and, given y's errors, York's slope
    with errors in both; None with < 4 points or constant x."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    se = llc_errors(np.zeros_like(x) if x_se is None else x_se)
    fit = ols(x, y, 4)
    if fit is None:
        return None
    ci = fit.conf_int(1 - LEVEL)
    constant_y = np.ptp(y) == 0
    loo = leave_one_out(x, y, se)
    errors = [mean - y[i] for i, mean, _, _ in loo]
    return LineFit(
        n=len(x), intercept=float(fit.params[0]), slope=float(fit.params[1]), cov=fit.cov_params().tolist(),
        scale=float(fit.scale), df_resid=int(fit.df_resid), r_squared=r_squared(fit),
        pearson_r=math.nan if constant_y else float(stats.pearsonr(x, y)[0]),
        spearman_rho=math.nan if constant_y else float(stats.spearmanr(x, y)[0]),
        slope_ci=tuple(map(float, ci[1])), intercept_ci=tuple(map(float, ci[0])),
        bootstrap_slope_ci=_bootstrap_slope(x, y, se, seed),
        rmse_loco=float(np.sqrt(np.mean(np.square(errors)))) if errors else math.nan,
        coverage_loco=float(np.mean([low <= y[i] <= high for i, _, low, high in loo])) if loo else math.nan,
        loo_points=loo, **_errors_in_both(x, y, se, y_se))


def _errors_in_both(x, y, x_se, y_se) -> dict:
    """York's slope and its 95% interval: normal where the stated errors explain the scatter
    (MSWD ≤ 1), t on n − 2 degrees of freedom with the √MSWD-scaled error beyond (NaN without y's errors)."""
    from scipy import stats

    if y_se is None or not np.isfinite(np.asarray(y_se, float)).any():
        return {}
    found = york(x, y, x_se, llc_errors(y_se))
    if found is None:
        return {}
    _, slope, slope_se, mswd = found
    # known errors explain the scatter: a normal quantile; scatter beyond them is estimated: t on n − 2
    quantile = stats.t.ppf(0.5 + LEVEL / 2, len(x) - 2) if mswd > 1 else stats.norm.ppf(0.5 + LEVEL / 2)
    half = quantile * slope_se
    return {"eiv_slope": slope, "eiv_slope_ci": (slope - half, slope + half)}


def _bootstrap_slope(x, y, se, seed: int) -> tuple:
    """Percentile interval of the OLS slope over checkpoints resampled with replacement, each
    λ̂ redrawn from N(λ̂, se²)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(x), size=(BOOTSTRAP_DRAWS, len(x)))
    xs = x[picks] + rng.standard_normal(picks.shape) * se[picks]
    ys = y[picks]
    xc, yc = xs - xs.mean(1, keepdims=True), ys - ys.mean(1, keepdims=True)
    var = (xc * xc).sum(1)
    slopes = (xc * yc).sum(1)[var > 0] / var[var > 0]
    if len(slopes) < BOOTSTRAP_DRAWS // 2:
        return (math.nan, math.nan)
    tail = (1 - LEVEL) / 2 * 100
    return tuple(float(v) for v in np.percentile(slopes, [tail, 100 - tail]))


@dataclass
class Regression:
    """c* = Σ β_j·x_j over named columns (`const`, `llc`, `loss`, `log_d`, …) by OLS with HC3
    covariance, as saved in a fit file. A new checkpoint's 95% prediction interval is
        ŷ ± t_df · √(x₀ᵀ Σ x₀ + s² + (β_λ̂ · se(λ̂))²)."""

    columns: list
    beta: list
    cov: list
    scale: float  # residual variance s²
    df_resid: int
    r2: float
    rmse_loro: float  # leave-one-run-out RMSE, knob units

    def predict(self, values: dict, llc_se: float = 0.0) -> tuple[float, float, float]:
        from scipy import stats

        x = np.array([values[c] for c in self.columns], float)
        mean = float(x @ np.asarray(self.beta))
        spread = self.beta[self.columns.index("llc")] * llc_se if "llc" in self.columns else 0.0
        variance = float(x @ np.asarray(self.cov) @ x) + self.scale + spread**2
        half = stats.t.ppf(0.5 + LEVEL / 2, self.df_resid) * math.sqrt(variance)
        return mean, mean - half, mean + half

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "Regression":
        return cls(**{k: math.nan if v is None else v for k, v in values.items()})
