"""Does the answer survive other sampler settings? λ̂ measured again with one sampler setting
multiplied (the experiment's `robustness` section), and every main fit redone with it. Needs no torch.

Per varied setting: Kendall τ of each model's checkpoints ordered by λ̂ against the main setting's
order; for each main fit (model, compressor entry, ε), over its checkpoints in the window that
were measured again, the line of the critical value on the varied λ̂ (OLS, HC3) beside the line on
the main λ̂ over the same checkpoints, and the nested HC3 test "λ̂ beyond the loss" with each; the
diverged and unconverged chains. A fit's conclusion is kept when its slope has the same sign and
the same significance (its 95% interval, HC3 with t on n − 2, excludes zero, or not), and the test
the same verdict at p < 0.05. The answer held when every fit kept both under every setting and no
checkpoint failed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mdl_slt.analysis.baselines import separation
from mdl_slt.analysis.lines import LEVEL, line

ALPHA = 0.05


def varied(records: pd.DataFrame) -> pd.DataFrame:
    """One row per λ̂ measured at a varied setting: which setting, the estimate, its health."""
    from mdl_slt.plan.experiment import variation_name

    rows = records[records.task == "llc_robust"]
    if not len(rows):
        return pd.DataFrame(columns=["setting", "parameter", "multiplier", "model", "revision", "varied_llc",
                                     "varied_se", "converged", "diverged"])
    variation = rows.detail.map(lambda d: d.get("variation") or {})
    return pd.DataFrame({
        "parameter": variation.map(lambda v: v.get("parameter")), "multiplier": variation.map(lambda v: v.get("multiplier")),
        "model": rows.model, "revision": rows.revision, "varied_llc": rows.llc_mean, "varied_se": rows.llc_std_error,
        "converged": rows.detail.map(lambda d: bool(d.get("converged", True))),
        "diverged": rows.detail.map(lambda d: len(d.get("diverged_chains") or []))}).assign(
        setting=lambda f: [variation_name(p, m) for p, m in zip(f.parameter, f.multiplier)])


def failed_of(failed: list, experiment: dict) -> pd.DataFrame:
    """The varied-setting tasks of the experiment whose latest attempt failed (all chains diverged,
    mostly): one row per (setting, checkpoint) with the reason."""
    from mdl_slt.plan.experiment import Experiment
    from mdl_slt.plan.tasks import Tasks

    hashes = Tasks(Experiment.model_validate(experiment)).all_hashes
    rows = [{"setting": task.partition(":")[2], "unit": unit, "reason": reason}
            for unit, task, config_hash, reason in failed if task.startswith("llc_robust:") and config_hash in hashes]
    return pd.DataFrame(rows, columns=["setting", "unit", "reason"])


def _interval(fit) -> tuple[float, float]:
    """The slope's 95% interval: HC3 error, t on the fit's residual degrees of freedom (as every fit's)."""
    from scipy import stats

    half = stats.t.ppf(0.5 + LEVEL / 2, fit.df_resid) * fit.slope_se
    return fit.slope - half, fit.slope + half


def _significant(fit) -> bool:
    low, high = _interval(fit)
    return low > 0 or high < 0


def per_fit(measured: pd.DataFrame, lines: dict) -> pd.DataFrame:
    """One row per (setting, main fit): the fit redone with the varied λ̂ beside the main λ̂'s."""
    rows = []
    for setting, part in measured.groupby("setting", sort=False):
        for key, (_, group) in lines.items():
            both = group.merge(part[["model", "revision", "varied_llc"]], on=["model", "revision"])
            row = {"setting": setting, "model": key[0], "compressor": key[1], "epsilon": key[2], "n": len(both)}
            main, other = (line(both.llc_mean, both.critical_value), line(both.varied_llc, both.critical_value)) \
                if len(both) >= 4 else (None, None)
            if main is not None and other is not None:
                y, loss = both.critical_value, both.base_loss
                p_main = separation(y, both.llc_mean, loss)["p_llc_beyond_loss"]
                p_other = separation(y, both.varied_llc, loss)["p_llc_beyond_loss"]
                low, high = _interval(other)
                row.update(tau=_tau(both.llc_mean, both.varied_llc), slope_main=main.slope, slope=other.slope,
                           slope_ci_low=low, slope_ci_high=high, r2_main=main.r_squared, r2=other.r_squared,
                           p_beyond_main=p_main, p_beyond=p_other,
                           slope_kept=bool(np.sign(main.slope) == np.sign(other.slope)
                                           and _significant(main) == _significant(other)),
                           verdict_kept=bool((p_main < ALPHA) == (p_other < ALPHA)) if math.isfinite(p_main)
                           and math.isfinite(p_other) else True)
            rows.append(row)
    return pd.DataFrame(rows)


def summary(measured: pd.DataFrame, table: pd.DataFrame, fits: pd.DataFrame, failed: pd.DataFrame | None = None) \
        -> pd.DataFrame:
    """One row per varied setting: checkpoints measured again and failed (every chain diverged),
    Kendall τ per model (median and least), fits whose slope and verdict were kept, diverged and
    unconverged chains, and whether the answer held: every fit kept both and no checkpoint failed."""
    main = table.drop_duplicates(["model", "revision"])[["model", "revision", "llc_mean"]]
    failed = failed if failed is not None else pd.DataFrame(columns=["setting", "unit", "reason"])
    rows = []
    settings = list(dict.fromkeys([*measured.setting, *failed.setting]))
    for setting in settings:
        part = measured[measured.setting == setting]
        lost = int((failed.setting == setting).sum())
        both = main.merge(part, on=["model", "revision"])
        taus = [_tau(g.llc_mean, g.varied_llc) for _, g in both.groupby("model")]
        taus = [t for t in taus if math.isfinite(t)]
        own = fits[(fits.setting == setting) & fits.slope.notna()] if "slope" in fits else fits.iloc[0:0]
        rows.append({"setting": setting, "n_checkpoints": len(part), "n_failed": lost,
                     "tau_median": float(np.median(taus)) if taus else math.nan,
                     "tau_min": min(taus) if taus else math.nan, "n_fits": len(own),
                     "n_slopes_kept": int(own.slope_kept.sum()) if len(own) else 0,
                     "n_verdicts_kept": int(own.verdict_kept.sum()) if len(own) else 0,
                     "n_diverged_chains": int(part.diverged.sum()), "n_unconverged": int((~part.converged).sum()),
                     "held": bool(len(own) and own.slope_kept.all() and own.verdict_kept.all() and not lost)})
    return pd.DataFrame(rows)


def _tau(a, b) -> float:
    from scipy import stats

    return float(stats.kendalltau(a, b)[0]) if len(a) >= 3 else math.nan


def robustness(records: pd.DataFrame, table: pd.DataFrame, lines: dict, failed: pd.DataFrame | None = None) \
        -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per setting and main fit, per setting) of the λ̂ measured at varied settings, with the
    varied tasks that failed (`failed_of`); empty without any."""
    measured = varied(records)
    if not len(measured) and (failed is None or not len(failed)):
        return pd.DataFrame(), pd.DataFrame()
    fits = per_fit(measured, lines)
    return fits, summary(measured, table, fits, failed)
