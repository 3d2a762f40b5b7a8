"""From stored records to answers: description lengths, fits, ε sweeps, predictions. Needs no torch.

Per (model, compressor, ε), over checkpoints with step ≥ `min_step` (the early, fast-falling-loss
phase breaks the relation: SCIENCE.md §1), the fit is critical bits b* = α + β·λ̂ by OLS with HC3
standard errors; its prediction interval at a new λ̂₀ (standard error s₀) is
    ŷ₀ ± t_{n−2} · √( x₀ᵀ Σ_HC3 x₀ + s² + β² s₀² ),   x₀ = (1, λ̂₀),
the last term carrying the new estimate's own uncertainty. A bootstrap over checkpoints, with
each λ̂ redrawn from N(λ̂, se²), gives a slope interval that carries the LLC's standard errors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

LEVEL = 0.95
BOOTSTRAP_DRAWS = 2000
LN2 = math.log(2)


def latest_records(records: pd.DataFrame) -> pd.DataFrame:
    """Rows measured with each task's most recent settings, so a store whose experiment changed
    settings over time is analysed under one set (older rows stay in the store)."""
    frame = records.assign(group=records.task + "|" + records.compressor.fillna(""))
    newest = frame.sort_values("created_at").groupby("group").config_hash.last()
    return records[frame.config_hash.to_numpy() == frame.group.map(newest).to_numpy()]


def llc_description_length(llc, tokens_seen, multiplicity: int = 1):
    """Redundancy of the two-part code in bits: (λ̂·ln n − (m − 1)·ln ln n)/ln 2, n = tokens seen
    (NaN before n ≥ 3, where ln ln n is undefined or negative)."""
    n = pd.to_numeric(pd.Series(tokens_seen), errors="coerce").astype(float).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        bits = (np.asarray(llc, float) * np.log(n) - (multiplicity - 1) * np.log(np.log(n))) / LN2
    return np.where(n >= 3, bits, np.nan)


def measurements(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, step, compressor, ε): critical compression beside λ̂, the base loss and
    both description lengths (compression-based at the critical point, LLC-based), in bits."""
    records = latest_records(records)
    llc = records[records.task == "llc"]
    llc = llc.assign(r_hat=llc.detail.map(lambda d: d.get("r_hat")),
                     llc_params=[d.get("num_params") or p for d, p in zip(llc.detail, llc.num_params)])
    llc = llc[["model", "revision", "step", "num_params", "tokens_seen", "llc_mean", "llc_std_error", "r_hat",
               "llc_params"]]
    base = records[records.task == "base_loss"][["model", "revision", "loss"]].rename(columns={"loss": "base_loss"})
    crit = records[records.task == "critical"][["model", "revision", "compressor", "epsilon", "knob", "bits",
                                                  "bits_entropy", "detail"]]
    crit = crit.assign(knob_name=crit.detail.map(lambda d: d.get("knob_name")),
                       monotone=crit.detail.map(lambda d: d.get("monotone")),
                       evaluations=crit.detail.map(lambda d: d.get("evaluations"))).drop(columns="detail")
    table = crit.merge(llc, on=["model", "revision"]).merge(base, on=["model", "revision"])
    table = table.rename(columns={"knob": "critical_value", "bits": "critical_dl_bits",
                                  "bits_entropy": "critical_dl_entropy_bits"})
    table["llc_dl_bits"] = llc_description_length(table.llc_mean, table.tokens_seen)
    return table.sort_values(["model", "compressor", "epsilon", "step"]).reset_index(drop=True)


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
    loo_rmse: float  # leave-one-checkpoint-out prediction error, in units of y
    loo_coverage: float  # share of left-out points inside their prediction interval

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
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "LineFit":
        return cls(**{k: tuple(v) if k.endswith("_ci") else v for k, v in values.items()})


def fit_line(x, y, x_se=None, seed: int = 0) -> LineFit | None:
    """OLS of y on x with HC3 errors, bootstrap and leave-one-out; None with < 4 points or constant x."""
    import statsmodels.api as sm
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 4 or np.ptp(x) == 0:
        return None
    fit = sm.OLS(y, sm.add_constant(x)).fit(cov_type="HC3", use_t=True)
    ci = fit.conf_int(1 - LEVEL)
    constant_y = np.ptp(y) == 0
    partial = LineFit(
        n=n, intercept=float(fit.params[0]), slope=float(fit.params[1]), cov=fit.cov_params().tolist(),
        scale=float(fit.scale), df_resid=int(fit.df_resid), r_squared=float(fit.rsquared),
        pearson_r=math.nan if constant_y else float(stats.pearsonr(x, y)[0]),
        spearman_rho=math.nan if constant_y else float(stats.spearmanr(x, y)[0]),
        slope_ci=tuple(map(float, ci[1])), intercept_ci=tuple(map(float, ci[0])),
        bootstrap_slope_ci=_bootstrap_slope(x, y, x_se, seed), loo_rmse=math.nan, loo_coverage=math.nan)
    errors, inside = [], []
    for i in range(n):
        keep = np.arange(n) != i
        rest = fit_line_plain(x[keep], y[keep])
        if rest is None:
            continue
        mean, low, high = rest.predict(x[i], 0.0 if x_se is None else float(x_se[i]))
        errors.append(mean - y[i])
        inside.append(low <= y[i] <= high)
    if errors:
        partial.loo_rmse = float(np.sqrt(np.mean(np.square(errors))))
        partial.loo_coverage = float(np.mean(inside))
    return partial


def fit_line_plain(x, y) -> LineFit | None:
    """The OLS + HC3 line alone (no bootstrap or leave-one-out), for predictions inside them."""
    import statsmodels.api as sm

    if len(x) < 3 or np.ptp(x) == 0:
        return None
    fit = sm.OLS(y, sm.add_constant(x)).fit(cov_type="HC3", use_t=True)
    nan2 = (math.nan, math.nan)
    return LineFit(len(x), float(fit.params[0]), float(fit.params[1]), fit.cov_params().tolist(), float(fit.scale),
                   int(fit.df_resid), float(fit.rsquared), math.nan, math.nan, nan2, nan2, nan2, math.nan, math.nan)


def _bootstrap_slope(x, y, x_se, seed: int) -> tuple:
    """Percentile interval of the OLS slope over checkpoints resampled with replacement, each
    λ̂ redrawn from N(λ̂, se²) (se = 0 where unknown)."""
    rng = np.random.default_rng(seed)
    se = np.nan_to_num(np.asarray(x_se, float)) if x_se is not None else np.zeros_like(x)
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


GROUP = ["model", "compressor", "epsilon"]


def usable(table: pd.DataFrame, min_step: int) -> pd.DataFrame:
    return table[(table.step >= min_step) & table.critical_value.notna() & table.llc_mean.notna()]


def fit_lines(table: pd.DataFrame, min_step: int = 0) -> dict:
    """(model, compressor, ε) → (LineFit or None, the group's rows) for critical compression on λ̂."""
    return {key: (fit_line(group.llc_mean, group.critical_value, group.llc_std_error.to_numpy()), group)
            for key, group in usable(table, min_step).groupby(GROUP)}


def fit_relation(table: pd.DataFrame, min_step: int = 0) -> pd.DataFrame:
    """One row per (model, compressor, ε): the LineFit of critical compression on λ̂, flattened."""
    rows = []
    for (model, comp, eps), (fit, group) in fit_lines(table, min_step).items():
        row = {"model": model, "compressor": comp, "epsilon": eps, "n": len(group),
               "num_params": int(group.num_params.iloc[0]), "min_step": min_step}
        if fit is not None:
            row.update(_flat(fit))
        rows.append(row)
    return pd.DataFrame(rows)


def _flat(fit: LineFit) -> dict:
    values = {k: v for k, v in fit.to_dict().items() if k not in ("cov", "n")}
    for key in [k for k in values if k.endswith("_ci")]:
        low, high = values.pop(key)
        values.update({f"{key}_low": low, f"{key}_high": high})
    return {**values, "slope_se": fit.slope_se}


def pooled_fits(table: pd.DataFrame, min_step: int = 0) -> pd.DataFrame:
    """Per (compressor, ε), across model sizes: does one line serve all sizes?

    `p_same_line`: F test of one common line against a line per size (OLS);
    `p_same_slope`: HC3 Wald test that the size × λ̂ interactions are zero;
    `r2_per_param`: R² of one line on λ̂/d (d the sampled parameters), the size-normalised form.
    """
    import statsmodels.formula.api as smf

    rows = []
    for (comp, eps), group in usable(table, min_step).groupby(["compressor", "epsilon"]):
        group = group.assign(llc_per_param=group.llc_mean / group.llc_params)
        row = {"compressor": comp, "epsilon": eps, "n": len(group), "models": group.model.nunique()}
        if group.model.nunique() >= 2 and len(group) > 2 * group.model.nunique() + 1:
            common = smf.ols("critical_value ~ llc_mean", group).fit()
            separate = smf.ols("critical_value ~ llc_mean * C(model)", group).fit()
            robust = smf.ols("critical_value ~ llc_mean * C(model)", group).fit(cov_type="HC3")
            interactions = [name for name in robust.params.index if name.startswith("llc_mean:")]
            wald = robust.wald_test(" , ".join(f"{name} = 0" for name in interactions), scalar=True)
            per_param = smf.ols("critical_value ~ llc_per_param", group).fit(cov_type="HC3")
            row.update(r2_common=common.rsquared, r2_separate=separate.rsquared,
                       p_same_line=float(separate.compare_f_test(common)[1]), p_same_slope=float(wald.pvalue),
                       r2_per_param=per_param.rsquared, slope_per_param=per_param.params["llc_per_param"],
                       slope_per_param_se=per_param.bse["llc_per_param"])
        rows.append(row)
    return pd.DataFrame(rows)


def eps_sweep(table: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint and compressor: the slope of the critical description length (bits) against
    log₂(1/ε). With d weights and n* ≈ (λ/d)·log₂(1/ε) + c bits each (SCIENCE.md §1), the total
    d·n* rises by λ per halving of ε, so the slope is a compression-side estimate of λ."""
    rows = []
    for (model, step, comp), group in table.dropna(subset=["critical_dl_bits"]).groupby(["model", "step", "compressor"]):
        if group.epsilon.nunique() < 2:
            continue
        x = np.log2(1 / group.epsilon.to_numpy())
        slope, intercept = np.polyfit(x, group.critical_dl_bits.to_numpy(), 1)
        first = group.iloc[0]
        rows.append({"model": model, "step": step, "compressor": comp, "epsilons": group.epsilon.nunique(),
                     "eps_slope_bits": slope, "llc_mean": first.llc_mean, "llc_std_error": first.llc_std_error,
                     "num_params": first.num_params})
    return pd.DataFrame(rows)


def loo_predictions(table: pd.DataFrame, min_step: int = 0) -> pd.DataFrame:
    """Each checkpoint predicted from a fit on the others of its (model, compressor, ε): the
    prediction table, with interval and whether the measured value falls inside."""
    rows = []
    for key, group in usable(table, min_step).groupby(GROUP):
        x, y, se = group.llc_mean.to_numpy(), group.critical_value.to_numpy(), group.llc_std_error.fillna(0).to_numpy()
        for i, step in enumerate(group.step):
            keep = np.arange(len(x)) != i
            fit = fit_line_plain(x[keep], y[keep])
            if fit is None:
                continue
            mean, low, high = fit.predict(x[i], se[i])
            rows.append(dict(zip(GROUP, key), step=step, llc_mean=x[i], measured=y[i], predicted=mean,
                             lower=low, upper=high, inside=bool(low <= y[i] <= high)))
    return pd.DataFrame(rows)
