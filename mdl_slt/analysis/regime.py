"""Where each checkpoint's λ̂ was sampled (`mdl_slt.llc.regime`): its posterior's mean height above
w*, E[ΔL] = λ̂/nβ nats/token, beside the tolerances ε of the critical searches; the trace limit
T = nβ·tr(H)/(2γ) and λ̂/T, from the `hessian_trace` sensitivity measure (tr(H) of the held-out loss
over the weight matrices) where the experiment measures it; and the local slope d log λ̂ / d log nβ
where the robustness section measured λ̂ at nβ multiplied by factors below and above 1 (at the main
step; `mdl-slt llc estimate --ladder` divides it by 3 going up). And where the `scale` section
measured it, λ(ε) at each tolerance (`mdl_slt.llc.scale`) with the code length DL_λ(ε) it implies.
Needs no torch.
"""

from __future__ import annotations

import math

import pandas as pd

from mdl_slt.analysis.robustness import varied
from mdl_slt.llc.regime import TRACE_BAND, regime, slope, trace_limit, volume_code_bits

COLUMNS = ["model", "revision", "step", "llc_mean", "n_beta", "localization", "excess_loss", "excess_over_eps_min",
           "excess_over_eps_max", "hessian_trace", "trace_limit", "trace_ratio", "half_d", "slope", "regime"]


def regime_table(records: pd.DataFrame, experiment) -> pd.DataFrame:
    """One row per checkpoint with a main λ̂ (columns: COLUMNS, documented in the reports README)."""
    llc = records[records.task == "llc"]
    if not len(llc):
        return pd.DataFrame(columns=COLUMNS)
    traces = records[(records.task == "sensitivity") & (records.measure == "hessian_trace") &
                     records.weight_group.isna()].set_index(["model", "revision"]).value
    eps = experiment.critical.epsilons
    gamma = float(experiment.llc.localization)
    ladder = _ladder(records)
    rows = []
    for r in llc.itertuples():
        n_beta = float(r.detail.get("n_beta"))
        excess = r.llc_mean / n_beta
        trace = float(traces.get((r.model, r.revision), math.nan))
        limit = trace_limit(trace, n_beta, gamma)
        local = ladder.get((r.model, r.revision), math.nan)
        ratio = r.llc_mean / limit if limit > 0 else math.nan
        rows.append({"model": r.model, "revision": r.revision, "step": r.step, "llc_mean": r.llc_mean,
                     "n_beta": n_beta, "localization": gamma, "excess_loss": excess,
                     "excess_over_eps_min": excess / min(eps), "excess_over_eps_max": excess / max(eps),
                     "hessian_trace": trace, "trace_limit": limit, "trace_ratio": ratio,
                     "half_d": (r.detail.get("num_params") or r.num_params) / 2, "slope": local,
                     "regime": regime(ratio, local)})
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["model", "step"]).reset_index(drop=True)


SCALE_COLUMNS = ["model", "revision", "step", "epsilon", "llc_at_scale", "llc_at_scale_se", "n_beta", "excess_loss",
                 "found", "converged", "rungs", "why", "dl_lambda_bits", "llc_mean", "over_llc"]


def scale_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (checkpoint, ε) of the λ(ε) study (columns: SCALE_COLUMNS, documented in the
    reports README): DL_λ(ε) integrates the checkpoint's λ(ε) over the tolerances found, from the widest."""
    rows = records[records.task == "llc_scale"]
    if not len(rows):
        return pd.DataFrame(columns=SCALE_COLUMNS)
    main = records[records.task == "llc"].drop_duplicates(["model", "revision"]).set_index(["model", "revision"])
    out = []
    for (model, revision), part in rows.groupby(["model", "revision"], sort=False):
        reached = part[part.detail.map(lambda d: bool(d.get("found")))]
        bits = dict(zip(reached.epsilon, volume_code_bits(list(reached.epsilon), list(reached.llc_mean))))
        llc = float(main.llc_mean.get((model, revision), math.nan))
        for r in part.itertuples():
            d = r.detail
            out.append({"model": model, "revision": revision, "step": r.step, "epsilon": r.epsilon,
                        "llc_at_scale": r.llc_mean, "llc_at_scale_se": r.llc_std_error, "n_beta": d.get("n_beta"),
                        "excess_loss": d.get("excess_loss"), "found": d.get("found"), "converged": d.get("converged"),
                        "rungs": len(d.get("rungs", [])), "why": d.get("why", ""),
                        "dl_lambda_bits": bits.get(r.epsilon, math.nan), "llc_mean": llc, "over_llc": r.llc_mean / llc})
    table = pd.DataFrame(out, columns=SCALE_COLUMNS)
    return table.sort_values(["model", "step", "epsilon"], ascending=[True, True, False]).reset_index(drop=True)


def _ladder(records: pd.DataFrame) -> dict:
    """(model, revision) → the slope between the robustness section's λ̂ at the nβ multipliers
    nearest 1 on either side (the robustness section keeps the main step at both)."""
    rows = varied(records)
    rows = rows[rows.parameter == "n_beta"]
    found = {}
    for key, part in rows.groupby(["model", "revision"]):
        at = dict(zip(part.multiplier.astype(float), part.varied_llc))
        below, above = [m for m in at if m < 1], [m for m in at if m > 1]
        if below and above:
            low, high = max(below), min(above)
            found[key] = slope(at[low], at[high], math.sqrt(high / low))
    return found


def regime_summary(table: pd.DataFrame) -> str:
    """The settings page's sentence: the scale λ̂ measures and the regime it lies in."""
    if not len(table):
        return ""
    excess = table.excess_loss
    text = (f"Regime of λ̂: its posterior sits E[ΔL] = λ̂/nβ = {excess.min():.2f}–{excess.max():.2f} nats/token above "
            f"w* (median {excess.median():.2f}), {table.excess_over_eps_max.min():.0f}–"
            f"{table.excess_over_eps_min.max():.0f}× the tolerances ε of the critical searches. ")
    known = table[table.trace_ratio.notna()]
    if len(known):
        near = int(((known.trace_ratio >= 1 / TRACE_BAND) & (known.trace_ratio <= TRACE_BAND)).sum())
        text += (f"Against the trace limit nβ·tr(H)/(2γ) (tr(H) of the held-out loss, the `hessian_trace` measure) "
                 f"λ̂ is at {known.trace_ratio.median():.2f}× it (median; {known.trace_ratio.min():.2f}–"
                 f"{known.trace_ratio.max():.2f}), within {TRACE_BAND:g}× of it for {near} of {len(known)} "
                 "checkpoints; d/2 is "
                 f"{(known.half_d / known.llc_mean).min():,.0f}× λ̂ or more. ")
    else:
        text += "The trace limit needs the `hessian_trace` sensitivity measure, which this experiment does not take. "
    sloped = table[table.slope.notna()]
    if len(sloped):
        text += (f"The slope d log λ̂ / d log nβ, from the robustness section's nβ ladder, is "
                 f"{sloped.slope.median():.2f} "
                 f"(median; {sloped.slope.min():.2f}–{sloped.slope.max():.2f}) on {len(sloped)} checkpoints. ")
    counts = table.regime.value_counts()
    return text + "Regime: " + ", ".join(f"{name} for {n}" for name, n in counts.items()) + \
        " (`mdl-slt llc estimate REF --ladder` measures the slope of one checkpoint)."
