"""Results in Python: a store as one tidy pandas DataFrame, and its SGLD traces as ArviZ InferenceData.
Needs no torch.

    import mdl_slt
    frame = mdl_slt.results("reports/demo.sqlite")   # a row per checkpoint × compressor entry × ε
    data = mdl_slt.traces("reports/demo.sqlite")     # az.summary(data), az.plot_trace(data, ...)

Both read the rows of the store's experiment (those of older settings are left out, as the
report leaves them out).
"""

from __future__ import annotations

from pathlib import Path


def _experiment_rows(store: str | Path):
    """(the rows of the store's experiment, the experiment's settings)."""
    from mdl_slt.analysis.tables import select
    from mdl_slt.errors import UserError
    from mdl_slt.store.database import open_existing

    with open_existing(store) as opened:
        records, config, identities = opened.table(), opened.last_config(), opened.checkpoints()
    if config is None or records.empty:
        raise UserError(f"{store} holds no measurements yet: run the experiment first")
    return select(records, config, identities)[0], config


def results(store: str | Path, critical: str = "interpolated"):
    """One row per checkpoint × compressor entry × ε: λ̂ with its standard error, R̂, ESS and whether the
    chains converged, the held-out loss, the critical value (interpolated, or the bracket's passing end
    with `critical="bracket"`) with its standard error, and both description lengths in bits, with
    each checkpoint's step, tokens seen and whether it lies in the analysis window. The columns are
    those of the report's measurements CSV (reports/README.md)."""
    from mdl_slt.analysis.tables import measurements, window
    from mdl_slt.plan.experiment import Experiment

    records, config = _experiment_rows(store)
    table = measurements(records, critical)
    settings = Experiment.model_validate(config).analysis
    return table.assign(in_window=window(table, settings.window, settings.min_step))


def traces(store: str | Path, checkpoint: str | None = None):
    """Every stored SGLD trace as ArviZ InferenceData: per checkpoint a variable named `<model>@<revision>`
    holding nβ·(L_B − L(w*)) of each chain and draw after the burn-in (its mean is λ̂) in `posterior`,
    the burn-in's steps in `warmup_posterior`, shorter ones padded with NaN to the longest (so take R̂
    and ESS of one checkpoint at a time); with `checkpoint` (`<model>@<revision>`) that checkpoint
    alone, unpadded. Each variable's attributes give λ̂, its standard error, the burn-in and nβ."""
    from mdl_slt.llc.trace import arviz, burnin_of, estimate, levels_of, stored

    az = arviz()
    records, _ = _experiment_rows(store)
    keys = set(records[records.task == "llc"].task_key)
    posterior, warmup, attrs = {}, {}, {}
    for row, trace in stored(store, keys=keys):
        name = f"{row['model']}@{row['revision']}"
        if checkpoint is not None and name != checkpoint:
            continue
        burnin, _ = burnin_of(trace)
        levels = levels_of(trace, list(range(len(trace.losses))), trace.steps)
        posterior[name], warmup[name] = levels[:, burnin:], levels[:, :burnin]
        result = estimate(trace)
        attrs[name] = {"llc_mean": result.llc_mean, "llc_std_error": result.llc_std_error, "burnin": burnin,
                       "n_beta": trace.n_beta}
    if not posterior:
        from mdl_slt.errors import UserError

        raise UserError(f"{store} holds no trace{'' if checkpoint is None else ' of ' + checkpoint}: "
                        "checkpoints are named <model>@<revision>")
    data = az.from_dict(posterior=_padded(posterior), warmup_posterior=_padded(warmup), save_warmup=True)
    for name, values in attrs.items():
        data.posterior[name].attrs.update(values)
    return data


def _padded(arrays: dict) -> dict:
    """Chains × draws arrays of different lengths padded with NaN to the longest (ArviZ shares one
    draw dimension among a group's variables)."""
    import numpy as np

    longest = max((v.shape[1] for v in arrays.values()), default=0)
    return {k: np.pad(v, ((0, 0), (0, longest - v.shape[1])), constant_values=np.nan) for k, v in arrays.items()}
