"""Tidy tables from the store and the complexity–compressibility fits. Needs no torch.

Fit, per model, compressor and ε:  critical bits b*(ε) = α + β·λ̂ + noise, by OLS
(statsmodels), reporting β with its standard error, R² and Pearson r over the checkpoints
with step ≥ `min_step` (the early, fast-falling-loss phase breaks the relation: SCIENCE.md §1).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def measurements(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, step, compressor, ε): critical bits beside λ̂ and the base loss."""
    llc = records[records.task == "llc"][["model", "revision", "step", "num_params", "llc_mean", "llc_std_error"]]
    base = records[records.task == "base_loss"][["model", "revision", "loss"]].rename(columns={"loss": "base_loss"})
    crit = records[records.task == "critical"][["model", "revision", "compressor", "epsilon", "knob", "bits",
                                                  "bits_entropy", "detail"]]
    crit = crit.assign(monotone=crit.detail.map(lambda d: d.get("monotone")),
                       evaluations=crit.detail.map(lambda d: d.get("evaluations"))).drop(columns="detail")
    table = crit.merge(llc, on=["model", "revision"]).merge(base, on=["model", "revision"])
    table = table.rename(columns={"knob": "critical_bits", "bits": "critical_dl_bits",
                                  "bits_entropy": "critical_dl_entropy_bits"})
    return table.sort_values(["model", "compressor", "epsilon", "step"]).reset_index(drop=True)


def fit_relation(table: pd.DataFrame, min_step: int = 0) -> pd.DataFrame:
    """OLS of critical bits on λ̂ per (model, compressor, ε)."""
    import statsmodels.api as sm

    rows = []
    usable = table[(table.step >= min_step) & table.critical_bits.notna() & table.llc_mean.notna()]
    for (model, comp, eps), group in usable.groupby(["model", "compressor", "epsilon"]):
        row = {"model": model, "compressor": comp, "epsilon": eps, "n": len(group),
               "num_params": int(group.num_params.iloc[0]), "min_step": min_step}
        if len(group) >= 3 and group.llc_mean.nunique() > 1:
            fit = sm.OLS(group.critical_bits.to_numpy(), sm.add_constant(group.llc_mean.to_numpy())).fit()
            r = float(np.corrcoef(group.llc_mean, group.critical_bits)[0, 1]) if group.critical_bits.nunique() > 1 else math.nan
            row.update(intercept=fit.params[0], slope=fit.params[1], slope_se=fit.bse[1],
                       r_squared=fit.rsquared, pearson_r=r)
        rows.append(row)
    return pd.DataFrame(rows)
