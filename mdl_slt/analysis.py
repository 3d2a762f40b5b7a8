"""From stored records to answers: description lengths, fits, ε sweeps, predictions. Needs no torch.

Which rows: those of the tasks the store's experiment defines (their config hashes); every other
row of the store (older settings, other experiments) is left out and named (`select`).

Which checkpoints: the analysis window, a rule stated before any fit is seen (`window`): a
model's checkpoints whose held-out loss has covered at least a fraction f (default 0.9) of its
fall from the loss of a uniform prediction, ln V (where training starts), to its lowest measured
loss. `min_step` overrides it with a training step. Fits are reported inside and without it.

The fit, per (model, compressor entry, ε): critical compression c* = α + β·λ̂ by OLS with HC3
standard errors, c* the interpolated critical value by default (`critical: bracket` uses the
bracket's passing end). Its prediction interval at a new λ̂₀ (standard error s₀) is
    ŷ₀ ± t_{n−2} · √( x₀ᵀ Σ_HC3 x₀ + s² + β² s₀² ),   x₀ = (1, λ̂₀),
the last term carrying the new estimate's own uncertainty. A bootstrap over checkpoints, with
each λ̂ redrawn from N(λ̂, se²), gives a slope interval that carries the LLC's standard errors.
One rule for a missing or non-finite standard error, used by every fit, bootstrap and
leave-one-out: it takes the largest finite one among the checkpoints fitted with it
(`llc_errors`), never zero unless none is known.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mdl_slt.errors import UserError

LEVEL = 0.95
BOOTSTRAP_DRAWS = 2000
LN2 = math.log(2)
GROUP = ["model", "compressor", "epsilon"]
CONVERGED_R_HAT = 1.05


def select(records: pd.DataFrame, experiment: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows of the experiment's tasks, one line per other configuration left out: its task,
    config hash, experiment, models and row count)."""
    from mdl_slt.experiment import Experiment
    from mdl_slt.plan import Tasks

    hashes = Tasks(Experiment.model_validate(experiment)).all_hashes
    keep = records.config_hash.isin(hashes)
    rest = records[~keep]
    left = (rest.groupby(["task", "config_hash"], dropna=False)
            .agg(experiment=("experiment", "first"), models=("model", "nunique"), rows=("key", "size"),
                 created=("created_at", "max")).reset_index())
    return records[keep], left


def llc_description_length(llc, tokens_seen, multiplicity: int = 1):
    """Redundancy of the two-part code in bits: (λ̂·ln n − (m − 1)·ln ln n)/ln 2, n = tokens seen
    (NaN before n ≥ 3, where ln ln n is undefined or negative)."""
    n = pd.to_numeric(pd.Series(tokens_seen), errors="coerce").astype(float).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        bits = (np.asarray(llc, float) * np.log(n) - (multiplicity - 1) * np.log(np.log(n))) / LN2
    return np.where(n >= 3, bits, np.nan)


def measurements(records: pd.DataFrame, critical: str = "interpolated") -> pd.DataFrame:
    """One row per (model, checkpoint, compressor entry, ε): critical compression beside λ̂, the
    base loss and both description lengths (compression-based at the critical point, LLC-based),
    in bits. `critical_value` is the interpolated critical value, or the bracket's passing end
    (`critical: bracket`); both are kept. One line is never fitted across numerics or devices."""
    llc = records[records.task == "llc"]
    detail = llc.detail
    llc = llc.assign(r_hat=detail.map(lambda d: d.get("r_hat")), ess=detail.map(lambda d: d.get("ess")),
                     converged=detail.map(lambda d: d.get("converged")),
                     llc_params=[d.get("num_params") or p for d, p in zip(detail, llc.num_params)],
                     llc_numerics=llc.numerics, llc_config=llc.config_hash)
    llc = llc[["model", "revision", "step", "num_params", "tokens_seen", "llc_mean", "llc_std_error", "r_hat", "ess",
               "converged", "llc_params", "llc_numerics", "llc_config"]]
    base = records[records.task == "base_loss"]
    base = base.assign(uniform_loss=base.detail.map(lambda d: d.get("uniform_loss")))
    base = base[["model", "revision", "loss", "uniform_loss"]].rename(columns={"loss": "base_loss"})
    crit = records[records.task == "critical"]
    crit = crit.assign(knob_name=crit.detail.map(lambda d: d.get("knob_name")),
                       monotone=crit.detail.map(lambda d: d.get("monotone")),
                       wide=crit.detail.map(lambda d: d.get("wide")),
                       interpolation=crit.detail.map(lambda d: d.get("interpolation")),
                       evaluations=crit.detail.map(lambda d: d.get("evaluations")), critical_config=crit.config_hash)
    crit = crit[["model", "revision", "compressor", "method", "epsilon", "knob", "knob_interpolated", "bits",
                 "bits_interpolated", "bits_entropy", "knob_name", "monotone", "wide", "interpolation", "evaluations",
                 "device", "numerics", "critical_config"]]
    table = crit.merge(llc, on=["model", "revision"]).merge(base, on=["model", "revision"])
    interpolated = critical == "interpolated"
    table["critical_value"] = table.knob_interpolated.where(table.knob_interpolated.notna() & interpolated, table.knob)
    table["critical_dl_bits"] = table.bits_interpolated.where(table.bits_interpolated.notna() & interpolated,
                                                              table.bits)
    table = table.rename(columns={"knob": "critical_bracket", "bits": "critical_bracket_bits",
                                  "bits_entropy": "critical_dl_entropy_bits"})
    table["llc_dl_bits"] = llc_description_length(table.llc_mean, table.tokens_seen)
    for key, group in table.groupby(GROUP):
        setups = group[["device", "numerics", "llc_numerics"]].drop_duplicates()
        if len(setups) > 1:
            kinds = "; ".join(f"{r.device} {r.numerics} (LLC {r.llc_numerics})" for r in setups.itertuples())
            raise UserError(f"cannot fit one line across numerics: {key[0]} {key[1]} ε={key[2]:g} has rows measured "
                            f"as {kinds}; analyse each in its own store or experiment")
    return table.sort_values(["model", "compressor", "epsilon", "step"]).reset_index(drop=True)


def window(table: pd.DataFrame, fraction: float = 0.9, min_step: int | None = None) -> pd.Series:
    """Whether each row's checkpoint is inside the analysis window: its base loss has covered at
    least `fraction` of the model's fall from the uniform-prediction loss (else its highest
    measured loss) to its lowest measured loss; or, with `min_step`, its step is at least that."""
    if min_step is not None:
        return table.step.ge(min_step).fillna(False).astype(bool)
    start = table.groupby("model").uniform_loss.transform("max").fillna(table.groupby("model").base_loss.transform("max"))
    final = table.groupby("model").base_loss.transform("min")
    fallen = (start - table.base_loss) / (start - final).where(start > final)
    return fallen.ge(fraction - 1e-12).fillna(False).astype(bool)


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


def _ols(x, y, min_points: int):
    import statsmodels.api as sm

    if len(x) < min_points or np.ptp(x) == 0:
        return None
    return sm.OLS(y, sm.add_constant(x)).fit(cov_type="HC3", use_t=True)


def line(x, y) -> LineFit | None:
    """The OLS + HC3 line alone (no bootstrap or leave-one-out); None below 3 points or constant x."""
    fit = _ols(np.asarray(x, float), np.asarray(y, float), 3)
    if fit is None:
        return None
    nan2 = (math.nan, math.nan)
    return LineFit(len(x), float(fit.params[0]), float(fit.params[1]), fit.cov_params().tolist(), float(fit.scale),
                   int(fit.df_resid), float(fit.rsquared), math.nan, math.nan, nan2, nan2, nan2, math.nan, math.nan)


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


def fit_line(x, y, x_se=None, seed: int = 0) -> LineFit | None:
    """OLS of y on x with HC3 errors, bootstrap and leave-one-out; None with < 4 points or constant x."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    se = llc_errors(np.zeros_like(x) if x_se is None else x_se)
    fit = _ols(x, y, 4)
    if fit is None:
        return None
    ci = fit.conf_int(1 - LEVEL)
    constant_y = np.ptp(y) == 0
    loo = leave_one_out(x, y, se)
    errors = [mean - y[i] for i, mean, _, _ in loo]
    return LineFit(
        n=len(x), intercept=float(fit.params[0]), slope=float(fit.params[1]), cov=fit.cov_params().tolist(),
        scale=float(fit.scale), df_resid=int(fit.df_resid), r_squared=float(fit.rsquared),
        pearson_r=math.nan if constant_y else float(stats.pearsonr(x, y)[0]),
        spearman_rho=math.nan if constant_y else float(stats.spearmanr(x, y)[0]),
        slope_ci=tuple(map(float, ci[1])), intercept_ci=tuple(map(float, ci[0])),
        bootstrap_slope_ci=_bootstrap_slope(x, y, se, seed),
        loo_rmse=float(np.sqrt(np.mean(np.square(errors)))) if errors else math.nan,
        loo_coverage=float(np.mean([low <= y[i] <= high for i, _, low, high in loo])) if loo else math.nan)


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


def usable(table: pd.DataFrame, inside: pd.Series | None = None) -> pd.DataFrame:
    """Rows with a critical value and a λ̂, inside the window when one is given."""
    keep = table.critical_value.notna() & table.llc_mean.notna()
    return table[keep & (inside if inside is not None else True)]


def fit_lines(table: pd.DataFrame, inside: pd.Series | None = None) -> dict:
    """(model, compressor, ε) → (LineFit or None, the group's rows) for critical compression on λ̂."""
    return {key: (fit_line(group.llc_mean, group.critical_value, group.llc_std_error.to_numpy()), group)
            for key, group in usable(table, inside).groupby(GROUP)}


def fit_relation(table: pd.DataFrame, inside: pd.Series | None = None) -> pd.DataFrame:
    """One row per (model, compressor, ε): the LineFit of critical compression on λ̂, flattened,
    with the share of its checkpoints whose chains converged."""
    rows = []
    for (model, comp, eps), (fit, group) in fit_lines(table, inside).items():
        row = {"model": model, "compressor": comp, "method": group.method.iloc[0], "epsilon": eps, "n": len(group),
               "num_params": int(group.num_params.iloc[0]),
               "converged_share": float(group.converged.fillna(group.r_hat <= CONVERGED_R_HAT).astype(bool).mean()),
               "first_step": group.step.min()}
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


def pooled_fits(table: pd.DataFrame, inside: pd.Series | None = None) -> pd.DataFrame:
    """Per (compressor, ε), across model sizes: does one line serve all sizes?

    `p_same_line`: F test of one common line against a line per size (OLS);
    `p_same_slope`: HC3 Wald test that the size × λ̂ interactions are zero;
    `r2_per_param`: R² of one line on λ̂/d (d the sampled parameters), the size-normalised form.
    """
    import statsmodels.formula.api as smf

    rows = []
    for (comp, eps), group in usable(table, inside).groupby(["compressor", "epsilon"]):
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
    log₂(1/ε). With d weights and n* ≈ (λ/d)·log₂(1/ε) + c bits each (the volume-law heuristic,
    docs/science.md), the total d·n* rises by λ per halving of ε, so the slope would be a
    compression-side estimate of λ."""
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


def loo_predictions(table: pd.DataFrame, inside: pd.Series | None = None) -> pd.DataFrame:
    """Each checkpoint predicted from a fit on the others of its (model, compressor, ε): the
    prediction table, with interval and whether the measured value falls inside."""
    rows = []
    for key, group in usable(table, inside).groupby(GROUP):
        y = group.critical_value.to_numpy()
        for i, mean, low, high in leave_one_out(group.llc_mean, y, group.llc_std_error):
            rows.append(dict(zip(GROUP, key), step=group.step.iloc[i], llc_mean=group.llc_mean.iloc[i],
                             measured=y[i], predicted=mean, lower=low, upper=high, inside=bool(low <= y[i] <= high)))
    return pd.DataFrame(rows)
