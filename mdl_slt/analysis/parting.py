"""Can these runs tell λ̂ from the loss? The criterion for choosing training variants, computed
from λ̂ and the held-out loss alone (never from a critical value). Needs no torch.

Over the checkpoints inside the analysis window of a pool of runs of one architecture:

    |r(λ̂, L)| ≤ 0.8                 λ̂ and the loss are not one variable across the pool
    a parting pair                  two checkpoints of different runs whose losses are within
                                    0.02 nats and whose λ̂ differ by more than 4 standard
                                    errors of the difference, √(se₁² + se₂²)

A variant is chosen when it forms a parting pair with the reference run; the pool of the chosen
runs then has to meet both conditions.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mdl_slt.analysis.tables import window

MAX_CORRELATION = 0.8
MATCHED_LOSS = 0.02
SEPARATED = 4.0


def checkpoints(records: pd.DataFrame, fraction: float = 0.9) -> pd.DataFrame:
    """One row per measured checkpoint: λ̂, its standard error, the base loss, inside the window."""
    llc = records[records.task == "llc"][["model", "revision", "step", "llc_mean", "llc_std_error"]]
    base = records[records.task == "base_loss"]
    base = base.assign(uniform_loss=base.detail.map(lambda d: d.get("uniform_loss")))
    table = llc.merge(base[["model", "revision", "loss", "uniform_loss"]].rename(columns={"loss": "base_loss"}),
                      on=["model", "revision"])
    return table.assign(inside=window(table, fraction).to_numpy()).sort_values(["model", "step"]).reset_index(drop=True)


def parting_pairs(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Pairs (one checkpoint of `a`, one of `b`) at losses within MATCHED_LOSS whose λ̂ differ by more
    than SEPARATED standard errors of the difference, with the difference in those units."""
    rows = []
    for x in a.itertuples():
        for y in b.itertuples():
            se = math.hypot(x.llc_std_error, y.llc_std_error)
            if abs(x.base_loss - y.base_loss) <= MATCHED_LOSS and se > 0:
                z = (y.llc_mean - x.llc_mean) / se
                if abs(z) > SEPARATED:
                    rows.append({"run_a": x.model, "step_a": x.step, "run_b": y.model, "step_b": y.step,
                                 "loss_gap": y.base_loss - x.base_loss, "llc_gap": y.llc_mean - x.llc_mean, "z": z})
    return pd.DataFrame(rows, columns=["run_a", "step_a", "run_b", "step_b", "loss_gap", "llc_gap", "z"])


def correlation(table: pd.DataFrame) -> float:
    inside = table[table.inside]
    return float(np.corrcoef(inside.llc_mean, inside.base_loss)[0, 1]) if len(inside) >= 3 else math.nan


def criterion(table: pd.DataFrame, reference: str) -> tuple[pd.DataFrame, dict]:
    """(one row per run: its checkpoints in the window, r(λ̂, L) with the reference run, its parting
    pairs with the reference and the largest |z|, chosen or not; the chosen pool's figures)."""
    inside = table[table.inside]
    ref = inside[inside.model == reference]
    rows = []
    for run, part in inside.groupby("model", sort=False):
        if run == reference:
            continue
        pairs = parting_pairs(ref, part)
        rows.append({"run": run, "inside": len(part), "loss_range": (part.base_loss.min(), part.base_loss.max()),
                     "r_with_reference": correlation(table[table.model.isin([reference, run])]),
                     "parting_pairs": len(pairs), "max_abs_z": float(pairs.z.abs().max()) if len(pairs) else math.nan,
                     "chosen": len(pairs) > 0})
    runs = pd.DataFrame(rows)
    chosen = [reference] + (runs.run[runs.chosen].tolist() if len(runs) else [])
    pool = table[table.model.isin(chosen)]
    r = correlation(pool)
    pool_figures = {"runs": chosen, "r": r, "checkpoints": int(pool.inside.sum()),
                    "meets": bool(len(chosen) > 1 and math.isfinite(r) and abs(r) <= MAX_CORRELATION)}
    return runs, pool_figures
