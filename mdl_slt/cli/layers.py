"""`mdl-slt layers REF`: the layer study on one checkpoint — its weight groups (`--list`), each group's
refined λ̂ and each compressor's critical value restricted to it, and the fit over groups."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mdl_slt.cli.app import EMBEDDED, EXPERIMENT_HELP, SET_HELP, app, console, experiment, home, load, print_json
from mdl_slt.errors import UserError


@app.command("layers", help="The weight groups of one checkpoint (--list), or the layer study on it: each group's "
                            "refined λ̂ (only the group sampled) and each compressor's critical value restricted to "
                            f"the group, then the fit over groups. {EMBEDDED}")
def layers(ref: str = typer.Argument(..., help="MODEL_ID@REVISION or a local directory."),
           list_: bool = typer.Option(False, "--list", help="Only list the weight groups, each with its parameter "
                                                            "count and matrices (reads no weights)."),
           group: list[str] = typer.Option([], "--group", help="Measure only these groups, repeatable [default: the "
                                                                "experiment's `layers.groups`, else all]."),
           compressor: list[str] = typer.Option([], help="Compressor entry ids or registered names, repeatable "
                                                         "[default: the experiment's layer entries, else rtn]."),
           epsilon: list[float] = typer.Option([], help="Tolerances ε of the whole model (nats/token), repeatable; "
                                                        "each group gets its share [default: the experiment's, else "
                                                        "0.02 0.05 0.1]."),
           experiment_file: Optional[Path] = typer.Option(None, "--experiment", help=EXPERIMENT_HELP),
           set_: list[str] = typer.Option([], "--set", help=SET_HELP),
           as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    from mdl_slt.models.checkpoints import CheckpointRef, group_names

    if list_:
        _list(CheckpointRef.parse(ref), as_json)
        return
    chosen = experiment(experiment_file, set_)
    names = list(group) or (chosen.layers.groups if chosen.layers.groups not in ("all", []) else [])
    study = {"groups": names or group_names(CheckpointRef.parse(ref), home()), "every": 1,
             "tolerance": chosen.layers.tolerance}
    entries = _entries(chosen, compressor)
    critical = {**chosen.critical.model_dump(), "compressors": [e.model_dump(exclude_none=True) for e in entries]}
    if epsilon:
        critical["epsilons"] = sorted(set(epsilon))
    chosen = chosen.model_validate({**chosen.model_dump(), "critical": critical, "layers": study})
    _measure(ref, chosen, as_json)


def _list(ref, as_json: bool) -> None:
    """The groups of `ref`'s architecture, from its configuration alone."""
    import torch
    from transformers import AutoModelForCausalLM

    from compressors.groups import weight_groups
    from mdl_slt.models.checkpoints import architecture

    with torch.device("meta"):
        found = weight_groups(AutoModelForCausalLM.from_config(architecture(ref, home())))
    rows = [{"group": g.name, "parameters": g.size, "role": g.role, "matrices": [n for n, _ in g.params]} for g in found]
    if as_json:
        print_json({"ref": str(ref), "groups": rows})
        return
    print(f"{ref}: {len(rows)} weight groups")
    for row in rows:
        print(f"  {row['group']:18s} {row['parameters']:>12,d}  {row['role']:12s} {', '.join(row['matrices'])}")


def _entries(chosen, asked: list[str]) -> list:
    """The compressor entries to restrict to each group: those asked for (entry ids of the
    experiment, or registered names), else the experiment's layer entries, else rtn."""
    from mdl_slt.measures.critical import CompressorEntry

    known = {e.key: e for e in chosen.critical.compressors}
    if asked:
        return [known.get(name) or CompressorEntry(name=name) for name in asked]
    return chosen.layer_entries() if chosen.layers.compressors is not None else [CompressorEntry(name="rtn")]


def _measure(ref: str, chosen, as_json: bool) -> None:
    """Measure every layer task of the one checkpoint, then fit over its groups."""
    import pandas as pd

    from mdl_slt.analysis.layers import group_table, within_checkpoints
    from mdl_slt.analysis.pooled import theory_signs
    from mdl_slt.plan.tasks import Tasks
    from mdl_slt.plan.units import Unit
    from mdl_slt.progress import tracking
    from mdl_slt.run.measure import measure_unit

    ckpt, _ = load(ref, chosen)
    chosen = chosen.model_copy(update={"models": [chosen.models[0].model_copy(update={"id": ckpt.ref.model_id})],
                                       "device": str(next(ckpt.model.parameters()).device.type)})
    unit = Unit(ckpt.ref, ckpt.step, ckpt.tokens_seen, None, tuple(chosen.layers.groups))
    tasks = [t for t in Tasks(chosen).for_unit(unit) if t.group is not None or t.kind == "base_loss"]
    rows, failed = [], []
    with tracking(console, "tasks", len(tasks)) as tracker:
        for outcome in measure_unit(unit, chosen, home(), tasks):
            rows += [vars(r) for r in outcome.records]
            if outcome.error is not None:
                failed.append(f"{outcome.task.name}: {outcome.error}")
            tracker.step(f"{outcome.task.name}{' failed' if outcome.error else ''}")
    if failed:
        raise UserError("; ".join(failed))
    groups = group_table(pd.DataFrame(rows))
    answers, figures = within_checkpoints(groups, theory_signs(chosen))
    if as_json:
        print_json({"ref": str(ckpt.ref), "groups": groups.to_dict(orient="records"),
                    "answers": answers.to_dict(orient="records"), "predictors": figures.to_dict(orient="records")})
        return
    share = round(groups.epsilon.iloc[0] / groups.tolerance.iloc[0])
    print(f"{ckpt.ref}: {groups.weight_group.nunique()} weight groups, each at tolerance ε/{share} (its share of the "
          "whole model's ε)" if share > 1 else f"{ckpt.ref}: {groups.weight_group.nunique()} weight groups, each at ε")
    for (comp, eps), part in groups.groupby(["compressor", "epsilon"], sort=False):
        print(f"  {comp} ε={eps:g}:")
        for r in part.itertuples():
            print(f"    {r.weight_group:18s} d {r.group_params:>9,d}  λ̂ {r.llc_mean:8.3f} ± {r.llc_std_error:.3f}  "
                  f"λ̂/d {r.llc_per_param:.5f}  critical {r.knob_name} {r.critical_value:.3f}")
        answer = answers[(answers.compressor == comp) & (answers.epsilon == eps)].iloc[0]
        fit = figures[(figures.compressor == comp) & (figures.epsilon == eps)
                      & (figures.predictor == "llc_per_param")].iloc[0]
        print(f"    over groups: λ̂/d β {fit.coef:.3g} [{fit.coef_ci_low:.3g}, {fit.coef_ci_high:.3g}] "
              f"({answer.llc_direction}), R² {fit.r2:.2f}; best on unseen groups: {answer.best}")
