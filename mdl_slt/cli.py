"""The `mdl-slt` command line. Every user mistake ends in one line on stderr and exit code 2."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mdl_slt.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Critical compression and local learning coefficients of LM checkpoints.")
suite_app = typer.Typer(no_args_is_help=True, help="The embedded micro-Pythia suite.")
app.add_typer(suite_app, name="suite")
console = Console(stderr=True)
state = {"home": None, "threads": None, "device": None}

EMBEDDED = ("Without --experiment: the embedded Shakespeare set (64 held-out sequences of 128 tokens for "
            "losses, 256 training sequences for sampling).")
SET_HELP = "Override a setting of the experiment file, KEY.PATH=VALUE, repeatable (e.g. --set llc.num_draws=300)."
EXPERIMENT_HELP = "Take data, sampler, compressor and device settings from this experiment file (YAML)."


@app.callback()
def _options(
    home: Optional[Path] = typer.Option(None, help="Where the corpus, suite and token caches live "
                                                   "[default: $MDL_SLT_HOME or ~/.cache/mdl-slt]."),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch threads per process [default: an experiment's "
                                                            "`threads`, else 1, fastest on small shared machines]."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | auto: where models run [default: an experiment's "
                                                    "`device`, else auto]."),
):
    if device not in (None, "cpu", "cuda", "auto"):
        raise UserError(f"unknown device {device!r}: use cpu, cuda or auto")
    state.update(home=home, threads=threads, device=device)


def _home() -> Path:
    from mdl_slt.home import resolve_home

    return resolve_home(state["home"])


def _finite(value):
    """JSON has no NaN or infinity: they become null; anything unknown becomes its string."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value if value is None or isinstance(value, (str, int, bool)) else str(value)


def _print_json(payload: dict) -> None:
    print(json.dumps(_finite(payload), indent=1, allow_nan=False))


def _experiment(path: Path | None, sets: list[str], **chosen):
    """The experiment file with `--set` overrides and the global options given on the command line;
    without a file, one holding every default (the embedded data)."""
    from mdl_slt.experiment import load_experiment, validated

    given = {"device": state["device"], "threads": state["threads"], **chosen}
    overrides = [*sets, *(f"{k}={v}" for k, v in given.items() if v is not None)]
    if path is not None:
        return load_experiment(path, overrides)
    if sets:
        raise UserError("--set changes an experiment file's settings: give the file with --experiment FILE")
    return validated({"name": "one-shot", "store": "unused.sqlite", "models": [{"id": "-"}],
                      **{k: v for k, v in given.items() if v is not None}}, "the command line")


@suite_app.command("build")
def suite_build(force: bool = typer.Option(False, help="Rebuild even if built."),
                workers: int = typer.Option(2, min=1, help="Models trained in parallel, one thread each.")):
    """Download the corpus, train the tokenizer and the micro-Pythia models, save every checkpoint."""
    from mdl_slt.suite import SuiteSpec, build_suite

    manifest = build_suite(_home(), SuiteSpec(), workers=workers, force=force, console=console)
    for model, revisions in manifest["models"].items():
        print(f"{model}: {len(revisions)} checkpoints ({revisions[0]} … {revisions[-1]})")


@suite_app.command("list")
def suite_list():
    """List the suite's models and checkpoints (hub-cache revisions)."""
    from mdl_slt.home import hub_cache
    from mdl_slt.hubcache import list_revisions
    from mdl_slt.suite import SuiteSpec

    home, spec = _home(), SuiteSpec()
    for model in spec.models:
        revisions = list_revisions(hub_cache(home), spec.model_id(model))
        print(f"{spec.model_id(model)}: {', '.join(revisions) if revisions else 'not built (mdl-slt suite build)'}")


@app.command("compressors")
def list_compressors():
    """List the registered compressors and their knobs."""
    import compressors

    for name in compressors.names():
        method = compressors.get(name)
        k = method.knob
        print(f"{name:11s} {(type(method).__doc__ or '').strip().splitlines()[0]}\n"
              f"{'':11s} knob {k.name} in [{k.low:g}, {k.high:g}]{' ' + k.unit if k.unit else ''}, "
              f"{k.more_compression} compresses more, {k.identity:g} = none; {k.description}")


@app.command("run")
def run(experiment_file: Path = typer.Argument(..., help="Experiment file (YAML)."),
        set_: list[str] = typer.Option([], "--set", help=SET_HELP),
        executor: Optional[str] = typer.Option(None, help="local | ray [default: the file's, else local]."),
        address: Optional[str] = typer.Option(None, help="Ray cluster address HOST:PORT [default: a Ray "
                                                         "instance on this machine].")):
    """Run an experiment: every checkpoint's base loss, LLC and critical compression; then its report."""
    from mdl_slt.report import write_report
    from mdl_slt.runner import run_experiment

    experiment = _experiment(experiment_file, set_, executor=executor, address=address)
    summary = run_experiment(experiment, _home(), console)
    console.print(f"{summary.units} checkpoints: {summary.measured} measured, {summary.skipped} already stored, "
                  f"{summary.failed_units} failed ({len(summary.failures)} tasks), in {summary.elapsed_s:.0f} s; "
                  f"store {experiment.store}, log {summary.log}", highlight=False)
    if experiment.report is not None and summary.measured + summary.skipped > 0:
        written = write_report(experiment.store, experiment.report)
        console.print(f"report {written['pdf']} ({written['pages']} pages) and CSV beside it", highlight=False)
    if summary.failures:
        raise typer.Exit(1)


@app.command("validate")
def validate(experiment_file: Path = typer.Argument(..., help="Experiment file (YAML)."),
             set_: list[str] = typer.Option([], "--set", help=SET_HELP)):
    """Check an experiment file and print its plan and estimated cost, without running anything."""
    from mdl_slt.plan import plan

    experiment = _experiment(experiment_file, set_)
    units = plan(experiment, _home())
    by_model: dict[str, list[str]] = {}
    for unit in units:
        by_model.setdefault(unit.ref.model_id, []).append(unit.ref.revision or "(directory)")
    print(f"experiment {experiment.name}: {len(units)} checkpoints → store {experiment.store}"
          + (f", report {experiment.report}" if experiment.report else ""))
    for model, revisions in by_model.items():
        print(f"  {model}: {len(revisions)} ({revisions[0]} … {revisions[-1]})")
    print(f"tasks per checkpoint: base_loss, llc, {', '.join(f'critical:{e.key}' for e in experiment.critical.compressors)}")
    llc = experiment.llc
    evaluations, notes = 1, []
    for entry in experiment.critical.compressors:
        method = entry.build()
        knob, precision = method.knob, entry.search_precision(method)
        searches = 2 + len(experiment.critical.epsilons) * max(1, math.ceil(math.log2((knob.high - knob.low) / precision)))
        cost = method.cost()
        evaluations += searches * cost.evaluations
        if cost.note:
            notes.append(f"{entry.key}: {cost.note} per knob value")
    print(f"cost: at most {len(units) * llc.num_chains * llc.max_steps:,} SGLD steps ({llc.num_chains} chains × "
          f"{llc.budget_text} per checkpoint), at most {len(units) * evaluations:,} loss evaluations of "
          f"{experiment.data.eval_sequences} × {experiment.data.context_length} tokens"
          + (f"; also {'; '.join(notes)}" if notes else ""))
    if experiment.executor == "ray":
        print(f"executor: Ray at {experiment.address or 'a local instance'}, each checkpoint asking for "
              f"{experiment.threads} CPU(s) and {experiment.gpus_per_unit:g} GPU(s)")
    else:
        print(f"executor: local, {experiment.workers} worker(s) × {experiment.threads} thread(s)")


def _stored_experiment(db):
    from pydantic import ValidationError

    from mdl_slt.experiment import Experiment

    config = db.last_config()
    if config is None:
        raise UserError(f"{db.path} records no run yet: start one with `mdl-slt run FILE.yaml`")
    try:
        return Experiment.model_validate(config)
    except (ValidationError, UserError):
        raise UserError(f"{db.path} was written by another version of mdl-slt: rerun its experiment") from None


@app.command("status")
def status(store: Path = typer.Argument(..., help="Results store (SQLite) written by `mdl-slt run`.")):
    """Show done / failed / pending for every checkpoint of the store's experiment."""
    from mdl_slt.runner import unit_status
    from mdl_slt.store import open_existing

    with open_existing(store) as db:
        experiment = _stored_experiment(db)
        rows = unit_status(experiment, _home(), db)
    for unit, state_, detail in rows:
        print(f"{state_:8s} {unit}" + (f"  {detail}" if detail else ""))
    counts = {s: sum(1 for _, st, _ in rows if st == s) for s in ("done", "failed", "pending")}
    print(f"{experiment.name}: {counts['done']} done, {counts['failed']} failed, {counts['pending']} pending "
          f"of {len(rows)}")


@app.command("report")
def report(store: Path = typer.Argument(..., help="Results store (SQLite) written by `mdl-slt run`."),
           output: Optional[Path] = typer.Option(None, "-o", "--output", help="PDF file to write [default: the "
                                                                              "experiment's `report`, else STORE.pdf]."),
           min_step: Optional[int] = typer.Option(None, help="Fit checkpoints at or after this step instead of "
                                                             "the experiment's analysis window."),
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


def _load(ref: str, experiment):
    """The checkpoint on the experiment's device and its token sets from the experiment's data."""
    from mdl_slt.device import resolve_device
    from mdl_slt.measure import load

    return load(ref, experiment, _home(), resolve_device(experiment.device))


def _differences(ours: dict, theirs: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested settings."""
    keys = sorted(set(ours) | set(theirs))
    found = []
    for key in keys:
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}")
    return found


@app.command("predict")
def predict(fit: Path = typer.Option(..., "--fit", help="Fit file written by `mdl-slt report` (<report>-fit.json)."),
            model: str = typer.Option(..., "--model", help="Checkpoint to predict: MODEL_ID@REVISION or a directory."),
            verify: bool = typer.Option(False, help="Also measure the critical compression and print both."),
            experiment_file: Optional[Path] = typer.Option(None, "--experiment", help="Measure with this experiment "
                                                           "file's settings instead of the fit's own."),
            set_: list[str] = typer.Option([], "--set", help=SET_HELP),
            as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Predict a checkpoint's critical compression from its LLC, estimated with the fit's own settings."""
    from dataclasses import asdict

    from mdl_slt.critical import CompressorEntry
    from mdl_slt.fitfile import FitFile
    from mdl_slt.lm_loss import evaluate_loss
    from mdl_slt.measure import measure_critical, measure_llc

    saved = FitFile.load(fit)
    fitted = saved.measured_with()
    if experiment_file is not None:
        experiment = _experiment(experiment_file, set_)
        differ = _differences({"data": experiment.data.model_dump(mode="json"),
                               "llc": experiment.llc.model_dump(mode="json")},
                              {"data": fitted["data"], "llc": fitted["llc"]})
    else:
        experiment = _experiment(None, set_, device=state["device"] or fitted["device"])
        experiment = experiment.model_copy(update={"data": type(experiment.data).model_validate(fitted["data"]),
                                                   "llc": type(experiment.llc).model_validate(fitted["llc"])})
        differ = []
    ckpt, tokens = _load(model, experiment)
    llc_result = measure_llc(ckpt, tokens, experiment.llc)
    predictions = saved.predict(ckpt.ref.model_id, llc_result.llc_mean, llc_result.llc_std_error or 0.0,
                                llc_result.num_params)
    measured = {}
    if verify:
        for key, entry in fitted["compressors"].items():
            chosen = CompressorEntry(id=key, name=entry["name"], options=entry["options"], precision=entry["precision"])
            base_loss = evaluate_loss(ckpt.model, tokens.eval, numerics=entry["numerics"])
            found = measure_critical(ckpt, tokens, chosen.build(), base_loss, entry["epsilons"], entry["precision"],
                                     entry["numerics"])
            measured.update({(key, p.epsilon): p.interpolated for p in found.search.points})
    rows = []
    for p in predictions:
        row = asdict(p)
        if verify:
            value = measured.get((p.compressor, p.epsilon))
            row.update(measured=value, inside=value is not None and p.lower <= value <= p.upper)
        rows.append(row)
    if as_json:
        _print_json({"ref": str(ckpt.ref), "llc_mean": llc_result.llc_mean, "llc_std_error": llc_result.llc_std_error,
                     "r_hat": llc_result.r_hat, "fit": str(fit), "settings_differ_from_fit": differ,
                     "predictions": rows})
        return
    print(f"{ckpt.ref}: λ̂ = {llc_result.llc_mean:.2f} ± {llc_result.llc_std_error:.2f} (R̂ {llc_result.r_hat:.2f}); "
          f"predicted critical compression, {100 * 0.95:.0f}% prediction intervals, from {fit}")
    if differ:
        print(f"  note: measured with settings that differ from the fit's ({', '.join(differ)}): the fit's lines "
              "hold for its own settings")
    for row in rows:
        line = (f"  {row['compressor']:10s} ε={row['epsilon']:<6g} {row['predicted']:7.3f}  "
                f"[{row['lower']:.3f}, {row['upper']:.3f}]  ({row['basis']} line)")
        if verify:
            value = row["measured"]
            line += f"   measured {value:.3f} {'inside' if row['inside'] else 'OUTSIDE'}" if value is not None \
                else "   measured: beyond the knob's range"
        print(line)


def _number_or_auto(text: str | None, flag: str):
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{flag} takes a number or 'auto', got {text!r}") from None


def _llc_settings(experiment, **flags):
    """The experiment's sampler settings with every flag given on the command line on top."""
    from pydantic import ValidationError

    from mdl_slt.sgld import LLCConfig

    given = {k: v for k, v in flags.items() if v is not None and v != []}
    try:
        return LLCConfig.model_validate({**experiment.llc.model_dump(exclude_unset=True), **given})
    except ValidationError as error:
        first = error.errors()[0]
        raise UserError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None


@app.command("llc", context_settings={"allow_extra_args": True}, help=f"Estimate the LLC of one checkpoint with SGLD; "
             f"`mdl-slt llc calibrate REF` sweeps step size × nβ; `mdl-slt llc reestimate STORE [--num-burnin N] "
             f"[--thinning K]` re-estimates every stored trace without sampling. {EMBEDDED}")
def llc(ctx: typer.Context,
        ref: str = typer.Argument(..., help="MODEL_ID@REVISION or a local directory; or `calibrate MODEL_REF`."),
        experiment_file: Optional[Path] = typer.Option(None, "--experiment", help=EXPERIMENT_HELP),
        set_: list[str] = typer.Option([], "--set", help=SET_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        sampler: Optional[str] = typer.Option(None, help="sgld, rmsprop or baoab [default: the experiment's, else sgld]."),
        step_size: Optional[str] = typer.Option(None, help="A number, or auto (the paper's step for a Pythia "
                                                           "size, else ε·(nβ·λ_max + γ) = 0.3) [default: the "
                                                           "experiment's, else 3e-4]."),
        n_beta: Optional[str] = typer.Option(None, help="A number, or auto (n/log n) [default: the experiment's, else 30]."),
        localization: Optional[float] = typer.Option(None), num_chains: Optional[int] = typer.Option(None),
        num_draws: Optional[int] = typer.Option(None, help="Draws per chain [default: auto, sampled in blocks until "
                                                           "R̂ ≤ 1.05, ESS ≥ 100 and 4 relaxation times]."),
        num_burnin: Optional[int] = typer.Option(None, help="Burn-in steps [default: auto, from the trace]."),
        batch_size: Optional[int] = typer.Option(None), seed: Optional[int] = typer.Option(None),
        parameters: list[str] = typer.Option([], help="Sample only parameters matching these globs "
                                                      "(component LLC), e.g. 'gpt_neox.layers.0.attention.*'."),
        plot: Path = typer.Option(Path("llc-calibration.png"), help="With calibrate: where to draw the sweep."),
        thinning: Optional[int] = typer.Option(None, min=1, help="Keep every k-th draw [with reestimate: the trace's own]."),
        model: Optional[str] = typer.Option(None, "--model", help="With reestimate: only this model's checkpoints."),
        trace: bool = typer.Option(False, help="Include the loss trace (chains × draws).")):
    from mdl_slt.measure import measure_llc

    if ref == "reestimate":
        if len(ctx.args) != 1:
            raise UserError("usage: mdl-slt llc reestimate STORE [--num-burnin N] [--thinning K] [--model ID]")
        return _reestimate(Path(ctx.args[0]), num_burnin, thinning, model, as_json)
    experiment = _experiment(experiment_file, set_)
    config = _llc_settings(experiment, sampler=sampler, step_size=_number_or_auto(step_size, "--step-size"),
                           n_beta=_number_or_auto(n_beta, "--n-beta"), localization=localization,
                           num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, batch_size=batch_size,
                           seed=seed, parameters=parameters or None, thinning=thinning)
    if ref == "calibrate":
        if len(ctx.args) != 1:
            raise UserError("usage: mdl-slt llc calibrate MODEL_REF [options]")
        return _calibrate(ctx.args[0], experiment, config, plot, as_json)
    if ctx.args:
        raise UserError(f"unexpected arguments {ctx.args}: mdl-slt llc MODEL_REF [options]")
    ckpt, tokens = _load(ref, experiment)
    result = measure_llc(ckpt, tokens, config)
    payload = {"ref": str(ckpt.ref), "step": ckpt.step, "checkpoint_params": ckpt.num_params, **result.to_dict()}
    if not trace:
        payload.pop("loss_trace")
    if as_json:
        _print_json(payload)
        return
    flags = f"diverged chains {result.diverged_chains} (try step {result.suggested_step_size:g})" \
        if result.diverged_chains else "no divergence"
    print(f"{ckpt.ref}: λ̂ = {result.llc_mean:.2f} ± {result.llc_std_error:.2f} (s.e.), {config.num_chains} chains; "
          f"R̂ {result.r_hat:.3f}, ESS {result.ess:.0f}; L(w*) = {result.init_loss:.4f}; {flags}"
          f"{'; NEGATIVE: w* is not a local minimum or the step is too large' if result.negative else ''}")


def _reestimate(store: Path, burnin: int | None, thinning: int | None, model: str | None, as_json: bool) -> None:
    """λ̂ of every stored trace with another burn-in or thinning (or its own), without sampling."""
    from mdl_slt.trace import estimate, stored

    rows = []
    for row, trace in stored(store, model):
        result = estimate(trace, burnin, thinning)
        rows.append({"model": row["model"], "revision": row["revision"], "step": row["step"],
                     "stored_llc_mean": row["llc_mean"], "stored_burnin": row["burnin"], "llc_mean": result.llc_mean,
                     "llc_std_error": result.llc_std_error, "r_hat": result.r_hat, "ess": result.ess,
                     "burnin": result.burnin, "thinning": result.thinning, "draws": result.num_draws,
                     "converged": result.converged})
    if not rows:
        raise UserError(f"{store} holds no stored SGLD trace{f' of {model}' if model else ''}: run an experiment "
                        "with mdl-slt 0.3 or later")
    if as_json:
        _print_json({"store": str(store), "checkpoints": rows})
        return
    print(f"{'checkpoint':42s} {'stored λ̂':>9s} {'λ̂':>8s} {'s.e.':>6s} {'R̂':>6s} {'ESS':>6s} {'burn-in':>8s}")
    for r in rows:
        print(f"{r['model'] + '@' + str(r['revision']):42s} {r['stored_llc_mean']:9.2f} {r['llc_mean']:8.2f} "
              f"{r['llc_std_error']:6.2f} {r['r_hat']:6.3f} {r['ess']:6.0f} {r['burnin']:8d}")


def _calibrate(ref: str, experiment, base, plot: Path, as_json: bool) -> None:
    from rich.progress import Progress

    from mdl_slt.calibrate import N_BETAS, STEP_SIZES, as_rows, plot_sweep, recommend, run_sweep

    ckpt, tokens = _load(ref, experiment)
    with Progress(console=console, transient=True) as bars:
        task = bars.add_task("calibrating", total=len(STEP_SIZES) * len(N_BETAS))
        settings = run_sweep(ckpt.model, tokens.train, base, progress=lambda: bars.advance(task))
    chosen = recommend(settings)
    plot_sweep(settings, chosen, plot)
    if as_json:
        _print_json({"ref": str(ckpt.ref), "settings": as_rows(settings), "plot": str(plot),
                     "recommended": None if chosen is None else {"step_size": chosen.step_size,
                                                                 "n_beta": chosen.n_beta}})
        return
    print(f"{'nβ':>6} {'step':>8} {'λ̂':>9} {'s.e.':>7} {'R̂':>6} {'drift':>6}  stable")
    for s in settings:
        print(f"{s.n_beta:6g} {s.step_size:8.0e} {s.llc_mean:9.2f} {s.llc_std_error:7.2f} {s.r_hat:6.2f} "
              f"{s.drift:6.2f}  {'yes' if s.stable else 'no' + (f' ({s.diverged} diverged)' if s.diverged else '')}")
    if chosen is None:
        raise UserError("no stable setting in the sweep: lower the step sizes, or raise --num-draws")
    print(f"recommended: step_size {chosen.step_size:g}, n_beta {chosen.n_beta:g} (λ̂ {chosen.llc_mean:.2f}); "
          f"plot {plot}")


def _parse_options(items: list[str]) -> dict:
    """KEY=VALUE pairs, values read as YAML scalars or lists (3, true, [attention, mlp])."""
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--option {item!r}: write KEY=VALUE, e.g. --option granularity=channel")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--option {item!r}: {value!r} is not a value (a number, word or [list])") from None
    return options


@app.command("critical", context_settings={"allow_extra_args": True},
             help=f"Find the critical compression of one checkpoint at each tolerance ε. {EMBEDDED}")
def critical(ctx: typer.Context,
             ref: str = typer.Argument(..., help="MODEL_ID@REVISION or a local directory."),
             experiment_file: Optional[Path] = typer.Option(None, "--experiment", help=EXPERIMENT_HELP),
             set_: list[str] = typer.Option([], "--set", help=SET_HELP),
             compressor: Optional[str] = typer.Option(None, help="An entry id of the experiment, or a registered "
                                                                 "compressor (`mdl-slt compressors`) [default: the "
                                                                 "experiment's first entry, else rtn]."),
             option: list[str] = typer.Option([], help="Compressor option KEY=VALUE, repeatable "
                                                       "(e.g. --option granularity=channel)."),
             epsilon: list[float] = typer.Option([], help="Tolerances ε (nats/token): --epsilon E [E ...] "
                                                          "[default: the experiment's, else 0.02 0.05 0.1]."),
             precision: Optional[float] = typer.Option(None, help="Search precision in the knob's units "
                                                                  "[default: the entry's, else the knob's own]."),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    from mdl_slt.critical import CompressorEntry
    from mdl_slt.lm_loss import evaluate_loss
    from mdl_slt.measure import measure_critical

    extra = []
    for arg in ctx.args:
        try:
            extra.append(float(arg))
        except ValueError:
            raise UserError(f"unexpected argument {arg!r}: tolerances follow --epsilon as numbers") from None
    experiment = _experiment(experiment_file, set_)
    epsilons = sorted(set(epsilon) | set(extra)) or experiment.critical.epsilons
    if any(not e > 0 for e in epsilons):
        raise UserError("every --epsilon must be a positive loss increase in nats/token")
    entries = {e.key: e for e in experiment.critical.compressors}
    chosen = entries.get(compressor or experiment.critical.compressors[0].key)
    if chosen is None:
        chosen = CompressorEntry(name=compressor)
    options = {**chosen.options, **_parse_options(option)}
    chosen = CompressorEntry(id=chosen.key, name=chosen.name, options=options,
                             precision=precision if precision is not None else chosen.precision)
    method = chosen.build()
    numerics = experiment.critical.numerics
    ckpt, tokens = _load(ref, experiment)
    base = evaluate_loss(ckpt.model, tokens.eval, numerics=numerics)
    found = measure_critical(ckpt, tokens, method, base, epsilons, chosen.search_precision(method), numerics)
    points = []
    for p in found.search.points:
        at = found.at(p.value) if p.value is not None else None
        points.append({"epsilon": p.epsilon, found.knob_name: p.value, "interpolated": p.interpolated,
                       "beyond": p.beyond, "loss": p.loss,
                       "description_length_bits": at.bits if at else None,
                       "entropy_coded_bits": at.bits_entropy if at else None, "monotone": p.monotone,
                       "wide": p.wide})
    payload = {"ref": str(ckpt.ref), "step": ckpt.step, "compressor": chosen.key, "method": chosen.name,
               "options": options, "knob": found.knob_name, "base_loss": base,
               "uncompressed_bits": found.uncompressed_bits, "evaluations": found.search.num_evaluations,
               "nonfinite": found.search.nonfinite, "elapsed_s": found.elapsed_s, "critical": points}
    if as_json:
        _print_json(payload)
        return
    print(f"{ckpt.ref}: base loss {base:.4f} nats/token, {found.uncompressed_bits / 8e3:,.1f} kB "
          f"uncompressed; {found.search.num_evaluations} loss evaluations")
    for p in points:
        value = p[found.knob_name]
        if value is None:
            print(f"  ε={p['epsilon']:g}: not reached even at {found.knob_name} = {p['beyond']:g}")
            continue
        flag = "" if p["monotone"] else "  (non-monotone curve: treat with care)"
        print(f"  ε={p['epsilon']:g}: {found.knob_name} = {value:.3f} (interpolated {p['interpolated']:.3f}), "
              f"loss {p['loss']:.4f}, {p['description_length_bits'] / 8e3:,.1f} kB "
              f"({p['entropy_coded_bits'] / 8e3:,.1f} kB entropy-coded){flag}")


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except UserError as error:
        print(f"mdl-slt: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001  click's own, or typer's vendored copy of click (typer ≥ 0.20)
        if type(error).__name__ == "Abort":
            print("mdl-slt: interrupted; results stored so far are kept", file=sys.stderr)
            sys.exit(130)
        if callable(getattr(error, "show", None)) and isinstance(getattr(error, "exit_code", None), int):
            error.show()  # a usage error: click's message, exit code 2
            sys.exit(error.exit_code)
        if os.environ.get("MDL_SLT_DEBUG"):
            raise
        print(f"mdl-slt: internal error: {type(error).__name__}: {' '.join(str(error).split())[:300]} "
              "(set MDL_SLT_DEBUG=1 for the traceback and please report it)", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
