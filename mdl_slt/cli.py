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
state = {"home": None, "threads": 1, "device": None}


@app.callback()
def _options(
    home: Optional[Path] = typer.Option(None, help="Where the corpus, suite and token caches live "
                                                   "[default: $MDL_SLT_HOME or ~/.cache/mdl-slt]."),
    threads: int = typer.Option(1, min=1, help="Torch threads (1 is fastest on small shared machines)."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | auto: where models run; bf16 autocast on "
                                                    "cuda [default: an experiment's `device`, else auto]."),
):
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


SET_HELP = "Override a setting, KEY.PATH=VALUE, repeatable (e.g. --set llc.num_draws=300)."


@app.command("run")
def run(experiment_file: Path = typer.Argument(..., help="Experiment file (YAML)."),
        set_: list[str] = typer.Option([], "--set", help=SET_HELP),
        executor: Optional[str] = typer.Option(None, help="local | ray [default: the file's, else local]."),
        address: Optional[str] = typer.Option(None, help="Ray cluster address HOST:PORT [default: a Ray "
                                                         "instance on this machine].")):
    """Run an experiment: every checkpoint's base loss, LLC and critical compression; then its report."""
    from mdl_slt.experiment import load_experiment
    from mdl_slt.report import write_report
    from mdl_slt.runner import run_experiment

    chosen = {"executor": executor, "address": address, "device": state["device"]}
    experiment = load_experiment(experiment_file, [*set_, *(f"{k}={v}" for k, v in chosen.items() if v)])
    summary = run_experiment(experiment, _home(), console)
    console.print(f"{summary.units} checkpoints: {summary.measured} measured, {summary.skipped} already stored, "
                  f"{len(summary.failures)} failed, in {summary.elapsed_s:.0f} s; store {experiment.store}, "
                  f"log {summary.log}")
    if experiment.report is not None and summary.measured + summary.skipped > 0:
        written = write_report(experiment.store, experiment.report, experiment.analysis.min_step)
        console.print(f"report {written['pdf']} ({written['pages']} pages) and CSV beside it")
    if summary.failures:
        raise typer.Exit(1)


@app.command("validate")
def validate(experiment_file: Path = typer.Argument(..., help="Experiment file (YAML)."),
             set_: list[str] = typer.Option([], "--set", help=SET_HELP)):
    """Check an experiment file and print its plan and estimated cost, without running anything."""
    import math as _math

    import compressors

    from mdl_slt.experiment import load_experiment
    from mdl_slt.runner import plan

    experiment = load_experiment(experiment_file, set_)
    methods = [compressors.get(c.name, **c.options) for c in experiment.critical.compressors]
    units = plan(experiment, _home())
    by_model: dict[str, list[str]] = {}
    for unit in units:
        by_model.setdefault(unit.ref.model_id, []).append(unit.ref.revision or "(directory)")
    print(f"experiment {experiment.name}: {len(units)} checkpoints → store {experiment.store}"
          + (f", report {experiment.report}" if experiment.report else ""))
    for model, revisions in by_model.items():
        print(f"  {model}: {len(revisions)} ({revisions[0]} … {revisions[-1]})")
    tasks = ["base_loss", "llc", *(f"critical:{m.name}" for m in methods)]
    llc = experiment.llc
    searches = 0
    for m in methods:
        precision = experiment.critical.precision_for(m.knob)
        searches += 2 + len(experiment.critical.epsilons) * _math.ceil(_math.log2((m.knob.high - m.knob.low) / precision))
    print(f"tasks per checkpoint: {', '.join(tasks)}")
    print(f"cost: {len(units) * llc.num_chains * llc.steps_per_chain:,} SGLD steps "
          f"({llc.num_chains} chains × {llc.steps_per_chain} per checkpoint), at most "
          f"{len(units) * (1 + searches):,} loss evaluations of {experiment.data.eval_sequences} × "
          f"{experiment.data.context_length} tokens")
    if experiment.executor == "ray":
        print(f"executor: Ray at {experiment.address or 'a local instance'}, each checkpoint asking for "
              f"{experiment.threads} CPU(s) and {experiment.gpus_per_unit:g} GPU(s)")
    else:
        print(f"executor: local, {experiment.workers} worker(s) × {experiment.threads} thread(s)")


@app.command("status")
def status(store: Path = typer.Argument(..., help="Results store (SQLite) written by `mdl-slt run`.")):
    """Show done / failed / pending for every checkpoint of the store's experiment."""
    from pydantic import ValidationError

    from mdl_slt.experiment import Experiment
    from mdl_slt.runner import unit_status
    from mdl_slt.store import open_existing

    with open_existing(store) as db:
        config = db.last_config()
        if config is None:
            raise UserError(f"{store} records no run yet: start one with `mdl-slt run FILE.yaml`")
        try:
            experiment = Experiment.model_validate(config)
        except ValidationError:
            raise UserError(f"{store} was written by another version of mdl-slt: rerun its experiment") from None
        rows = unit_status(experiment, _home(), db)
    for unit, state, detail in rows:
        print(f"{state:8s} {unit}" + (f"  {detail}" if detail else ""))
    counts = {s: sum(1 for _, st, _ in rows if st == s) for s in ("done", "failed", "pending")}
    print(f"{experiment.name}: {counts['done']} done, {counts['failed']} failed, {counts['pending']} pending "
          f"of {len(rows)}")


@app.command("report")
def report(store: Path = typer.Argument(..., help="Results store (SQLite) written by `mdl-slt run`."),
           output: Path = typer.Option(..., "-o", "--output", help="PDF file to write."),
           min_step: int = typer.Option(0, help="Fit only checkpoints at or after this step.")):
    """Write the PDF report and CSV tables for a results store."""
    from mdl_slt.report import write_report

    written = write_report(store, output, min_step)
    print(f"{written['pdf']}: {written['pages']} pages; tables {', '.join(written['csv'])}")


def _load(ref: str, data=None):
    """The checkpoint and its token sets (`data`, default the embedded corpus)."""
    from mdl_slt.checkpoints import load_checkpoint
    from mdl_slt.data import DataConfig, token_sets
    from mdl_slt.device import resolve_device
    from mdl_slt.threads import set_threads

    set_threads(state["threads"])
    home = _home()
    ckpt = load_checkpoint(ref, home, resolve_device(state["device"] or "auto"))
    return ckpt, token_sets(home, ckpt.tokenizer, data or DataConfig())


@app.command("predict")
def predict(fit: Path = typer.Option(..., "--fit", help="Fit file written by `mdl-slt report` (<report>-fit.json)."),
            model: str = typer.Option(..., "--model", help="Checkpoint to predict: MODEL_ID@REVISION or a directory."),
            verify: bool = typer.Option(False, help="Also measure the critical compression and print both."),
            as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Predict a checkpoint's critical compression from its LLC, estimated with the fit's own settings."""
    from dataclasses import asdict

    import compressors

    from mdl_slt.fitfile import FitFile
    from mdl_slt.lm_loss import evaluate_loss
    from mdl_slt.measure import measure_critical, measure_llc

    saved = FitFile.load(fit)
    data, llc_config, critical_config = saved.settings()
    ckpt, tokens = _load(model, data)
    llc_result = measure_llc(ckpt, tokens, llc_config)
    predictions = saved.predict(ckpt.ref.model_id, llc_result.llc_mean, llc_result.llc_std_error or 0.0,
                                llc_result.num_params)
    measured = {}
    if verify:
        base_loss = evaluate_loss(ckpt.model, tokens.eval)
        for entry in critical_config.compressors:
            found = measure_critical(ckpt, tokens, compressors.get(entry.name, **entry.options), base_loss,
                                     critical_config)
            measured.update({(entry.name, p.epsilon): p.value for p in found.search.points})
    rows = []
    for p in predictions:
        row = asdict(p)
        if verify:
            value = measured.get((p.compressor, p.epsilon))
            row.update(measured=value, inside=value is not None and p.lower <= value <= p.upper)
        rows.append(row)
    if as_json:
        _print_json({"ref": str(ckpt.ref), "llc_mean": llc_result.llc_mean, "llc_std_error": llc_result.llc_std_error,
                     "r_hat": llc_result.r_hat, "fit": str(fit), "predictions": rows})
        return
    print(f"{ckpt.ref}: λ̂ = {llc_result.llc_mean:.2f} ± {llc_result.llc_std_error:.2f} (R̂ {llc_result.r_hat:.2f}); "
          f"predicted critical compression, {100 * 0.95:.0f}% prediction intervals, from {fit}")
    for row in rows:
        line = (f"  {row['compressor']:10s} ε={row['epsilon']:<6g} {row['predicted']:7.3f}  "
                f"[{row['lower']:.3f}, {row['upper']:.3f}]  ({row['basis']} line)")
        if verify:
            value = row["measured"]
            line += f"   measured {value:.3f} {'inside' if row['inside'] else 'OUTSIDE'}" if value is not None \
                else "   measured: beyond the knob's range"
        print(line)


def _llc_config(**fields) -> "LLCConfig":
    from pydantic import ValidationError

    from mdl_slt.sgld import LLCConfig

    try:
        return LLCConfig(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        raise UserError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None


@app.command("llc", context_settings={"allow_extra_args": True})
def llc(ctx: typer.Context,
        ref: str = typer.Argument(..., help="MODEL_ID@REVISION or a local directory; or `calibrate MODEL_REF`."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        sampler: str = typer.Option("sgld", help="sgld or rmsprop."),
        step_size: str = typer.Option("3e-4", help="A number, or auto (the paper's step for the nearest Pythia size)."),
        n_beta: str = typer.Option("30", help="A number, or auto (n/log n)."),
        localization: float = typer.Option(300.0), num_chains: int = typer.Option(2),
        num_draws: int = typer.Option(150), num_burnin: int = typer.Option(50),
        batch_size: int = typer.Option(16), seed: int = typer.Option(0),
        parameters: list[str] = typer.Option([], help="Sample only parameters matching these globs "
                                                      "(component LLC), e.g. 'gpt_neox.layers.0.attention.*'."),
        plot: Path = typer.Option(Path("llc-calibration.png"), help="With calibrate: where to draw the sweep."),
        trace: bool = typer.Option(False, help="Include the loss trace (chains × draws).")):
    """Estimate the LLC of one checkpoint with SGLD; `mdl-slt llc calibrate REF` sweeps step size × nβ."""
    from mdl_slt.measure import measure_llc

    config = _llc_config(sampler=sampler, step_size=step_size if step_size == "auto" else _number(step_size, "--step-size"),
                         n_beta=n_beta if n_beta == "auto" else _number(n_beta, "--n-beta"),
                         localization=localization, num_chains=num_chains, num_draws=num_draws,
                         num_burnin=num_burnin, batch_size=batch_size, seed=seed, parameters=parameters or None)
    if ref == "calibrate":
        if len(ctx.args) != 1:
            raise UserError("usage: mdl-slt llc calibrate MODEL_REF [options]")
        return _calibrate(ctx.args[0], config, plot, as_json)
    if ctx.args:
        raise UserError(f"unexpected arguments {ctx.args}: mdl-slt llc MODEL_REF [options]")
    ckpt, tokens = _load(ref)
    result = measure_llc(ckpt, tokens, config)
    payload = {"ref": str(ckpt.ref), "step": ckpt.step, "checkpoint_params": ckpt.num_params, **result.to_dict()}
    if not trace:
        payload.pop("loss_trace")
    if as_json:
        _print_json(payload)
        return
    flags = f"diverged chains {result.diverged_chains} (try step {result.suggested_step_size:g})" \
        if result.diverged_chains else "no divergence"
    print(f"{ckpt.ref}: λ̂ = {result.llc_mean:.2f} ± {result.llc_std_error:.2f} (s.e.), {num_chains} chains; "
          f"R̂ {result.r_hat:.3f}, ESS {result.ess:.0f}; L(w*) = {result.init_loss:.4f}; {flags}"
          f"{'; NEGATIVE: w* is not a local minimum or the step is too large' if result.negative else ''}")


def _number(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{flag} takes a number or 'auto', got {text!r}") from None


def _calibrate(ref: str, base, plot: Path, as_json: bool) -> None:
    from rich.progress import Progress

    from mdl_slt.calibrate import N_BETAS, STEP_SIZES, as_rows, plot_sweep, recommend, run_sweep

    ckpt, tokens = _load(ref)
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
        options[key.strip()] = yaml.safe_load(value)
    return options


@app.command("critical", context_settings={"allow_extra_args": True})
def critical(ctx: typer.Context,
             ref: str = typer.Argument(..., help="MODEL_ID@REVISION or a local directory."),
             compressor: str = typer.Option("rtn", help="Registered compressor (see `mdl-slt compressors`)."),
             option: list[str] = typer.Option([], help="Compressor option KEY=VALUE, repeatable "
                                                       "(e.g. --option granularity=channel)."),
             epsilon: list[float] = typer.Option(..., help="Tolerances ε (nats/token): --epsilon E [E ...]."),
             precision: Optional[float] = typer.Option(None, help="Knob precision of the search "
                                                                  "[default: the knob's own, e.g. 0.05 bits]."),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Find the critical compression of one checkpoint at each tolerance ε."""
    import compressors

    from mdl_slt.experiment import CriticalConfig, CompressorEntry
    from mdl_slt.lm_loss import evaluate_loss
    from mdl_slt.measure import measure_critical

    extra = []
    for arg in ctx.args:
        try:
            extra.append(float(arg))
        except ValueError:
            raise UserError(f"unexpected argument {arg!r}: tolerances follow --epsilon as numbers") from None
    epsilons = sorted(set(epsilon) | set(extra))
    if any(e <= 0 for e in epsilons):
        raise UserError("every --epsilon must be a positive loss increase in nats/token")
    options = _parse_options(option)
    method = compressors.get(compressor, **options)
    ckpt, tokens = _load(ref)
    base = evaluate_loss(ckpt.model, tokens.eval)
    found = measure_critical(ckpt, tokens, method, base,
                             CriticalConfig(compressors=[CompressorEntry(name=compressor, options=options)],
                                            epsilons=epsilons, precision=precision))
    points = []
    for p in found.search.points:
        at = found.bits_at(p.value) if p.value is not None else None
        points.append({"epsilon": p.epsilon, found.knob_name: p.value, "beyond": p.beyond, "loss": p.loss,
                       "description_length_bits": at.bits if at else None,
                       "entropy_coded_bits": at.bits_entropy if at else None, "monotone": p.monotone})
    payload = {"ref": str(ckpt.ref), "step": ckpt.step, "compressor": compressor, "knob": found.knob_name,
               "base_loss": base, "uncompressed_bits": found.uncompressed_bits,
               "evaluations": found.search.num_evaluations, "elapsed_s": found.elapsed_s, "critical": points}
    if as_json:
        _print_json(payload)
    else:
        print(f"{ckpt.ref}: base loss {base:.4f} nats/token, {found.uncompressed_bits / 8e3:,.1f} kB "
              f"uncompressed; {found.search.num_evaluations} loss evaluations")
        for p in points:
            value = p[found.knob_name]
            if value is None:
                print(f"  ε={p['epsilon']:g}: not reached even at {found.knob_name} = {p['beyond']:g}")
                continue
            flag = "" if p["monotone"] else "  (non-monotone curve: treat with care)"
            print(f"  ε={p['epsilon']:g}: {found.knob_name} = {value:.3f}, loss {p['loss']:.4f}, "
                  f"{p['description_length_bits'] / 8e3:,.1f} kB ({p['entropy_coded_bits'] / 8e3:,.1f} kB "
                  f"entropy-coded){flag}")


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
