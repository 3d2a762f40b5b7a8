"""Does λ̂ say anything the loss does not? Every fit beside its baselines. Needs no torch.

Along one training run the held-out loss falls, λ̂ rises and the critical compression moves, so
any of them "predicts" the others. For each (model, compressor entry, ε), over the same
checkpoints as the fit on λ̂, the line of the critical value on each predictor

    llc     λ̂
    loss    the held-out base loss L
    tokens  log(1 + tokens seen), or log(1 + step) where tokens are unknown

with its R², slope and 95% interval (OLS, HC3) and leave-one-checkpoint-out RMSE; the nested tests
in c* = α + β_L·L + β_λ·λ̂ (β_λ: λ̂'s coefficient at equal loss, its sign the direction),

    λ̂ beyond the loss   H0: β_λ = 0        the loss beyond λ̂   H0: β_L = 0

each an HC3 Wald test (the robust t of the coefficient on n − 3 degrees of freedom, `hc3_wald`);
the correlation r(λ̂, L) with a collinearity flag when |r| > 0.9 (these checkpoints cannot
separate the two); and the predictor with the smallest leave-one-out error.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mdl_slt.analysis.lines import fit_line
from mdl_slt.analysis.tables import GROUP

PREDICTORS = {"llc": "λ̂", "loss": "held-out loss", "tokens": "log tokens seen"}
COLLINEAR = 0.9
SEPARATION = ("coef_llc_beyond_loss", "p_llc_beyond_loss", "coef_loss_beyond_llc", "p_loss_beyond_llc")


def hc3(X, y) -> tuple[np.ndarray, np.ndarray] | None:
    """(β, Σ) of the OLS of y on X with HC3 covariance Σ = (XᵀX)⁻¹ Xᵀ diag(e_i² / (1 − h_i)²) X (XᵀX)⁻¹,
    h the leverages; None where it is undefined (n ≤ k, X short of rank, a point of leverage 1)."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    n, k = X.shape
    if n <= k or np.linalg.matrix_rank(X) < k:
        return None
    inverse = np.linalg.inv(X.T @ X)
    beta = inverse @ X.T @ y
    residual = y - X @ beta
    leverage = np.einsum("ij,jk,ik->i", X, inverse, X)
    if np.any(leverage >= 1 - 1e-12):
        return None
    meat = X.T @ (X * (residual**2 / (1 - leverage) ** 2)[:, None])
    return beta, inverse @ meat @ inverse


def hc3_wald(X, y, column: int) -> tuple[float, float]:
    """(coefficient, two-sided p) of `column` of X in the OLS of y on X with HC3 covariance (`hc3`):
    t = β_j / √Σ_jj on n − k degrees of freedom. NaN where it is undefined."""
    from scipy import stats

    found = hc3(X, y)
    if found is None:
        return math.nan, math.nan
    beta, cov = found
    if not cov[column, column] > 0:
        return float(beta[column]), math.nan
    t = beta[column] / math.sqrt(cov[column, column])
    return float(beta[column]), float(2 * stats.t.sf(abs(t), len(y) - X.shape[1]))


def predictors(group: pd.DataFrame) -> dict[str, np.ndarray]:
    """The three predictors of a group's critical values (module docstring)."""
    tokens = pd.to_numeric(group.tokens_seen, errors="coerce").astype(float)
    progress = np.log1p(tokens.where(tokens.notna(), pd.to_numeric(group.step, errors="coerce")).to_numpy(float))
    return {"llc": group.llc_mean.to_numpy(float), "loss": group.base_loss.to_numpy(float), "tokens": progress}


def _line_figures(fit) -> dict:
    """R², slope, its HC3 interval and the leave-one-out RMSE of a LineFit (NaN without one)."""
    if fit is None:
        return {"r2": math.nan, "slope": math.nan, "slope_ci_low": math.nan, "slope_ci_high": math.nan,
                "rmse_loco": math.nan}
    return {"r2": fit.r_squared, "slope": fit.slope, "slope_ci_low": fit.slope_ci[0], "slope_ci_high": fit.slope_ci[1],
            "rmse_loco": fit.rmse_loco}


def compare(group: pd.DataFrame, on_llc, on_loss) -> dict:
    """The baseline figures of one group of checkpoints (module docstring), flat, given its lines
    on λ̂ and on the loss (LineFits, or None); the line on training progress is fitted here."""
    y = group.critical_value.to_numpy(float)
    found = predictors(group)
    on_tokens = fit_line(found["tokens"], y) if np.isfinite(found["tokens"]).all() else None
    row: dict = {"n": len(y)}
    for name, fit in (("llc", on_llc), ("loss", on_loss), ("tokens", on_tokens)):
        row.update({f"{key}_{name}": value for key, value in _line_figures(fit).items()})
    row.update(separation(y, found["llc"], found["loss"]))
    scored = {name: row[f"rmse_loco_{name}"] for name in found if math.isfinite(row[f"rmse_loco_{name}"])}
    row["best_out_of_sample"] = min(scored, key=scored.get) if scored else None
    return row


def separation(y, llc, loss, covariates=(), min_points: int = 4) -> dict:
    """Can these checkpoints tell λ̂ from the loss? r(λ̂, L) with the collinearity flag, and in
    c* = α + β_L·L + γ·covariates + β_λ·λ̂ each coefficient (β_λ: λ̂'s at equal loss, β_L: the
    loss's at equal λ̂) with its nested HC3 Wald test (module docstring); NaN below `min_points`
    points or for a constant λ̂ or loss."""
    y, llc, loss = (np.asarray(v, float) for v in (y, llc, loss))
    if not (len(y) >= min_points and np.ptp(llc) > 0 and np.ptp(loss) > 0):
        return {"r_llc_loss": math.nan, "collinear": False, **dict.fromkeys(SEPARATION, math.nan)}
    r = float(np.corrcoef(llc, loss)[0, 1])
    design = np.column_stack([np.ones(len(y)), loss, *covariates, llc])
    (coef_llc, p_llc), (coef_loss, p_loss) = hc3_wald(design, y, -1), hc3_wald(design, y, 1)
    return {"r_llc_loss": r, "collinear": abs(r) > COLLINEAR, "coef_llc_beyond_loss": coef_llc,
            "p_llc_beyond_loss": p_llc, "coef_loss_beyond_llc": coef_loss, "p_loss_beyond_llc": p_loss}


def baselines(lines: dict, loss_lines: dict) -> pd.DataFrame:
    """One row per (model, compressor, ε) of `fits.fit_lines`: λ̂ against the loss and training
    progress over the same checkpoints, from those lines and `fits.loss_lines`, each fitted once."""
    return pd.DataFrame([{**dict(zip(GROUP, key)), **compare(group, fit, loss_lines[key][0])}
                         for key, (fit, group) in lines.items()])


def verdict(row) -> str:
    """What a row says in words: which predictor wins out of sample and whether λ̂ adds to the loss."""
    if row.get("best_out_of_sample") is None or (isinstance(row.get("n"), (int, float)) and row["n"] < 4):
        return "too few checkpoints"
    best = PREDICTORS[row["best_out_of_sample"]]
    if row["collinear"]:
        beyond = f"λ̂ and the loss move together (r = {row['r_llc_loss']:.2f}): these checkpoints cannot separate them"
    elif math.isfinite(row["p_llc_beyond_loss"]):
        beyond = ("λ̂ adds to the loss" if row["p_llc_beyond_loss"] < 0.05 else "λ̂ adds nothing detectable to the loss") + \
            f" (at equal loss {row['coef_llc_beyond_loss']:+.3g} per unit of λ̂, p = {row['p_llc_beyond_loss']:.2g})"
    else:
        beyond = "the nested test is undefined"
    return f"best out of sample: {best}; {beyond}"
