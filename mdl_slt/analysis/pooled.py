"""Across runs: one fit over several training runs (sizes, or runs of one size trained
otherwise), each predictor beside the others, judged on runs it never saw. Needs no torch.

Per (scope, compressor entry, ε), over the checkpoints inside the window, the critical value c*
on each form (OLS, HC3; the form's coefficient with its 95% t interval):

    llc            c* = α + β·λ̂ + γ·log d
    loss           c* = α + β·L + γ·log d              L the held-out base loss
    tokens         c* = α + β·log(1 + tokens seen) + γ·log d
    llc_per_param  c* = α + β·λ̂/d
    redundancy     c* = α + β·(λ̂·ln n − … )/ln 2       the LLC's description length in bits

(log d only where the scope holds two or more sizes; d the sampled parameters, n the tokens
seen), and its leave-one-run-out RMSE: each run's checkpoints predicted by the form fitted to
the other runs. The nested HC3 Wald tests "λ̂ beyond the loss" and "the loss beyond λ̂" add log d
the same way. Scopes: every run of the experiment, and the runs of each size that has two or more.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mdl_slt.analysis.baselines import hc3, predictors, separation
from mdl_slt.analysis.tables import usable

FORMS = {"llc": "λ̂ + log d", "loss": "loss + log d", "tokens": "log tokens + log d", "llc_per_param": "λ̂/d",
         "redundancy": "λ̂·ln n (bits)"}
WITH_SIZE = ("llc", "loss", "tokens")


def design(group: pd.DataFrame, form: str) -> np.ndarray:
    """The columns of one form (module docstring): constant, the predictor, then log d when the
    group holds two or more sizes."""
    found = predictors(group)
    column = {"llc": found["llc"], "loss": found["loss"], "tokens": found["tokens"],
              "llc_per_param": (group.llc_mean / group.llc_params).to_numpy(float),
              "redundancy": group.llc_dl_bits.to_numpy(float)}[form]
    columns = [np.ones(len(group)), column]
    if form in WITH_SIZE and group.llc_params.nunique() >= 2:
        columns.append(np.log(group.llc_params.to_numpy(float)))
    return np.column_stack(columns)


def leave_one_run_out(X: np.ndarray, y: np.ndarray, runs: np.ndarray) -> float:
    """RMSE of each run's checkpoints predicted by OLS on the other runs; NaN unless every run
    can be predicted."""
    errors = []
    for run in np.unique(runs):
        held = runs == run
        rest = X[~held]
        if len(rest) <= X.shape[1] or np.linalg.matrix_rank(rest) < X.shape[1]:
            return math.nan
        beta = np.linalg.lstsq(rest, y[~held], rcond=None)[0]
        errors.extend(X[held] @ beta - y[held])
    return float(np.sqrt(np.mean(np.square(errors))))


def form_figures(X: np.ndarray, y: np.ndarray, runs: np.ndarray) -> dict:
    """R², the predictor's coefficient with its HC3 95% interval, and the leave-one-run-out RMSE."""
    from scipy import stats

    found = hc3(X, y) if np.isfinite(X).all() else None
    if found is None:
        return {"r2": math.nan, "coef": math.nan, "coef_low": math.nan, "coef_high": math.nan, "loro": math.nan}
    beta, cov = found
    residual = y - X @ beta
    total = np.sum((y - y.mean()) ** 2)
    half = stats.t.ppf(0.975, len(y) - X.shape[1]) * math.sqrt(max(cov[1, 1], 0.0))
    return {"r2": float(1 - residual @ residual / total) if total > 0 else math.nan, "coef": float(beta[1]),
            "coef_low": float(beta[1] - half), "coef_high": float(beta[1] + half),
            "loro": leave_one_run_out(X, y, runs)}


def scopes(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows): every run together, then the runs of each size with two or more runs."""
    found = [("all runs", rows)] if rows.model.nunique() >= 2 else []
    for d, group in rows.groupby("llc_params"):
        if group.model.nunique() >= 2 and group.model.nunique() < rows.model.nunique():
            found.append((f"runs of d = {int(d):,}", group))
    return found


def compare_runs(group: pd.DataFrame) -> dict:
    """The figures of one pooled group (module docstring), flat."""
    y = group.critical_value.to_numpy(float)
    runs = group.model.to_numpy()
    row: dict = {"n": len(y), "runs": group.model.nunique(), "sizes": group.llc_params.nunique()}
    for form in FORMS:
        row.update({f"{key}_{form}": value for key, value in form_figures(design(group, form), y, runs).items()})
    sizes = list(design(group, "loss")[:, 2:].T)  # log d, where the pool holds several sizes
    row.update(separation(y, group.llc_mean, group.base_loss, sizes, min_points=5))
    scored = {form: row[f"loro_{form}"] for form in FORMS if math.isfinite(row[f"loro_{form}"])}
    row["best_across_runs"] = min(scored, key=scored.get) if scored else None
    return row


def across_runs(table: pd.DataFrame, inside: pd.Series | None = None) -> pd.DataFrame:
    """One row per (scope, compressor, ε): each form's fit across runs and its error on unseen runs."""
    rows = []
    for (comp, eps), group in usable(table, inside).groupby(["compressor", "epsilon"]):
        for scope, rows_in in scopes(group):
            rows.append({"scope": scope, "compressor": comp, "epsilon": eps, **compare_runs(rows_in)})
    return pd.DataFrame(rows)
