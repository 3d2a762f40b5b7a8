"""Stored records to one tidy table: the experiment's rows, critical compression beside λ̂, the base
loss and both description lengths, and the analysis window. Needs no torch.

Which rows: those of the tasks the store's experiment defines (their config hashes); every other
row of the store (older settings, other experiments) is left out and named (`select`).

Which checkpoints: the analysis window, a rule stated before any fit is seen (`window`): a
model's checkpoints whose held-out loss has covered at least a fraction f (default 0.9) of its
fall from the loss of a uniform prediction, ln V (where training starts), to its lowest measured
loss. `min_step` overrides it with a training step. Fits are reported inside and without it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mdl_slt.errors import UserError

LN2 = math.log(2)
GROUP = ["model", "compressor", "epsilon"]


def select(records: pd.DataFrame, experiment: dict, identities: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows of the experiment's tasks measured on the checkpoints' current bytes, one line per
    group left out: its task, config hash, why, experiment, models and row count). `identities`:
    (model, revision) → the identity of the bytes the latest run planned (`Store.checkpoints`);
    rows of older bytes of a checkpoint are left out and named."""
    from mdl_slt.plan.experiment import Experiment
    from mdl_slt.plan.tasks import Tasks

    hashes = Tasks(Experiment.model_validate(experiment)).all_hashes
    settings = records.config_hash.isin(hashes).to_numpy()
    current = np.ones(len(records), bool)
    if identities:
        current = np.array([c == identities.get((m, None if pd.isna(r) else r), c) for m, r, c
                            in zip(records.model, records.revision, records.checkpoint_id)], bool)
    keep = settings & current
    rest = records[~keep].assign(why=np.where(settings[~keep], "older bytes of the checkpoint",
                                              "other settings or experiment"))
    left = (rest.groupby(["task", "config_hash", "why"], dropna=False)
            .agg(experiment=("experiment", "first"), n_models=("model", "nunique"), n_rows=("key", "size"),
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
    (`critical: bracket`); both are kept. `critical_se` is the interpolated value's standard error
    (a bootstrap over evaluation sequences), `noisy` where it exceeds the search precision. One
    line is never fitted across numerics or devices."""
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
                       n_evaluations=crit.detail.map(lambda d: d.get("evaluations")), critical_config=crit.config_hash,
                       critical_se=crit.detail.map(lambda d: d.get("critical_se")).astype(float),
                       search_precision=crit.detail.map(lambda d: d.get("precision")).astype(float),
                       n_sequences_needed=crit.detail.map(lambda d: d.get("sequences_needed")),
                       knob_low=crit.detail.map(lambda d: (d.get("knob_range") or [None, None])[0]).astype(float),
                       knob_high=crit.detail.map(lambda d: (d.get("knob_range") or [None, None])[1]).astype(float))
    crit = crit[["model", "revision", "compressor", "method", "epsilon", "knob", "knob_interpolated", "bits",
                 "bits_interpolated", "bits_entropy", "knob_name", "monotone", "wide", "interpolation", "n_evaluations",
                 "critical_se", "search_precision", "n_sequences_needed", "knob_low", "knob_high", "device", "numerics",
                 "critical_config"]]
    table = crit.merge(llc, on=["model", "revision"]).merge(base, on=["model", "revision"])
    interpolated = critical == "interpolated"
    table["critical_value"] = table.knob_interpolated.where(table.knob_interpolated.notna() & interpolated, table.knob)
    if not interpolated:  # the bracket's end is a grid point, not an estimate with an error
        table["critical_se"] = np.nan
    table["noisy"] = table.critical_se > table.search_precision
    table["critical_dl_bits"] = table.bits_interpolated.where(table.bits_interpolated.notna() & interpolated,
                                                              table.bits)
    table["critical_rule"] = critical
    table = table.drop(columns=["knob_interpolated", "bits_interpolated"]).rename(columns={
        "knob": "critical_bracket", "bits": "critical_bracket_dl_bits", "bits_entropy": "critical_bracket_dl_entropy_bits"})
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


def usable(table: pd.DataFrame, inside: pd.Series | None = None) -> pd.DataFrame:
    """Rows with a critical value and a λ̂, inside the window when one is given."""
    keep = table.critical_value.notna() & table.llc_mean.notna()
    return table[keep & (inside if inside is not None else True)]
