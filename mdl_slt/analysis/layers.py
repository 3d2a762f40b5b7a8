"""Inside one checkpoint: do the parts of a model that compress less have the higher refined λ̂?
Every part has seen the same training, so training progress cannot stand in for λ̂ here. Needs no
torch.

The table: per (checkpoint, compressor entry, ε, weight group g) the group's own critical value c*_g
(the entry restricted to g, at g's tolerance), its refined λ̂_g (only g sampled) and its size d_g.
Per (checkpoint, entry, ε), over its groups, c*_g on each predictor (OLS, HC3):

    llc            c*_g = α + β·λ̂_g
    llc_per_param  c*_g = α + β·λ̂_g/d_g         the theory's: a group's bits per weight follow λ_g/d_g
    log_params     c*_g = α + β·log d_g

with R², β and its 95% interval, the leave-one-group-out RMSE (each group predicted from the
others), each beside log d_g, and λ̂_g/d_g beside each (the nested HC3 Wald test of λ̂_g/d_g
beyond d_g among them): `tournament.compare`, with groups as its units; and the same pooled over
a run's checkpoints with an offset per checkpoint (a group left out of every checkpoint at once).
λ̂_g/d_g's coefficient is read against the theory's sign (more λ̂, less compressible). A
sensitivity measure is one more column of the table and one more candidate.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mdl_slt.analysis.tournament import compare

PREDICTORS = {"llc": "λ̂_g", "llc_per_param": "λ̂_g/d_g", "log_params": "log d_g"}
COMPANION = "log_params"  # what every predictor is also fitted beside: how large the group is
LLC = "llc_per_param"  # λ̂ in the theory's form for a part: per parameter
KEYS = ["model", "revision", "step"]


def group_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (checkpoint, entry, ε, group) with the group's critical value beside its refined
    λ̂ and size (module docstring); empty without a layer study."""
    crit = records[records.task == "critical_group"]
    llc = records[records.task == "llc_group"]
    if not len(crit) or not len(llc):
        return pd.DataFrame()
    crit = crit.assign(knob_name=crit.detail.map(lambda d: d.get("knob_name")),
                       critical_se=crit.detail.map(lambda d: d.get("critical_se")).astype(float),
                       tolerance=crit.detail.map(lambda d: d.get("tolerance")).astype(float),
                       critical_value=crit.knob_interpolated.where(crit.knob_interpolated.notna(), crit.knob))
    crit = crit.rename(columns={"bits_interpolated": "critical_dl_bits"})
    crit = crit[KEYS + ["compressor", "method", "epsilon", "weight_group", "knob_name", "critical_value", "critical_se",
                        "tolerance", "critical_dl_bits"]]
    llc = llc.assign(group_params=llc.detail.map(lambda d: d.get("num_params")),
                     r_hat=llc.detail.map(lambda d: d.get("r_hat")), converged=llc.detail.map(lambda d: d.get("converged")))
    llc = llc[["model", "revision", "weight_group", "llc_mean", "llc_std_error", "group_params", "r_hat", "converged"]]
    table = crit.merge(llc, on=["model", "revision", "weight_group"])
    table["llc_per_param"] = table.llc_mean / table.group_params
    table["log_params"] = np.log(table.group_params.astype(float))
    return table.sort_values(KEYS + ["compressor", "epsilon", "weight_group"]).reset_index(drop=True)


def compare_groups(rows: pd.DataFrame, sign: int | None, offsets: bool, measures: dict | None = None) -> tuple:
    """The tournament of one set of groups (`tournament.compare`): the predictors, and the measures
    given (name → label) where the table has them, each alone, beside the size and with λ̂_g/d_g
    beside it; units are groups, with an offset per checkpoint when `offsets`."""
    rows = rows[rows.critical_value.notna() & rows.llc_mean.notna()].assign(llc=lambda t: t.llc_mean)
    base = ([(rows.revision == r).to_numpy(float) for r in rows.revision.unique()] if offsets
            else [np.ones(len(rows))])
    candidates = list(PREDICTORS) + [m for m in measures or {} if m in rows]
    summary, found = compare(rows, candidates, base, rows.weight_group.to_numpy(), rows.critical_value.to_numpy(float),
                             COMPANION, LLC, sign, "logo")
    return {"n_groups": rows.weight_group.nunique(), "n": len(rows), **summary}, found


def within_checkpoints(groups: pd.DataFrame, signs: dict | None = None,
                       measures: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per (run, scope, compressor, ε): each checkpoint of the layer study on its own, then
    each run's checkpoints pooled with an offset per checkpoint — the answer; one row per predictor
    of each: its figures)."""
    if not len(groups):
        return pd.DataFrame(), pd.DataFrame()
    answers, figures = [], []
    for (model, comp, eps), part in groups.groupby(["model", "compressor", "epsilon"], sort=False):
        sign = (signs or {}).get(comp)
        scopes = [(revision, step, one, False) for (revision, step), one in part.groupby(["revision", "step"], sort=False)]
        if part.revision.nunique() > 1:
            scopes.append(("pooled", math.nan, part, True))
        for scope, step, rows, offsets in scopes:
            key = {"model": model, "scope": scope, "step": step, "compressor": comp, "epsilon": eps,
                   "n_checkpoints": rows.revision.nunique()}
            answer, found = compare_groups(rows, sign, offsets, measures)
            answers.append({**key, **answer})
            figures += [{**key, **row} for row in found]
    return pd.DataFrame(answers), pd.DataFrame(figures)
