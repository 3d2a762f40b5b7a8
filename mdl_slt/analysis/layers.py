"""Inside one checkpoint: do the parts of a model that compress less have the higher refined λ̂?
Every part has seen the same training, so training progress cannot stand in for λ̂ here. Needs no
torch.

The table: per (checkpoint, compressor entry, ε, weight group g) the group's own critical value c*_g
(the entry restricted to g, at g's tolerance), its refined λ̂_g (only g sampled) and its size d_g.
Per (checkpoint, entry, ε), over its groups, c*_g on each predictor (OLS, HC3):

    llc            c*_g = α + β·λ̂_g
    llc_per_param  c*_g = α + β·λ̂_g/d_g         the theory's: a group's bits per weight follow λ_g/d_g
    size           c*_g = α + β·log d_g

with R², β and its 95% interval, the leave-one-group-out RMSE (each group predicted from the
others), and the nested HC3 Wald test of each predictor beyond log d_g; and the same pooled over a
run's checkpoints with an offset per checkpoint (a group left out of every checkpoint at once).
λ̂_g/d_g's coefficient is read against the theory's sign (more λ̂, less compressible). A measure
is one more column of the table and one more entry of `PREDICTORS`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mdl_slt.analysis.baselines import hc3_wald
from mdl_slt.analysis.pooled import direction, fit_form

PREDICTORS = {"llc": "λ̂_g", "llc_per_param": "λ̂_g/d_g", "size": "log d_g"}
COLUMNS = {"llc": "llc_mean"}  # a predictor's column in the group table, where it is not its name
BASELINE = "size"  # what a predictor must add to: how large the group is
MIN_GROUPS = 4  # groups a fit needs (a line and a left-out group)
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
    crit = crit[KEYS + ["compressor", "method", "epsilon", "weight_group", "knob_name", "critical_value", "critical_se",
                        "tolerance", "bits_interpolated"]]
    llc = llc.assign(group_params=llc.detail.map(lambda d: d.get("num_params")),
                     r_hat=llc.detail.map(lambda d: d.get("r_hat")), converged=llc.detail.map(lambda d: d.get("converged")))
    llc = llc[["model", "revision", "weight_group", "llc_mean", "llc_std_error", "group_params", "r_hat", "converged"]]
    table = crit.merge(llc, on=["model", "revision", "weight_group"])
    table["llc_per_param"] = table.llc_mean / table.group_params
    table["size"] = np.log(table.group_params.astype(float))
    return table.sort_values(KEYS + ["compressor", "epsilon", "weight_group"]).reset_index(drop=True)


def compare_groups(rows: pd.DataFrame, sign: int | None, offsets: bool) -> dict:
    """The figures of one set of groups (module docstring), flat: per predictor `r2_`, `coef_`,
    `coef_low_`, `coef_high_`, `logo_` (leave-one-group-out RMSE) and, beyond log d_g, `p_beyond_`;
    the predictor with the least leave-one-group-out error; λ̂_g/d_g's direction against the theory's."""
    rows = rows[rows.critical_value.notna() & rows.llc_mean.notna()]
    y = rows.critical_value.to_numpy(float)
    units = rows.weight_group.to_numpy()
    base = ([(rows.revision == r).to_numpy(float) for r in rows.revision.unique()] if offsets
            else [np.ones(len(rows))])
    found: dict = {"groups": rows.weight_group.nunique(), "n": len(rows)}
    enough = rows.weight_group.nunique() >= MIN_GROUPS and len(rows) > len(base) + 2
    for name in PREDICTORS:
        x = rows[COLUMNS.get(name, name)].to_numpy(float)
        figures = {"r2": math.nan, "coef": math.nan, "coef_low": math.nan, "coef_high": math.nan, "loro": math.nan}
        p_beyond = math.nan
        if enough and np.ptp(x) > 0:
            X = np.column_stack([*base, x])
            figures = fit_form(X, y, units, [f"offset{i}" for i in range(len(base))] + [name], target=name)[0]
            if name != BASELINE:
                nested = np.column_stack([*base, rows[BASELINE].to_numpy(float), x])
                p_beyond = hc3_wald(nested, y, nested.shape[1] - 1)[1]
        found.update({f"r2_{name}": figures["r2"], f"coef_{name}": figures["coef"],
                      f"coef_low_{name}": figures["coef_low"], f"coef_high_{name}": figures["coef_high"],
                      f"logo_{name}": figures["loro"]})
        if name != BASELINE:
            found[f"p_beyond_size_{name}"] = p_beyond
    scored = {n: found[f"logo_{n}"] for n in PREDICTORS if math.isfinite(found[f"logo_{n}"])}
    found["best_on_unseen_groups"] = min(scored, key=scored.get) if scored else None
    found["theory_sign"] = sign
    found["llc_direction"] = direction(found["coef_low_llc_per_param"], found["coef_high_llc_per_param"], sign)
    return found


def within_checkpoints(groups: pd.DataFrame, signs: dict | None = None) -> pd.DataFrame:
    """One row per (scope, compressor, ε): each checkpoint of the layer study on its own, then each
    run's checkpoints pooled with an offset per checkpoint (module docstring)."""
    if not len(groups):
        return pd.DataFrame()
    rows = []
    for (model, comp, eps), part in groups.groupby(["model", "compressor", "epsilon"], sort=False):
        sign = (signs or {}).get(comp)
        for (revision, step), one in part.groupby(["revision", "step"], sort=False):
            rows.append({"model": model, "scope": revision, "step": step, "compressor": comp, "epsilon": eps,
                         "checkpoints": 1, **compare_groups(one, sign, offsets=False)})
        if part.revision.nunique() > 1:
            rows.append({"model": model, "scope": "pooled", "step": math.nan, "compressor": comp, "epsilon": eps,
                         "checkpoints": part.revision.nunique(), **compare_groups(part, sign, offsets=True)})
    return pd.DataFrame(rows)
