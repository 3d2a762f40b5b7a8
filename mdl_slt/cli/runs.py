"""Commands over experiments and stores: run, validate, status, report; the suite; the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mdl_slt.cli.app import SET_HELP, app, console, experiment, home
from mdl_slt.errors import UserError

suite_app = typer.Typer(no_args_is_help=True, help="The embedded micro-Pythia suite.")
app.add_typer(suite_app, name="suite")


@suite_app.command("build")
def suite_build(force: bool = typer.Option(False, help="Rebuild even if built."),
                variants: bool = typer.Option(False, help="Also the 90k runs trained otherwise (built on "
                                                          "demand when an experiment names one)."),
                workers: int = typer.Option(2, min=1, help="Models trained in parallel, one thread each.")):
    """Download the corpus, train the tokenizer and the micro-Pythia models, save every checkpoint."""
    from mdl_slt.models.spec import SuiteSpec
    from mdl_slt.models.suite import build_suite

    spec = SuiteSpec()
    runs = spec.all_models() if variants else spec.models
    manifest = build_suite(home(), spec, runs, workers=workers, force=force, console=console)
    for model in runs:
        revisions = manifest["models"][spec.model_id(model)]
        print(f"{spec.model_id(model)}: {len(revisions)} checkpoints ({revisions[0]} … {revisions[-1]})")


@suite_app.command("list")
def suite_list():
    """List the suite's runs, how each variant was trained otherwise, and their checkpoints."""
    from mdl_slt.home.hub import list_revisions
    from mdl_slt.home.paths import hub_cache
    from mdl_slt.models.spec import SuiteSpec

    spec = SuiteSpec()
    for model in spec.all_models():
        revisions = list_revisions(hub_cache(home()), spec.model_id(model))
        trained = ", ".join(f"{k} {v:g}" for k, v in model.overrides().items())
        print(f"{spec.model_id(model)}{f' ({trained})' if trained else ''}: "
              f"{', '.join(revisions) if revisions else 'not built (mdl-slt suite build --variants)'}")


@app.command("compressors")
def list_compressors():
    """List every registered compressor: its knob, its options with their defaults, and the install
    line of any package it needs beyond the core install."""
    from dataclasses import MISSING, fields

    import compressors
    from compressors.registry import registered

    for name in compressors.names():
        cls = registered(name)
        needs = cls.missing()
        k = cls.knob if needs else compressors.get(name).knob  # a knob may follow the options (bnb's formats)
        options = ", ".join(f"{f.name}={f.default if f.default is not MISSING else f.default_factory()!r}"
                            for f in fields(cls))
        print(f"{name:11s} {(cls.__doc__ or '').strip().splitlines()[0]}\n"
              f"{'':11s} knob {k.name} in [{k.low:g}, {k.high:g}]{' ' + k.unit if k.unit else ''}, "
              f"{k.more_compression} compresses more, {k.identity:g} = none; {k.description}\n"
              f"{'':11s} options: {options}"
              + (f"\n{'':11s} needs the {cls.extra[0]} package, not installed: {needs}" if needs else ""))


@app.command("run")
def run(experiment_file: Path = typer.Argument(..., help="Experiment file (YAML)."),
        set_: list[str] = typer.Option([], "--set", help=SET_HELP),
        executor: Optional[str] = typer.Option(None, help="local | ray [default: the file's, else local]."),
        address: Optional[str] = typer.Option(None, help="Ray cluster address HOST:PORT [default: a Ray "
                                                         "instance on this machine].")):
    """Run an experiment: every checkpoint's base loss, LLC and critical compression; then its report."""
    from mdl_slt.run.runner import run_experiment

    chosen = experiment(experiment_file, set_, executor=executor, address=address)
    summary = run_experiment(chosen, home(), console)
    others = f", {summary.by_others} measured by other processes" if summary.by_others else ""
    console.print(f"{summary.units} checkpoints: {summary.measured} measured, {summary.skipped} already stored"
                  f"{others}, {summary.failed_units} failed ({len(summary.failures)} tasks), in {summary.elapsed_s:.0f} "
                  f"s; store {chosen.store}, log {summary.log}", highlight=False)
    if not summary.last:
        console.print("other processes are still measuring this store: the last to finish writes the report",
                      highlight=False)
    elif not chosen.critical.compressors:
        console.print("no compressors listed: the store holds λ̂ and base losses, and no report is written (it "
                      "fits critical compression)", highlight=False)
    elif chosen.report is not None and summary.measured + summary.skipped + summary.by_others > 0:
        from mdl_slt.report import write_report  # matplotlib's import costs seconds: only when a report is due

        written = write_report(chosen.store, chosen.report)
        console.print(f"report {written['pdf']} ({written['pages']} pages) and CSV beside it", highlight=False)
    if summary.failures:
        raise typer.Exit(1)


@app.command("validate")
def validate(experiment_file: Path = typer.Argument(..., help="Experiment file (YAML)."),
             set_: list[str] = typer.Option([], "--set", help=SET_HELP)):
    """Check an experiment file and print its plan and estimated cost, without running anything."""
    from mdl_slt.models.spec import SuiteSpec
    from mdl_slt.models.suite import missing
    from mdl_slt.plan.cost import estimated_cost
    from mdl_slt.plan.tasks import Tasks
    from mdl_slt.plan.units import plan, resolve_device

    chosen = experiment(experiment_file, set_)
    units = plan(chosen, home())
    by_model: dict[str, list[str]] = {}
    for unit in units:
        by_model.setdefault(unit.ref.model_id, []).append(unit.ref.revision or "(directory)")
    print(f"experiment {chosen.name}: {len(units)} checkpoints → store {Path(chosen.store).resolve()}"
          + (f", report {Path(chosen.report).resolve()}" if chosen.report else ""))
    for model, revisions in by_model.items():
        print(f"  {model}: {len(revisions)} ({revisions[0]} … {revisions[-1]})")
    spec = SuiteSpec()
    unbuilt = missing(home(), spec, spec.find(by_model))
    if unbuilt:
        print(f"the first run builds {len(unbuilt)} run(s) of the embedded suite, not built yet in {home()}: "
              f"{', '.join(spec.model_id(m) for m in unbuilt)}")
    tasks = Tasks(resolve_device(chosen))
    kinds: dict[str, int] = {}
    whole: dict[str, None] = {}  # the tasks' names, in order, each group's tasks once under its first name
    groups: dict[str, set] = {}
    for unit in units:
        for task in tasks.for_unit(unit):
            kinds[task.kind] = kinds.get(task.kind, 0) + 1
            name, _, group = task.name.partition("@")
            if group:
                groups.setdefault(name, set()).add(group)
            else:
                whole.setdefault(name)
    print(f"tasks: {sum(kinds.values())} ({', '.join(f'{n} {k}' for k, n in kinds.items())}): "
          + ", ".join([*whole, *(f"{name}@<group> ({len(found)} groups)" for name, found in groups.items())]))
    llc, cost = chosen.llc, estimated_cost(chosen, units)
    print(f"cost: at most {cost.sgld_steps:,} SGLD steps ({llc.num_chains} chains × {llc.budget_text} per "
          f"checkpoint), at most {cost.evaluations:,} loss evaluations of {chosen.data.eval_sequences} × "
          f"{chosen.data.context_length} tokens" + (f"; also {'; '.join(cost.notes)}" if cost.notes else ""))
    if chosen.executor == "ray":
        print(f"executor: Ray at {chosen.address or 'a local instance'}, each checkpoint asking for "
              f"{chosen.threads} CPU(s) and {chosen.gpus_per_unit:g} GPU(s)")
    else:
        print(f"executor: local, {chosen.workers} worker(s) × {chosen.threads} thread(s)")


def _stored_experiment(db):
    from pydantic import ValidationError

    from mdl_slt.plan.experiment import Experiment

    config = db.last_config()
    if config is None:
        raise UserError(f"{db.path} records no run yet: start one with `mdl-slt run FILE.yaml`")
    try:
        return Experiment.model_validate(config)
    except (ValidationError, UserError):
        raise UserError(f"{db.path} was written by another version of mdl-slt: rerun its experiment") from None


@app.command("status")
def status(store: Path = typer.Argument(..., help="Results store (SQLite) written by `mdl-slt run`."),
           verbose: bool = typer.Option(False, "--verbose", "-v", help="Also each checkpoint's critical values "
                                                                       "with their standard errors.")):
    """Show done / failed / pending for every checkpoint of the store's experiment."""
    from mdl_slt.models.checkpoints import CheckpointRef
    from mdl_slt.plan.tasks import Tasks
    from mdl_slt.run.runner import unit_status
    from mdl_slt.store.database import open_existing

    with open_existing(store) as db:
        stored = _stored_experiment(db)
        rows = unit_status(stored, home(), db)
        records = db.table() if verbose else None
    hashes = Tasks(stored).all_hashes
    for unit, state, detail in rows:
        print(f"{state:8s} {unit}" + (f"  {detail}" if detail else ""))
        if verbose:
            ref = CheckpointRef.parse(unit)
            for line in _critical_lines(records, hashes, ref.model_id, ref.revision):
                print(f"           {line}")
    counts = {s: sum(1 for _, st, _ in rows if st == s) for s in ("done", "failed", "pending")}
    print(f"{stored.name}: {counts['done']} done, {counts['failed']} failed, {counts['pending']} pending "
          f"of {len(rows)}")


def _critical_lines(records, hashes, model: str, revision: str | None) -> list[str]:
    """One line per stored critical value of a checkpoint: the interpolated value ± its standard
    error, flagged where the error exceeds the search precision."""
    import math

    rows = records[(records.task == "critical") & (records.model == model) & records.config_hash.isin(hashes)
                   & ((records.revision == revision) if revision is not None else records.revision.isna())]
    lines = []
    for r in rows.sort_values(["compressor", "epsilon"]).itertuples():
        se, needed = r.detail.get("critical_se"), r.detail.get("sequences_needed")
        value = r.knob_interpolated if r.knob_interpolated is not None and not math.isnan(r.knob_interpolated) else None
        text = "not reached" if value is None else f"{value:.4g}" + (f" ± {se:.2g}" if se is not None else "")
        flag = f"  (error above the precision {r.detail.get('precision'):g}: {needed} evaluation sequences would " \
               "bring it under)" if needed else ""
        lines.append(f"{r.compressor} ε={r.epsilon:g}: {r.detail.get('knob_name')} {text}{flag}")
    return lines


@app.command("report")
def report(store: Path = typer.Argument(..., help="Results store (SQLite) written by `mdl-slt run`."),
           output: Optional[Path] = typer.Option(None, "-o", "--output", help="PDF file to write [default: the "
                                                                              "experiment's `report`, else STORE.pdf]."),
           min_step: Optional[int] = typer.Option(None, help="Fit checkpoints at or after this step instead of "
                                                             "the analysis window [default: the experiment's]."),
           window: Optional[float] = typer.Option(None, help="Window fraction of the loss fall [default: the "
                                                             "experiment's `analysis.window`]."),
           critical: Optional[str] = typer.Option(None, help="interpolated | bracket: the critical value fitted "
                                                             "[default: the experiment's, else interpolated].")):
    """Write the PDF report, CSV tables and fit file for a store, with its experiment's analysis settings."""
    from mdl_slt.report import write_report

    if critical not in (None, "interpolated", "bracket"):
        raise UserError(f"--critical {critical!r}: use interpolated or bracket")
    written = write_report(store, output, {"min_step": min_step, "window": window, "critical": critical})
    print(f"{written['pdf']}: {written['pages']} pages; tables {', '.join(written['csv'])}")
