"""Fits of critical compression on λ̂: per (model, compressor entry, ε), across sizes, per ε sweep,
and the leave-one-out predictions, each computed once from the table. Needs no torch.

The fit, per (model, compressor entry, ε): critical compression c* = α + β·λ̂ by OLS with HC3
standard errors (`lines.fit_line`), c* the interpolated critical value by default (`critical:
bracket` uses the bracket's passing end).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mdl_slt.analysis.lines import LineFit, fit_line, r_squared
from mdl_slt.analysis.tables import GROUP, usable

CONVERGED_R_HAT = 1.05


def fit_lines(table: pd.DataFrame, inside: pd.Series | None = None) -> dict:
    """(model, compressor, ε) → (LineFit or None, the group's rows) for critical compression on λ̂."""
    return {key: (fit_line(group.llc_mean, group.critical_value, group.llc_std_error.to_numpy(),
                           y_se=group.critical_se.to_numpy() if "critical_se" in group else None), group)
            for key, group in usable(table, inside).groupby(GROUP)}


def fit_relation(lines: dict) -> pd.DataFrame:
    """One row per (model, compressor, ε) of `fit_lines`: its LineFit flattened, with the share of
    its checkpoints whose chains converged."""
    rows = []
    for (model, comp, eps), (fit, group) in lines.items():
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
        row = {"compressor": comp, "epsilon": eps, "n": len(group), "n_models": group.model.nunique()}
        if group.model.nunique() >= 2 and len(group) > 2 * group.model.nunique() + 1:
            common = smf.ols("critical_value ~ llc_mean", group).fit()
            separate = smf.ols("critical_value ~ llc_mean * C(model)", group).fit()
            robust = smf.ols("critical_value ~ llc_mean * C(model)", group).fit(cov_type="HC3")
            interactions = [name for name in robust.params.index if name.startswith("llc_mean:")]
            wald = robust.wald_test(" , ".join(f"{name} = 0" for name in interactions), scalar=True)
            per_param = smf.ols("critical_value ~ llc_per_param", group).fit(cov_type="HC3")
            row.update(r2_common=r_squared(common), r2_separate=r_squared(separate),
                       p_same_line=float(separate.compare_f_test(common)[1]), p_same_slope=float(wald.pvalue),
                       r2_per_param=r_squared(per_param), slope_per_param=per_param.params["llc_per_param"],
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
        rows.append({"model": model, "step": step, "compressor": comp, "n_epsilons": group.epsilon.nunique(),
                     "eps_slope_bits": slope, "llc_mean": first.llc_mean, "llc_std_error": first.llc_std_error,
                     "num_params": first.num_params})
    return pd.DataFrame(rows)


def loo_predictions(lines: dict) -> pd.DataFrame:
    """Each checkpoint predicted from a line through the others of its (model, compressor, ε),
    read from the fits of `fit_lines`: the prediction table, with interval and whether the measured
    value falls inside."""
    rows = []
    for key, (fit, group) in lines.items():
        if fit is None:
            continue
        y = group.critical_value.to_numpy()
        for i, mean, low, high in fit.loo_points:
            rows.append(dict(zip(GROUP, key), step=group.step.iloc[i], llc_mean=group.llc_mean.iloc[i],
                             measured=y[i], predicted=mean, pi_low=low, pi_high=high, inside=bool(low <= y[i] <= high)))
    return pd.DataFrame(rows)


def loss_lines(lines: dict) -> dict:
    """(model, compressor, ε) → (LineFit of the critical value on the held-out base loss, rows),
    over the checkpoints of each line of `fit_lines`: the baseline a prediction from λ̂ must beat."""
    return {key: (fit_line(group.base_loss, group.critical_value), group) for key, (_, group) in lines.items()}

