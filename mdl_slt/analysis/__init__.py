"""From stored records to answers: description lengths, fits, ε sweeps, predictions. Needs no torch.

    tables   the experiment's rows → one tidy table (critical value beside λ̂ and the base loss),
             the analysis window
    lines    a line by OLS with HC3 errors, its bootstrap, leave-one-out and prediction intervals
    fits     the lines per (model, compressor entry, ε), across sizes, ε sweeps, LOO predictions
    baselines  each line beside the held-out loss and training progress: which predicts best out
             of sample, whether λ̂ adds to the loss, whether the two can be told apart
    pooled   the same question across runs (sizes, or runs of one size trained otherwise): each
             predictor with log d, λ̂ and the loss together, λ̂/d and λ̂·ln n, judged on runs left
             out, λ̂'s sign at equal loss against the theory's
    layers   inside one checkpoint: each weight group's critical value on its refined λ̂, λ̂/d and
             size, judged on groups left out
    measures the field's sensitivity measures (Hessian trace, HAWQ's Ω, Fisher, weight outliers) as
             predictors across runs and inside checkpoints, and the allocations they buy
    tournament  every predictor against the others on units left out, shared by both designs
    robustness  every fit redone with λ̂ measured at other sampler settings: is the answer kept?
    regime   where each λ̂ was sampled: E[ΔL] = λ̂/nβ beside the tolerances, λ̂ against the trace limit
    fitfile  the fit file `predict` reads: every line with what it was measured on
    frames   a store for Python: `mdl_slt.results` (pandas) and `mdl_slt.traces` (ArviZ)

`analyse(store)` does all of it once; the report, its CSV tables and the fit file take its results.

May import: errors, store, llc (the trace's estimate and the regime's formulas, no sampler), plan (which rows are the experiment's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mdl_slt.analysis.baselines import baselines
from mdl_slt.analysis.fits import eps_sweep, fit_lines, fit_relation, loo_predictions, loss_lines, pooled_fits
from mdl_slt.analysis.layers import group_table, within_checkpoints
from mdl_slt.analysis.measures import (LABELS, allocation_table, checkpoint_measures, costs, group_measures,
                                       hawq_predictions)
from mdl_slt.analysis.pooled import across_runs, measures_across_runs, theory_signs
from mdl_slt.analysis.regime import regime_table, scale_table
from mdl_slt.analysis.robustness import failed_of, robustness
from mdl_slt.analysis.tables import measurements, select, window
from mdl_slt.errors import UserError


@dataclass
class Analysis:
    """Everything the report shows, from one store."""

    experiment: object  # the stored, device-resolved Experiment
    settings: object  # its AnalysisConfig with any overrides
    records: pd.DataFrame
    table: pd.DataFrame
    inside: pd.Series
    lines: dict  # (model, compressor, ε) → (LineFit or None, rows), inside the window
    lines_all: dict  # the same over every checkpoint
    loss_lines: dict  # the lines of `lines` on the held-out loss instead of λ̂
    fits: pd.DataFrame  # `lines` as a table
    fits_all: pd.DataFrame  # `lines_all` as a table
    baselines: pd.DataFrame  # each line of `lines` beside the loss and training progress
    pooled: pd.DataFrame
    across_runs: pd.DataFrame  # per (scope, compressor, ε): each predictor across runs, leave-one-run-out
    across_lines: dict  # (scope, compressor, ε) → ({form: Regression} on λ̂, the loss and both, the rows pooled)
    groups: pd.DataFrame  # the layer study: per (checkpoint, entry, ε, weight group) c*_g beside λ̂_g and d_g
    layers: pd.DataFrame  # per (run, checkpoint or pooled, entry, ε): the answer of the tournament over groups
    layer_predictors: pd.DataFrame  # and per predictor: its figures
    measures: pd.DataFrame  # per (scope, entry, ε): the answer of every measure against λ̂ across runs
    measure_predictors: pd.DataFrame  # and per predictor: its figures
    allocations: pd.DataFrame  # per (checkpoint, entry, ε, method): the allocation within ε and its bits
    costs: pd.DataFrame  # per measure: seconds per checkpoint (the refined λ̂: per group)
    robust_fits: pd.DataFrame  # per (varied sampler setting, main fit): the fit redone with that λ̂
    robust: pd.DataFrame  # per varied setting: τ, fits kept, chains; empty without a robustness section
    sweep: pd.DataFrame
    regime: pd.DataFrame  # per checkpoint: E[ΔL] = λ̂/nβ, the trace limit, λ̂'s ratio to it, the slope in nβ
    scale: pd.DataFrame  # per (checkpoint, ε): λ(ε), its nβ, DL_λ(ε); empty without a scale section
    loo: pd.DataFrame
    left_out: pd.DataFrame
    configs: dict
    traces: list

    @property
    def entries(self) -> list[str]:
        return [e.key for e in self.experiment.critical.compressors]

    @property
    def window_text(self) -> str:
        if self.settings.min_step is not None:
            return f"checkpoints at or after step {self.settings.min_step}"
        return (f"checkpoints whose held-out loss has covered at least {self.settings.window:.0%} of its fall from a "
                f"uniform prediction (ln V) to its lowest measured value")


def analyse(store_path: Path, overrides: dict | None = None) -> Analysis:
    """Select the store's rows of its experiment, fit each line once, and gather the traces."""
    from mdl_slt.llc.trace import stored
    from mdl_slt.plan.experiment import Experiment
    from mdl_slt.store.database import open_existing

    with open_existing(store_path) as store:
        records, config, configs, identities = store.table(), store.last_config(), store.configs(), store.checkpoints()
        failed = store.failed()
    if config is None or records.empty:
        raise UserError(f"{store_path} holds no measurements yet: run the experiment first")
    experiment = Experiment.model_validate(config)
    settings = experiment.analysis.model_copy(update={k: v for k, v in (overrides or {}).items() if v is not None})
    records, left_out = select(records, config, identities)
    if not (records.task == "critical").any() or not (records.task == "llc").any():
        raise UserError(f"{store_path} holds no complete measurements of its experiment yet: run it first")
    table = measurements(records, settings.critical)
    inside = window(table, settings.window, settings.min_step)
    everything = pd.Series(True, index=table.index)
    traces = stored(store_path, keys=set(records[records.task == "llc"].task_key))
    lines, lines_all = fit_lines(table, inside), fit_lines(table, everything)
    on_loss = loss_lines(lines)
    robust_fits, robust = robustness(records, table, lines, failed_of(failed, config))
    signs = theory_signs(experiment)
    across, across_lines = across_runs(table, inside, signs)
    table, groups = with_measures(records, table, group_table(records), experiment)
    present = {m: LABELS[m] for m in LABELS if m in table or m in groups}
    return Analysis(experiment, settings, records, table, inside, lines, lines_all, on_loss, fit_relation(lines),
                    fit_relation(lines_all), baselines(lines, on_loss), pooled_fits(table, inside), across,
                    across_lines, groups, *within_checkpoints(groups, signs, present),
                    *(measures_across_runs(table, inside, signs, [m for m in present if m in table])
                      if any(m in table for m in present) else (pd.DataFrame(), pd.DataFrame())),
                    allocation_table(records), costs(records), robust_fits, robust, eps_sweep(table),
                    regime_table(records, experiment), scale_table(records), loo_predictions(lines), left_out, configs,
                    traces)


def with_measures(records: pd.DataFrame, table: pd.DataFrame, groups: pd.DataFrame, experiment) -> tuple:
    """The measurement and group tables with each sensitivity measure beside them, HAWQ's predicted
    critical value per entry and ε among them (`analysis.measures`)."""
    whole, parts = checkpoint_measures(records), group_measures(records)
    share = parts.groupby(["model", "revision"]).weight_group.nunique().to_dict() \
        if experiment.layers.tolerance == "share" else {}
    lower = {e.key: e.build().knob.more_compression == "lower" for e in experiment.critical.compressors}
    hawq_whole, hawq_parts = hawq_predictions(records, experiment.critical.epsilons, share, lower)
    keys = ["model", "revision"]
    if len(whole):
        table = table.merge(whole, on=keys, how="left")
    if len(hawq_whole):
        table = table.merge(hawq_whole, on=keys + ["compressor", "epsilon"], how="left")
    if len(groups) and len(parts):
        groups = groups.merge(parts, on=keys + ["weight_group"], how="left")
    if len(groups) and len(hawq_parts):
        groups = groups.merge(hawq_parts, on=keys + ["compressor", "epsilon", "weight_group"], how="left")
    return table, groups
