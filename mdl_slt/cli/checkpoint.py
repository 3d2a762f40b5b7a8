"""One-shot commands on one checkpoint: `critical` (its critical compression per ε) and `predict`
(its critical compression from its LLC and a saved fit, optionally measured beside it)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from mdl_slt.cli.app import (EMBEDDED, EXPERIMENT_HELP, SET_HELP, app, console, experiment, home, load, print_json,
                             say_settings, state)
from mdl_slt.errors import UserError
from mdl_slt.progress import phase


@app.command("predict")
def predict(fit: Path = typer.Option(..., "--fit", help="Fit file written by `mdl-slt report` (<report>-fit.json)."),
            model: str = typer.Option(..., "--model", help="Checkpoint to predict: MODEL_ID@REVISION or a directory."),
            verify: bool = typer.Option(False, help="Also measure the critical compression and print both."),
            experiment_file: Optional[Path] = typer.Option(None, "--experiment", help="Measure with this experiment "
                                                           "file's settings instead of the fit's own [default: the "
                                                           "fit's]."),
            set_: list[str] = typer.Option([], "--set", help=SET_HELP),
            as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Predict a checkpoint's critical compression from its LLC, estimated with the fit's own settings."""
    from mdl_slt.run.predict import predict_checkpoint

    chosen = experiment(experiment_file, set_)
    found = predict_checkpoint(fit, model, chosen, home(), experiment_file is not None, verify, state["device"])
    llc = found.llc
    if as_json:
        print_json({"ref": str(found.ref), "llc_mean": llc.llc_mean, "llc_std_error": llc.llc_std_error,
                    "r_hat": llc.r_hat, "fit": str(fit), "settings_differ_from_fit": found.settings_differ,
                    "predictions": found.rows})
        return
    print(f"{found.ref}: λ̂ = {llc.llc_mean:.2f} ± {llc.llc_std_error:.2f} (R̂ {llc.r_hat:.2f}); "
          f"predicted critical compression, 95% prediction intervals, from {fit}")
    if found.settings_differ:
        print(f"  note: measured with settings that differ from the fit's ({', '.join(found.settings_differ)}): the "
              "fit's lines hold for its own settings")
    names = {"llc": "λ̂", "loss": "loss", "llc_loss": "λ̂ + loss"}
    for row in found.rows:
        across = row["basis"] != "model"
        error = "LORO" if across else "LOO"
        print(f"  {row['compressor']} ε={row['epsilon']:g}: critical {row['knob']} ({row['knob_unit']}), {row['basis']} "
              f"{'(a run the fit never saw: lines across runs)' if across else 'line'}; best on what it never saw: "
              f"{names.get(row['best'], '–')}")
        for label, prefix in (("λ̂", ""), ("loss", "loss_"), ("λ̂ + loss", "both_")):
            value = row[f"{prefix}predicted"]
            if value is None:
                continue
            line = (f"    {label:9s} {value:7.3f}  [{row[f'{prefix}lower']:.3f}, {row[f'{prefix}upper']:.3f}]  "
                    f"({error} {row[f'{prefix}rmse_unseen']:.3g})")
            if verify:
                measured = row["measured"]
                line += (f"   measured {measured:.3f} {'inside' if row[f'{prefix}inside'] else 'OUTSIDE'}"
                         if measured is not None else "   measured: beyond the knob's range")
            print(line)


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
                                                       "(e.g. --option granularity=channel) [default: the entry's]."),
             epsilon: list[float] = typer.Option([], help="Tolerances ε (nats/token): --epsilon E [E ...] "
                                                          "[default: the experiment's, else 0.02 0.05 0.1]."),
             precision: Optional[float] = typer.Option(None, help="Search precision in the knob's units "
                                                                  "[default: the entry's, else the knob's own]."),
             save: Optional[Path] = typer.Option(None, "--save", help="Also write the checkpoint compressed at its "
                                                 "critical value (the bracket's passing end, whose measured loss is "
                                                 "within ε) as a model directory that from_pretrained loads, with "
                                                 "mdl_slt-compression.json; one folder per ε when there are several "
                                                 "[default: none]."),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    from mdl_slt.measures.critical import CompressorEntry
    from mdl_slt.plan.cost import search_budget
    from mdl_slt.plan.experiment import parse_assignment
    from mdl_slt.run.measure import measure_entry

    extra = []
    for arg in ctx.args:
        try:
            extra.append(float(arg))
        except ValueError:
            raise UserError(f"unexpected argument {arg!r}: tolerances follow --epsilon as numbers") from None
    chosen = experiment(experiment_file, set_)
    epsilons = sorted(set(epsilon) | set(extra)) or chosen.critical.epsilons
    if any(not e > 0 for e in epsilons):
        raise UserError("every --epsilon must be a positive loss increase in nats/token")
    entries = {e.key: e for e in chosen.critical.compressors}
    entry = entries.get(compressor or chosen.critical.compressors[0].key) or CompressorEntry(name=compressor)
    options = {**entry.options, **dict(parse_assignment(o, "--option", "KEY=VALUE", "granularity=channel")
                                       for o in option)}
    entry = CompressorEntry(id=entry.key, name=entry.name, options=options,
                            precision=precision if precision is not None else entry.precision)
    method = entry.build()  # a bad option is refused before the checkpoint loads
    ckpt, tokens = load(ref, chosen)
    say_settings(chosen, extra=f"; {entry.key} ({entry.name}) with {options or 'its defaults'}, precision "
                               f"{entry.search_precision(method):g} {method.knob.unit or method.knob.name}, ε "
                               f"{', '.join(f'{e:g}' for e in epsilons)}, {chosen.critical.numerics}")
    with phase(console, f"critical search of {entry.key} on {ckpt.ref}", search_budget(entry, epsilons)) as advance:
        found = measure_entry(ckpt, tokens, entry, epsilons, chosen.critical.numerics, progress=advance)
    knob = method.knob
    points = [{"epsilon": p["epsilon"], "knob": p["knob"], "knob_interpolated": p["interpolated"],
               "knob_se": p["se"] if math.isfinite(p["se"]) else None, "knob_beyond": p["beyond"], "loss": p["loss"],
               "dl_bits": p["bits"], "dl_entropy_bits": p["bits_entropy"], "monotone": p["monotone"], "wide": p["wide"],
               "sequences_needed": found.sequences_needed(p["se"])} for p in found.points()]
    payload = {"ref": str(ckpt.ref), "step": ckpt.step, "tokens_seen": ckpt.tokens_seen, "compressor": entry.key,
               "method": entry.name, "options": options, "knob_name": knob.name, "knob_unit": knob.unit,
               "base_loss": found.base_loss, "uncompressed_dl_bits": found.uncompressed_bits,
               "n_evaluations": found.search.num_evaluations, "precision": found.search.precision,
               "n_sequences": found.sequences, "nonfinite": found.search.nonfinite, "elapsed_s": found.elapsed_s,
               "critical": points}
    if save is not None:
        payload["saved"] = _save(ckpt, tokens, entry, found, save, chosen)
    if as_json:
        print_json(payload)
        return
    print(f"{ckpt.ref}: base loss {found.base_loss:.4f} nats/token, {found.uncompressed_bits / 8e3:,.1f} kB "
          f"uncompressed; {found.search.num_evaluations} loss evaluations; knob {knob.name} ({knob.unit})")
    for p in points:
        if p["knob"] is None:
            print(f"  ε={p['epsilon']:g}: not reached even at {knob.name} = {p['knob_beyond']:g}")
            continue
        flag = "" if p["monotone"] else "  (non-monotone curve: treat with care)"
        se = "" if p["knob_se"] is None else f" ± {p['knob_se']:.3f}"
        noisy = f"; {p['sequences_needed']} evaluation sequences would bring its error under the precision" \
            if p["sequences_needed"] else ""
        print(f"  ε={p['epsilon']:g}: {knob.name} = {p['knob']:.3f} (interpolated {p['knob_interpolated']:.3f}{se}"
              f"{noisy}), loss {p['loss']:.4f}, {p['dl_bits'] / 8e3:,.1f} kB ({p['dl_entropy_bits'] / 8e3:,.1f} kB "
              f"entropy-coded){flag}")
    for folder in payload.get("saved", []):
        print(f"  saved {folder}")


def _save(ckpt, tokens, entry, found, folder: Path, chosen) -> list[str]:
    """The checkpoint compressed at each ε's critical value written as a model directory
    (`measure.save_compressed`); with several ε, one folder per ε."""
    from mdl_slt.run.measure import save_compressed

    points = [p for p in found.points() if p["knob"] is not None]
    if not points:
        raise UserError(f"no ε was reached, so there is no critical compression to save in {folder}")
    written = []
    for p in points:
        target = folder if len(points) == 1 else folder / f"epsilon-{p['epsilon']:g}"
        save_compressed(ckpt, tokens, entry, p, found, target, chosen.critical.numerics)
        written.append(str(target))
    return written
