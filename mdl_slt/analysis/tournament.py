"""Every predictor of the critical value against the others, judged on units left out: the one
tournament both designs share, and the fit it is made of (`fit_form`: OLS with HC3 errors, a
coefficient's interval, the leave-one-unit-out error). Needs no torch.

Across runs the units are runs, the base columns a constant and log d, the companion the held-out
loss; inside checkpoints the units are weight groups, the base an offset per checkpoint, the
companion the group's size. For a set of rows with critical values y, per candidate p (a column):

    alone        y = base + β·p                 R², β with its 95% interval (HC3, t), `loo_` the
                                                leave-one-unit-out RMSE
    with         y = base + β·p + γ·companion   `loo_with_`: does p hold beside the companion?
    λ̂ beside p   y = base + β·p + β_λ·λ̂          `p_llc_beside_` (HC3 Wald), β_λ as `llc_coef_beside_`
                                                with its interval, `loo_llc_beside_`

The best candidate is the one of least `loo`; the best that is not λ̂ in one of its forms (`OWN`)
is the one λ̂ must beat, and λ̂ adds to it out of sample when the line with both predicts unseen
units better (`llc_adds`). λ̂'s coefficient alone (`llc_direction`) and beside the best other
(`llc_direction_beside`) are read against the theory's sign (more λ̂, less compressible).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mdl_slt.analysis.baselines import hc3, hc3_wald
from mdl_slt.analysis.lines import LEVEL, Regression


def leave_one_unit_out(X: np.ndarray, y: np.ndarray, units: np.ndarray) -> float:
    """RMSE of each unit's rows (a run's checkpoints, a group at every checkpoint) predicted by OLS
    on the other units' rows; NaN unless every unit can be predicted."""
    errors = []
    for unit in np.unique(units):
        held = units == unit
        rest = X[~held]
        if len(rest) <= X.shape[1] or np.linalg.matrix_rank(rest) < X.shape[1]:
            return math.nan
        beta = np.linalg.lstsq(rest, y[~held], rcond=None)[0]
        errors.extend(X[held] @ beta - y[held])
    return float(np.sqrt(np.mean(np.square(errors))))


def fit_form(X: np.ndarray, y: np.ndarray, units: np.ndarray, names: list[str],
             target: str | None = None) -> tuple[dict, Regression | None]:
    """R², the coefficient of column `target` (default: the first predictor) with its HC3 95%
    interval, and `rmse`, the leave-one-unit-out RMSE; and the fitted line (None where undefined)."""
    from scipy import stats

    found = hc3(X, y) if np.isfinite(X).all() else None
    if found is None:
        return {"r2": math.nan, "coef": math.nan, "coef_ci_low": math.nan, "coef_ci_high": math.nan,
                "rmse": math.nan}, None
    beta, cov = found
    j = names.index(target) if target is not None else 1
    residual = y - X @ beta
    total = np.sum((y - y.mean()) ** 2)
    df = len(y) - X.shape[1]
    half = stats.t.ppf(0.5 + LEVEL / 2, df) * math.sqrt(max(cov[j, j], 0.0))
    figures = {"r2": float(1 - residual @ residual / total) if total > 0 else math.nan, "coef": float(beta[j]),
               "coef_ci_low": float(beta[j] - half), "coef_ci_high": float(beta[j] + half),
               "rmse": leave_one_unit_out(X, y, units)}
    line = Regression(names, beta.tolist(), cov.tolist(), float(residual @ residual / df), df, figures["r2"],
                      figures["rmse"])
    return figures, line


def direction(low: float, high: float, sign: int | None) -> str:
    """λ̂'s coefficient at equal loss against the theory's sign: `as theory` or `against theory`
    when its 95% interval excludes zero, else `unclear`."""
    if sign is None or not (math.isfinite(low) and math.isfinite(high)) or low <= 0 <= high:
        return "unclear"
    return "as theory" if (low > 0) == (sign > 0) else "against theory"


OWN = ("llc", "llc_per_param", "redundancy")  # λ̂ in its forms: what the field's measures are set against
MIN_UNITS = 4  # units a tournament needs (a line, and one left out)


def compare(rows: pd.DataFrame, candidates: list[str], base: list[np.ndarray], units: np.ndarray, y: np.ndarray,
            companion: str | None, llc: str, sign: int | None, unseen: str) -> tuple[dict, list[dict]]:
    """The tournament over `rows` (module docstring): (the summary — `best`, `best_other`, `llc_adds`,
    `llc_direction`, `llc_direction_beside`, `theory_sign` —, a row per candidate with its figures,
    errors on unseen units named `rmse_<unseen>`)."""
    usable = len(np.unique(units)) >= MIN_UNITS and len(y) > len(base) + 2 and np.ptp(y) > 0  # nothing to predict
    found = {name: _candidate(rows, name, base, units, y, companion, llc, usable) for name in candidates}
    scored = {n: f["rmse"] for n, f in found.items() if math.isfinite(f["rmse"])}
    others = {n: v for n, v in scored.items() if n not in OWN}
    best_other = min(others, key=others.get) if others else None
    summary = {"best": min(scored, key=scored.get) if scored else None, "best_other": best_other,
               "llc_adds": None, "llc_direction_beside": "unclear", "theory_sign": sign,
               "llc_direction": direction(found[llc]["coef_ci_low"], found[llc]["coef_ci_high"], sign)
               if llc in found else "unclear"}
    if best_other is not None and math.isfinite(found[best_other]["rmse_with_llc"]):
        other = found[best_other]
        summary["llc_adds"] = bool(other["rmse_with_llc"] < other["rmse"])
        summary["llc_direction_beside"] = direction(other["llc_coef_beside_ci_low"], other["llc_coef_beside_ci_high"],
                                                    sign)
    beside = f"beside_{companion}" if companion else "beside"
    named = [{"predictor": n, **{k.replace("rmse", f"rmse_{unseen}").replace("_beside_companion", f"_{beside}"): v
                                 for k, v in f.items()}} for n, f in found.items()]
    return summary, named


def _candidate(rows, name, base, units, y, companion, llc, usable) -> dict:
    nan = math.nan
    figures = {"r2": nan, "coef": nan, "coef_ci_low": nan, "coef_ci_high": nan, "rmse": nan,
               "rmse_beside_companion": nan, "p_llc_beside": nan, "llc_coef_beside": nan,
               "llc_coef_beside_ci_low": nan, "llc_coef_beside_ci_high": nan, "rmse_with_llc": nan}
    if name not in rows or not usable:
        return figures
    x = rows[name].to_numpy(float)
    if not np.isfinite(x).all() or np.ptp(x) == 0:
        return figures
    names = [f"base{i}" for i in range(len(base))]
    alone, _ = fit_form(np.column_stack([*base, x]), y, units, names + [name], target=name)
    figures.update(alone)
    if companion is not None and companion != name:
        beside = rows[companion].to_numpy(float)
        figures["rmse_beside_companion"] = fit_form(np.column_stack([*base, x, beside]), y, units,
                                                    names + [name, companion], target=name)[0]["rmse"]
    if name != llc:
        X = np.column_stack([*base, x, rows[llc].to_numpy(float)])
        both, _ = fit_form(X, y, units, names + [name, llc], target=llc)
        figures.update(p_llc_beside=hc3_wald(X, y, X.shape[1] - 1)[1], llc_coef_beside=both["coef"],
                       llc_coef_beside_ci_low=both["coef_ci_low"], llc_coef_beside_ci_high=both["coef_ci_high"],
                       rmse_with_llc=both["rmse"])
    return figures
