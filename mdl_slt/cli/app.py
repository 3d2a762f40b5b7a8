"""The `mdl-slt` application, its global options and what every command shares: the experiment a
command measures with, the home of the caches, JSON output."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mdl_slt.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Critical compression and local learning coefficients of LM checkpoints.")
console = Console(stderr=True)
state = {"home": None, "threads": None, "device": None}

EMBEDDED = ("Without --experiment: the embedded Shakespeare set (64 held-out sequences of 128 tokens for "
            "losses, 256 training sequences for sampling).")
SET_HELP = ("Override a setting of the experiment file, KEY.PATH=VALUE, repeatable (e.g. --set llc.num_draws=300) "
            "[default: none].")
EXPERIMENT_HELP = ("Take data, sampler, compressor and device settings from this experiment file (YAML); "
                   "experiments/demo.yaml measures as the main job does [default: none: the embedded data and the "
                   "defaults].")


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


def home() -> Path:
    from mdl_slt.home.paths import resolve_home

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


def print_json(payload: dict) -> None:
    print(json.dumps(_finite(payload), indent=1, allow_nan=False))


def experiment(path: Path | None, sets: list[str], **chosen):
    """The experiment file with `--set` overrides and the global options given on the command line;
    without a file, one holding every default (the embedded data)."""
    from mdl_slt.plan.experiment import load_experiment, validated

    given = {"device": state["device"], "threads": state["threads"], **chosen}
    overrides = [*sets, *(f"{k}={v}" for k, v in given.items() if v is not None)]
    if path is not None:
        return load_experiment(path, overrides)
    if sets:
        raise UserError("--set changes an experiment file's settings: give the file with --experiment FILE")
    return validated({"name": "one-shot", "store": "unused.sqlite", "models": [{"id": "-"}],
                      **{k: v for k, v in given.items() if v is not None}}, "the command line")


def load(ref: str, chosen):
    """The checkpoint on the experiment's device and its token sets from the experiment's data."""
    from mdl_slt.compute.device import resolve_device
    from mdl_slt.run.measure import load as load_unit

    return load_unit(ref, chosen, home(), resolve_device(chosen.device))


def say_settings(chosen, sampler=None, extra: str = "") -> None:
    """On stderr, the data and sampler settings a one-shot command measures with, and how to measure
    as a run of an experiment does."""
    d = chosen.data
    text = (f"data: {d.source}, {d.eval_sequences} held-out sequences and {d.llc_sequences} sampling sequences of "
            f"{d.context_length} tokens")
    if sampler is not None:
        step = sampler.step_size if sampler.step_size == "auto" else f"{sampler.step_size:g}"
        text += (f"; sampler {sampler.sampler}: step η {step}, nβ {sampler.n_beta}, γ {sampler.localization:g}, "
                 f"{sampler.num_chains} chains, minibatches of {sampler.batch_size}, {sampler.budget_text}")
    hint = "" if chosen.name != "one-shot" else " (as the main job measures: --experiment experiments/demo.yaml)"
    console.print(f"{text}{extra}{hint}", markup=False, highlight=False, soft_wrap=True)
