"""The sensitivity measures as predictor columns: per checkpoint and per weight group. Needs no torch.

From the store's `sensitivity` rows (`mdl_slt.measures.sensitivity`):

    hessian_trace   tr(H)/d, the Hessian's mean eigenvalue (d: the weights of the groups, d_g for a group)
    fisher          F/d, the empirical Fisher trace per weight
    max_over_rms    max|w|/rms of the weights (for a checkpoint the parameter-weighted mean over groups)
    kurtosis        their excess kurtosis (likewise)
    hawq            the critical value HAWQ-V2's Ω predicts for a compressor entry at ε: the most
                    compressing knob value of the measured grid with Ω(b) ≤ ε, log Ω interpolated
                    linearly to ε between grid points; Ω(b) = Σ_g ½·(tr(H_g)/d_g)·‖ΔW_g(b)‖² for the
                    checkpoint, ½·(tr(H_g)/d_g)·‖ΔW_g(b)‖² at the group's own tolerance for a group

and each measure's cost: the seconds its task took, per checkpoint.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

LABELS = {"hessian_trace": "tr(H)/d", "fisher": "F/d", "max_over_rms": "max|w|/rms", "kurtosis": "kurtosis",
          "hawq": "HAWQ's c*"}
GROUP_LABELS = {"hessian_trace": "tr(H_g)/d_g", "fisher": "F_g/d_g", "max_over_rms": "max|w|/rms",
                "kurtosis": "kurtosis", "hawq": "HAWQ's c*_g"}
PER_PARAM = ("hessian_trace", "fisher")  # traces, divided by the parameters they sum over
KEYS = ["model", "revision"]


def _values(records: pd.DataFrame) -> pd.DataFrame:
    """The measured quantities (not hawq's perturbation curves), one row per (checkpoint, group; ""
    for the whole model), traces divided by the weights they sum over."""
    rows = records[(records.task == "sensitivity") & (records.measure != "perturbation")]
    if not len(rows):
        return pd.DataFrame(columns=KEYS + ["weight_group"])
    parameters = rows.detail.map(lambda d: d.get("parameters")).astype(float)
    per_param = rows.measure.isin(PER_PARAM)
    rows = rows.assign(weight_group=rows.weight_group.fillna(""), value=rows.value.where(~per_param,
                                                                                         rows.value / parameters))
    wide = rows.pivot_table(index=KEYS + ["weight_group"], columns="measure", values="value", aggfunc="first")
    wide.columns.name = None
    return wide.reset_index()


def checkpoint_measures(records: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint with each measure of the whole model."""
    values = _values(records)
    return values[values.weight_group == ""].drop(columns="weight_group").reset_index(drop=True)


def group_measures(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (checkpoint, weight group) with each measure of the group."""
    values = _values(records)
    return values[values.weight_group != ""].reset_index(drop=True)


def crossing(curve: pd.DataFrame, tolerance: float, lower: bool) -> float:
    """The most compressing knob value of `curve` (knob, omega) before the first with Ω above
    `tolerance`, log Ω interpolated linearly to the tolerance between it and that first failing
    value (as the critical search interpolates log ΔL); `lower`: lower knob values compress more.
    NaN where even the least compressing value fails."""
    curve = curve.sort_values("knob", ascending=not lower)  # least compressing first
    knobs, omegas = curve.knob.to_numpy(float), curve.omega.to_numpy(float)
    failing = np.nonzero(~(omegas <= tolerance))[0]
    if not len(failing):
        return float(knobs[-1])
    i = failing[0] - 1
    if i < 0:
        return math.nan
    if omegas[i] <= 0:
        return float(knobs[i])
    low, high = math.log(omegas[i]), math.log(omegas[i + 1])
    return float(knobs[i] + (math.log(tolerance) - low) / (high - low) * (knobs[i + 1] - knobs[i]))


def hawq_predictions(records: pd.DataFrame, epsilons: list[float], share: dict,
                     lower: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per (checkpoint, entry, ε) HAWQ's predicted critical value of the whole model; per (checkpoint,
    entry, ε, group) at the group's tolerance, ε/share[(model, revision)]). `lower`: entry → whether
    lower knob values compress more."""
    curves = records[(records.task == "sensitivity") & (records.measure == "perturbation")]
    traces = records[(records.task == "sensitivity") & (records.measure == "hessian_trace") & records.weight_group.notna()]
    if not len(curves) or not len(traces):
        return pd.DataFrame(), pd.DataFrame()
    trace = {(m, r, gr): v / d["parameters"]
             for m, r, gr, v, d in zip(traces.model, traces.revision, traces.weight_group, traces.value, traces.detail)}
    curves = curves.assign(omega=[0.5 * trace.get((m, r, gr), math.nan) * v for m, r, gr, v in
                                  zip(curves.model, curves.revision, curves.weight_group, curves.value)])
    whole, per_group = [], []
    for (model, revision, comp), part in curves.groupby(KEYS + ["compressor"]):
        summed = part.groupby("knob", as_index=False).omega.sum()
        for eps in epsilons:
            whole.append({"model": model, "revision": revision, "compressor": comp, "epsilon": eps,
                          "hawq": crossing(summed, eps, lower[comp])})
            tolerance = eps / share.get((model, revision), 1)
            for group, own in part.groupby("weight_group"):
                per_group.append({"model": model, "revision": revision, "compressor": comp, "epsilon": eps,
                                  "weight_group": group, "hawq": crossing(own, tolerance, lower[comp])})
    return pd.DataFrame(whole), pd.DataFrame(per_group)


def costs(records: pd.DataFrame) -> pd.DataFrame:
    """What each predictor and each code costs: the median seconds its task took, per checkpoint (per
    group for the refined λ̂, `llc_group`; λ(ε) at all its tolerances, `llc_scale`; a compressor's
    critical search at every ε, `critical:<compressor>`); HAWQ's Ω needs the Hessian trace, so its
    cost includes the trace's."""
    found = {}
    tasks = records.drop_duplicates("task_key")
    measures = tasks[tasks.task == "sensitivity"]
    for name, part in measures.groupby(measures.detail.map(lambda d: d.get("measure"))):
        found[name] = float(part.groupby(KEYS).elapsed_s.sum().median())
    for name, task in (("llc", "llc"), ("loss", "base_loss"), ("llc_group", "llc_group")):
        part = tasks[tasks.task == task]
        if len(part):
            found[name] = float(part.elapsed_s.median())
    scale = tasks[tasks.task == "llc_scale"]
    if len(scale):  # λ(ε): every tolerance of a checkpoint together
        found["llc_scale"] = float(scale.groupby(KEYS).elapsed_s.sum().median())
    searches = tasks[tasks.task == "critical"]
    for compressor, part in searches.groupby("compressor"):
        found[f"critical:{compressor}"] = float(part.elapsed_s.median())
    if "hawq" in found and "hessian_trace" in found:
        found["hawq"] += found["hessian_trace"]
    return pd.DataFrame([{"measure": k, "seconds": v, "per": "group" if k == "llc_group" else "checkpoint"}
                         for k, v in found.items()], columns=["measure", "seconds", "per"])


def allocation_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (checkpoint, entry, ε, method) of the allocation study: the passing allocation's
    bits with their standard error, its measured loss increase, and its bits against uniform's and
    the oracle's on the same checkpoint and ε."""
    rows = records[records.task == "allocation"]
    if not len(rows):
        return pd.DataFrame()
    table = rows.assign(dl_bits=rows.bits, dl_bits_se=rows.value_se, delta_loss=rows.loss - rows.base_loss,
                        n_evaluations=rows.detail.map(lambda d: d.get("evaluations")),
                        allocation=rows.detail.map(lambda d: d.get("allocation")))
    table = table[["model", "revision", "step", "compressor", "epsilon", "measure", "dl_bits", "dl_bits_se", "delta_loss",
                   "n_evaluations", "allocation"]].rename(columns={"measure": "allocation_method"})
    keys = ["model", "revision", "compressor", "epsilon"]
    for reference in ("uniform", "oracle"):
        own = table[table.allocation_method == reference].set_index(keys).dl_bits
        table[f"dl_vs_{reference}"] = table.dl_bits / [own.get(k, math.nan) for k in zip(*(table[c] for c in keys))]
    return table.reset_index(drop=True)
