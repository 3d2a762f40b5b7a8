"""Across runs: one fit over several training runs (sizes, or runs of one size trained otherwise),
each predictor beside the others, judged on runs it never saw. Needs no torch.

Per (scope, compressor entry, ε), over the checkpoints inside the window, the critical value c*
on each form (OLS, HC3; the first predictor's coefficient with its 95% t interval):

    llc            c* = α + β·λ̂ + γ·log d
    loss           c* = α + β·L + γ·log d              L the held-out base loss
    tokens         c* = α + β·log(1 + tokens seen) + γ·log d
    llc_loss       c* = α + β·λ̂ + β_L·L + γ·log d     β: λ̂'s coefficient at equal loss
    llc_per_param  c* = α + β·λ̂/d                     (pools of several sizes: among runs of one
                                                        size it is λ̂ rescaled, the same predictor)
    redundancy     c* = α + β·(λ̂·ln n − … )/ln 2       the LLC's description length in bits

(log d only where the scope holds two or more sizes; d the sampled parameters, n the tokens
seen), and its leave-one-run-out RMSE: each run's checkpoints predicted by the form fitted to
the other runs. The best single predictor on unseen runs is the form of least such error among
all but `llc_loss`; λ̂ adds to the loss out of sample when `llc_loss` predicts unseen runs better
than `loss`. The sign of λ̂'s coefficient at equal loss is set against the theory's direction:
more λ̂, less compressible (more bits, a higher kept rank, fewer heads removable), read from the
knob's orientation. The nested HC3 Wald tests "λ̂ beyond the loss" and "the loss beyond λ̂" add
log d the same way. Scopes: every run of the experiment, and the runs of each size that has two
or more. The lines on λ̂, on the loss and on both are kept (`Regression`) for `predict` on a run
the fit never saw.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mdl_slt.analysis.baselines import predictors, separation
from mdl_slt.analysis.tables import usable
from mdl_slt.analysis.tournament import compare, direction, fit_form

FORMS = {"llc": "λ̂ + log d", "loss": "loss + log d", "tokens": "log tokens + log d", "llc_loss": "λ̂ + loss + log d",
         "llc_per_param": "λ̂/d", "redundancy": "λ̂·ln n (bits)"}
COLUMNS = {"llc": ["llc"], "loss": ["loss"], "tokens": ["tokens"], "llc_loss": ["llc", "loss"],
           "llc_per_param": ["llc_per_param"], "redundancy": ["redundancy"]}
WITH_SIZE = ("llc", "loss", "tokens", "llc_loss")
SAVED = ("llc", "loss", "llc_loss")  # the lines `predict` uses for a run the fit never saw


def theory_signs(experiment) -> dict:
    """Compressor entry → the sign of dc*/dλ̂ the theory predicts: + where less compression is a
    higher knob value (bits, kept rank), − where it is a lower one (heads or weights removed)."""
    return {e.key: 1 if e.build().knob.more_compression == "lower" else -1 for e in experiment.critical.compressors}


def design(group: pd.DataFrame, form: str) -> tuple[np.ndarray, list[str]]:
    """(the columns of one form, their names; module docstring): constant, the predictors, then
    log d when the group holds two or more sizes."""
    found = predictors(group)
    values = {**found, "llc_per_param": (group.llc_mean / group.llc_params).to_numpy(float),
              "redundancy": group.llc_dl_bits.to_numpy(float)}
    names = ["const", *COLUMNS[form]]
    columns = [np.ones(len(group)), *(values[c] for c in COLUMNS[form])]
    if form in WITH_SIZE and group.llc_params.nunique() >= 2:
        names.append("log_d")
        columns.append(np.log(group.llc_params.to_numpy(float)))
    return np.column_stack(columns), names


def scopes(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows): every run together, then the runs of each size with two or more runs."""
    found = [("all runs", rows)] if rows.model.nunique() >= 2 else []
    for d, group in rows.groupby("llc_params"):
        if group.model.nunique() >= 2 and group.model.nunique() < rows.model.nunique():
            found.append((f"runs of d = {int(d):,}", group))
    return found


def compare_runs(group: pd.DataFrame, sign: int | None = None) -> tuple[dict, dict]:
    """The figures of one pooled group (module docstring), flat, and its saved lines by form."""
    y = group.critical_value.to_numpy(float)
    runs = group.model.to_numpy()
    sizes = group.llc_params.nunique()
    row: dict = {"n": len(y), "n_runs": group.model.nunique(), "n_sizes": sizes}
    lines = {}
    for form in FORMS:
        if form == "llc_per_param" and sizes < 2:  # one size: λ̂/d is λ̂ rescaled, not a predictor of its own
            figures = dict.fromkeys(("r2", "coef", "coef_ci_low", "coef_ci_high", "rmse"), math.nan)
        else:
            X, names = design(group, form)
            figures, line = fit_form(X, y, runs, names)
            if form in SAVED and line is not None:
                lines[form] = line
        row.update({f"{key.replace('rmse', 'rmse_loro')}_{form}": value for key, value in figures.items()})
    covariates = [np.log(group.llc_params.to_numpy(float))] if sizes >= 2 else []
    apart = separation(y, group.llc_mean, group.base_loss, covariates, min_points=5)
    apart.pop("coef_llc_beyond_loss")  # the llc_loss form's coefficient, with its interval
    row.update(apart)
    scored = {form: row[f"rmse_loro_{form}"] for form in FORMS
              if form != "llc_loss" and math.isfinite(row[f"rmse_loro_{form}"])}
    row["best_across_runs"] = min(scored, key=scored.get) if scored else None
    row["theory_sign"] = sign
    row["llc_direction"] = direction(row["coef_ci_low_llc_loss"], row["coef_ci_high_llc_loss"], sign)
    both, alone = row["rmse_loro_llc_loss"], row["rmse_loro_loss"]
    row["llc_adds_out_of_sample"] = bool(both < alone) if math.isfinite(both) and math.isfinite(alone) else None
    return row, lines


def across_runs(table: pd.DataFrame, inside: pd.Series | None = None,
                signs: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """(one row per (scope, compressor, ε): each form's fit across runs and its error on unseen runs;
    (scope, compressor, ε) → ({form: Regression} of the lines `predict` uses, the rows pooled))."""
    rows, saved = [], {}
    for (comp, eps), group in usable(table, inside).groupby(["compressor", "epsilon"]):
        for scope, rows_in in scopes(group):
            row, lines = compare_runs(rows_in, (signs or {}).get(comp))
            rows.append({"scope": scope, "compressor": comp, "epsilon": eps, **row})
            saved[(scope, comp, eps)] = (lines, rows_in)
    return pd.DataFrame(rows), saved


def measures_across_runs(table: pd.DataFrame, inside: pd.Series | None, signs: dict,
                         measures: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per (scope, compressor, ε): the answer of the tournament (`tournament.compare`) of λ̂
    in its forms, the loss, log tokens and every measure the table holds, each with log d where the
    pool holds several sizes, beside the loss, and with λ̂ beside it, units runs; one row per
    predictor of each: its figures)."""
    answers, figures = [], []
    for (comp, eps), group in usable(table, inside).groupby(["compressor", "epsilon"]):
        for scope, part in scopes(group):
            sizes = part.llc_params.nunique()
            frame = part.assign(llc=part.llc_mean, loss=part.base_loss, tokens=predictors(part)["tokens"],
                                llc_per_param=part.llc_mean / part.llc_params, redundancy=part.llc_dl_bits)
            base = [np.ones(len(part))] + ([np.log(part.llc_params.to_numpy(float))] if sizes >= 2 else [])
            candidates = ["llc", "loss", "tokens", *(["llc_per_param"] if sizes >= 2 else []), "redundancy",
                          *[m for m in measures if m in part]]
            answer, found = compare(frame, candidates, base, part.model.to_numpy(), part.critical_value.to_numpy(float),
                                    "loss", "llc", signs.get(comp), "loro")
            key = {"scope": scope, "compressor": comp, "epsilon": eps}
            answers.append({**key, "n": len(part), "n_runs": part.model.nunique(), **answer})
            figures += [{**key, **row} for row in found]
    return pd.DataFrame(answers), pd.DataFrame(figures)
