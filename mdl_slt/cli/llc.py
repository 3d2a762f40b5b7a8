"""`mdl-slt llc`: estimate one checkpoint's LLC (`llc estimate REF`, or just `llc REF`), re-estimate
a store's traces without sampling (`llc reestimate STORE`), sweep step size × nβ (`llc calibrate REF`),
find λ(ε), the LLC at the scale of each tolerance (`llc scale REF`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from mdl_slt.cli.app import (EMBEDDED, EXPERIMENT_HELP, SET_HELP, app, console, experiment, load, print_json,
                             say_settings)
from mdl_slt.errors import UserError, first_problem
from mdl_slt.progress import phase


class _EstimateByDefault(TyperGroup):
    """`mdl-slt llc REF` is `mdl-slt llc estimate REF`: a first argument that names no subcommand
    (nor an option) is a checkpoint."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["estimate", *args]
        return super().parse_args(ctx, args)


llc_app = typer.Typer(cls=_EstimateByDefault, no_args_is_help=True, rich_markup_mode=None,
                      help="The LLC of one checkpoint (`mdl-slt llc REF` = `mdl-slt llc estimate REF`), a store's "
                           "traces re-estimated, or a step size × nβ sweep.")
app.add_typer(llc_app, name="llc")

STEP_HELP = ("A number, or auto (the paper's step for a Pythia size, else η·(nβ·λ_max + γ) = 0.3) [default: the "
             "experiment's, else 3e-4].")


def _number_or_auto(text: str | None, flag: str):
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{flag} takes a number or 'auto', got {text!r}") from None


def _settings(chosen, **flags):
    """The experiment's sampler settings with every flag given on the command line on top."""
    from pydantic import ValidationError

    from mdl_slt.llc.config import LLCConfig

    given = {k: v for k, v in flags.items() if v is not None and v != []}
    try:
        return LLCConfig.model_validate({**chosen.llc.model_dump(exclude_unset=True), **given})
    except ValidationError as error:
        where, first = first_problem(error)
        raise UserError(f"--{where.split('.')[0].replace('_', '-')}: {first['msg']}") from None


SAMPLER_FLAGS = dict(
    sampler=typer.Option(None, help="sgld, rmsprop, baoab or fisher [default: the experiment's, else sgld]."),
    step_size=typer.Option(None, help=STEP_HELP),
    n_beta=typer.Option(None, help="A number, or auto (n/log n) [default: the experiment's, else 30]."),
    num_draws=typer.Option(None, help="Draws per chain [default: the experiment's, else auto: sampled in blocks "
                                      "until R̂ ≤ 1.05, ESS ≥ 100 and 4 relaxation times]."),
    localization=typer.Option(None, help="γ, the pull towards w* [default: the experiment's, else 300]."),
    num_chains=typer.Option(None, help="Chains [default: the experiment's, else 4]."),
    num_burnin=typer.Option(None, help="Burn-in steps [default: the experiment's, else auto, from the trace]."),
    batch_size=typer.Option(None, help="Sequences per SGLD minibatch [default: the experiment's, else 16]."),
    seed=typer.Option(None, help="Seed of the chains' noise and minibatches [default: the experiment's, else 0]."),
    parameters=typer.Option([], help="Sample only parameters matching these globs (component LLC), e.g. "
                                     "'gpt_neox.layers.0.attention.*' [default: all]."),
)


@llc_app.command("estimate", help=f"Estimate the LLC of one checkpoint by sampling. {EMBEDDED}")
def estimate(ref: str = typer.Argument(..., help="MODEL_ID@REVISION or a local directory."),
             experiment_file: Optional[Path] = typer.Option(None, "--experiment", help=EXPERIMENT_HELP),
             set_: list[str] = typer.Option([], "--set", help=SET_HELP),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
             sampler: Optional[str] = SAMPLER_FLAGS["sampler"], step_size: Optional[str] = SAMPLER_FLAGS["step_size"],
             n_beta: Optional[str] = SAMPLER_FLAGS["n_beta"],
             localization: Optional[float] = SAMPLER_FLAGS["localization"],
             num_chains: Optional[int] = SAMPLER_FLAGS["num_chains"],
             num_draws: Optional[int] = SAMPLER_FLAGS["num_draws"],
             num_burnin: Optional[int] = SAMPLER_FLAGS["num_burnin"],
             batch_size: Optional[int] = SAMPLER_FLAGS["batch_size"], seed: Optional[int] = SAMPLER_FLAGS["seed"],
             parameters: list[str] = SAMPLER_FLAGS["parameters"],
             thinning: Optional[int] = typer.Option(None, min=1, help="Keep every k-th draw [default: the "
                                                                      "experiment's, else 1]."),
             trace: bool = typer.Option(False, help="Include the loss trace (chains × draws)."),
             robustness: bool = typer.Option(False, "--robustness", help="Also λ̂ with one sampler setting multiplied "
                                             "at a time: the experiment's `robustness` section, else step size, nβ and "
                                             "γ × 0.33 and × 3, minibatch × 4."),
             ladder: bool = typer.Option(False, "--ladder", help="Also λ̂ at nβ/3 (the same step) and 3·nβ (the "
                                         "step divided by 3), for the local slope d log λ̂ / d log nβ: 0 in the "
                                         "volume law, 1 in the trace limit.")):
    from mdl_slt.run.measure import measure_llc

    chosen = experiment(experiment_file, set_)
    config = _settings(chosen, sampler=sampler, step_size=_number_or_auto(step_size, "--step-size"),
                       n_beta=_number_or_auto(n_beta, "--n-beta"), localization=localization, num_chains=num_chains,
                       num_draws=num_draws, num_burnin=num_burnin, batch_size=batch_size, seed=seed,
                       parameters=parameters or None, thinning=thinning)
    ckpt, tokens = load(ref, chosen)
    say_settings(chosen, config)
    with phase(console, f"sampling λ̂ of {ckpt.ref}", config.budget_steps) as advance:
        result = measure_llc(ckpt, tokens, config, lambda steps, budget: advance(steps))
    payload = {"ref": str(ckpt.ref), "step": ckpt.step, "tokens_seen": ckpt.tokens_seen,
               "checkpoint_params": ckpt.num_params, **result.to_dict()}
    if not trace:
        payload.pop("loss_trace")
    varied = _varied(ckpt, tokens, config, chosen, result.llc_mean, as_json) if robustness else None
    if varied is not None:
        payload["robustness"] = varied
    payload["regime"] = _regime(ckpt, tokens, config, result, chosen.critical.epsilons, ladder, as_json)
    if as_json:
        print_json(payload)
        return
    flags = f"diverged chains {result.diverged_chains} (try step {result.suggested_step_size:g})" \
        if result.diverged_chains else "no divergence"
    print(f"{ckpt.ref}: λ̂ = {result.llc_mean:.2f} ± {result.llc_std_error:.2f} (s.e.), {config.num_chains} chains; "
          f"R̂ {result.r_hat:.3f}, ESS {result.ess:.0f}; L(w*) = {result.init_loss:.4f}; {flags}"
          f"{'; NEGATIVE: w* is not a local minimum or the step is too large' if result.negative else ''}")
    print(_regime_line(payload["regime"]))
    for row in varied or []:
        diverged = f", {len(row['diverged_chains'])} chains diverged" if row["diverged_chains"] else ""
        print(f"  {row['setting']:20s} λ̂ = {row['llc_mean']:8.2f} ± {row['llc_std_error']:.2f}  ({row['ratio']:.3f} × the "
              f"main λ̂; R̂ {row['r_hat']:.3f}{'' if row['converged'] else ', not converged'}{diverged})")


def _regime(ckpt, tokens, config, result, epsilons: list[float], ladder: bool, quiet: bool) -> dict:
    """Where λ̂ was sampled (`mdl_slt.llc.regime`): E[ΔL] = λ̂/nβ beside the tolerances, the trace
    limit T = nβ·tr(H)/(2γ) from tr(H) of the sampled loss at w*, λ̂/T, and with `ladder` the slope."""
    from mdl_slt.llc import regime
    from mdl_slt.llc.batches import default_loss
    from mdl_slt.llc.curvature import hessian_trace
    from mdl_slt.llc.sampling import select_parameters
    from mdl_slt.run.measure import measure_llc

    params = [p for _, p in select_parameters(ckpt.model, config.parameters)]
    data = tokens.train.to(params[0].device)  # tr(H) of the sampled loss, over the sampled parameters
    trace, trace_se = hessian_trace(ckpt.model, params, data, default_loss(data), seed=config.seed)
    limit = regime.trace_limit(trace, result.n_beta, config.localization)
    found = {"excess_loss": result.llc_mean / result.n_beta, "epsilons": epsilons, "hessian_trace": trace,
             "hessian_trace_se": trace_se, "trace_limit": limit, "trace_ratio": result.llc_mean / limit,
             "half_d": result.num_params / 2, "slope": float("nan")}
    if ladder:
        rungs = {}
        resolved = config.model_copy(update={"n_beta": result.n_beta, "step_size": result.config["step_size"]})
        for factor in (1 / regime.LADDER, regime.LADDER):
            if not quiet:
                console.print(f"λ̂ at nβ = {result.n_beta * factor:g}…", highlight=False)
            rungs[factor] = measure_llc(ckpt, tokens, regime.rung(resolved, factor))
        low, high = rungs[1 / regime.LADDER], rungs[regime.LADDER]
        found |= {"ladder": [{"n_beta": r.n_beta, "step_size": r.config["step_size"], "llc_mean": r.llc_mean,
                              "llc_std_error": r.llc_std_error, "converged": r.converged,
                              "diverged_chains": r.diverged_chains} for r in (low, high)],
                  "slope": regime.slope(low.llc_mean, high.llc_mean)}
    return found | {"regime": regime.regime(found["trace_ratio"], found["slope"])}


def _regime_line(found: dict) -> str:
    """One line: E[ΔL] beside the tolerances, λ̂ against the trace limit, the slope where measured."""
    eps = found["epsilons"]
    beside = f" ({found['excess_loss'] / max(eps):.0f}–{found['excess_loss'] / min(eps):.0f}× the tolerances " \
             f"ε = {min(eps):g}–{max(eps):g})" if eps else ""
    ladder = "".join(f"; λ̂ = {r['llc_mean']:.1f} at nβ = {r['n_beta']:g}" for r in found.get("ladder", []))
    measured = f", slope d log λ̂/d log nβ = {found['slope']:.2f}" if found.get("ladder") else ""
    return (f"  regime: {found['regime']}{measured}. E[ΔL] = λ̂/nβ = {found['excess_loss']:.3g} nats/token{beside}; "
            f"trace limit nβ·tr(H)/(2γ) = {found['trace_limit']:.3g} (tr(H) = {found['hessian_trace']:.4g} ± "
            f"{found['hessian_trace_se']:.2g}), λ̂ at {found['trace_ratio']:.2f}× it; d/2 = {found['half_d']:,.0f}"
            f"{ladder}")


def _varied(ckpt, tokens, config, chosen, main: float, quiet: bool) -> list[dict]:
    """λ̂ with one sampler setting multiplied at a time (the experiment's robustness section, else
    the suggested one), each beside the main λ̂ as a ratio."""
    from mdl_slt.plan.experiment import SUGGESTED, RobustnessConfig, variation_name, vary
    from mdl_slt.run.measure import measure_llc

    section = chosen.robustness if chosen.robustness.variations() else RobustnessConfig(**SUGGESTED)
    rows = []
    for parameter, multiplier in section.variations():
        if not quiet:
            console.print(f"λ̂ at {variation_name(parameter, multiplier)}…", highlight=False)
        found = measure_llc(ckpt, tokens, vary(config, parameter, multiplier))
        rows.append({"setting": variation_name(parameter, multiplier), "llc_mean": found.llc_mean,
                     "ratio": found.llc_mean / main if main else float("nan"),
                     "llc_std_error": found.llc_std_error, "r_hat": found.r_hat, "converged": found.converged,
                     "diverged_chains": found.diverged_chains})
    return rows


@llc_app.command("reestimate")
def reestimate(store: Path = typer.Argument(..., help="Results store (SQLite) written by `mdl-slt run`."),
               num_burnin: Optional[int] = typer.Option(None, help="Burn-in steps [default: each trace's own]."),
               thinning: Optional[int] = typer.Option(None, min=1, help="Keep every k-th draw [default: the "
                                                                        "trace's own]."),
               model: Optional[str] = typer.Option(None, "--model", help="Only this model's checkpoints [default: "
                                                                         "every model's]."),
               as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """λ̂ of every stored trace with another burn-in or thinning (or its own), without sampling."""
    from mdl_slt.llc.trace import reestimate_store

    rows = reestimate_store(store, num_burnin, thinning, model)
    if as_json:
        print_json({"store": str(store), "checkpoints": rows})
        return
    print(f"{'checkpoint':42s} {'stored λ̂':>9s} {'λ̂':>8s} {'s.e.':>6s} {'R̂':>6s} {'ESS':>6s} {'burn-in':>8s}")
    for r in rows:
        print(f"{r['model'] + '@' + str(r['revision']):42s} {r['stored_llc_mean']:9.2f} {r['llc_mean']:8.2f} "
              f"{r['llc_std_error']:6.2f} {r['r_hat']:6.3f} {r['ess']:6.0f} {r['burnin']:8d}")


@llc_app.command("scale", help="λ(ε), the LLC at the scale of each tolerance ε: λ̂ at the nβ whose posterior sits "
                               "ε above w* (E[ΔL] = λ̂/nβ = ε), found up a ladder of nβ, on the divergence from w* "
                               "(KL(p_w* ‖ p_w) per token; a checkpoint is not a minimum of its cross-entropy at such "
                               "nβ); with several ε, DL_λ(ε) = ∫ λ d log₂(1/s) from the widest, the code length the "
                               f"volume law implies. {EMBEDDED}")
def scale(ref: str = typer.Argument(..., help="MODEL_ID@REVISION or a local directory."),
          epsilons: list[float] = typer.Option([], "--epsilon", help="Tolerances in nats/token [default: the "
                                                                     "experiment's critical.epsilons]."),
          experiment_file: Optional[Path] = typer.Option(None, "--experiment", help=EXPERIMENT_HELP),
          set_: list[str] = typer.Option([], "--set", help=SET_HELP),
          as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
          sampler: Optional[str] = SAMPLER_FLAGS["sampler"], step_size: Optional[str] = SAMPLER_FLAGS["step_size"],
          n_beta: Optional[str] = typer.Option(None, help="The ladder's first nβ [default: the experiment's, "
                                                          "else 30]."),
          localization: Optional[float] = SAMPLER_FLAGS["localization"],
          num_chains: Optional[int] = SAMPLER_FLAGS["num_chains"],
          num_draws: Optional[int] = SAMPLER_FLAGS["num_draws"],
          batch_size: Optional[int] = SAMPLER_FLAGS["batch_size"], seed: Optional[int] = SAMPLER_FLAGS["seed"],
          max_steps: Optional[int] = typer.Option(None, min=2, help="The most steps a chain takes per rung "
                                                                    "[default: the experiment's, else 2000].")):
    from mdl_slt.llc.regime import volume_code_bits
    from mdl_slt.llc.scale import llc_at_scale

    chosen = experiment(experiment_file, set_)
    config = _settings(chosen, sampler=sampler, step_size=_number_or_auto(step_size, "--step-size"),
                       n_beta=_number_or_auto(n_beta, "--n-beta"), localization=localization, num_chains=num_chains,
                       num_draws=num_draws, batch_size=batch_size, seed=seed, max_steps=max_steps)
    ckpt, tokens = load(ref, chosen)
    say_settings(chosen, config)
    found = []
    for epsilon in epsilons or chosen.critical.epsilons:
        def rung(number, result, epsilon=epsilon):
            if not as_json:
                console.print(f"ε = {epsilon:g}, rung {number + 1}: nβ = {result.n_beta:.4g}, "
                              f"λ̂ = {result.llc_mean:.4g} ± {result.llc_std_error:.2g}, E[ΔL] = {result.llc_mean / result.n_beta:.3g}, R̂ "
                              f"{result.r_hat:.3f}{'' if result.converged else ', not converged'}", highlight=False)

        found.append(llc_at_scale(ckpt.model, tokens.train, config, epsilon, progress=rung))
    reached = [f for f in found if f.found]  # DL_λ integrates λ(ε) over the tolerances reached
    bits = dict(zip(map(id, reached), volume_code_bits([f.epsilon for f in reached], [f.llc_mean for f in reached])))
    if as_json:
        print_json({"ref": str(ckpt.ref), "scales": [f.to_dict() | {"code_bits": bits.get(id(f))} for f in found]})
        return
    for f in found:
        flags = ("" if f.found else f"; not found: {f.why}") + ("" if f.converged else "; chains not converged")
        code = f", DL_λ = {bits[id(f)]:.4g} bits beyond ε = {max(r.epsilon for r in reached):g}" \
            if f.found and len(reached) > 1 else ""
        print(f"{ckpt.ref}: λ({f.epsilon:g}) = {f.llc_mean:.4g} ± {f.llc_std_error:.2g} at nβ = {f.n_beta:.4g} "
              f"(E[ΔL] = {f.excess_loss:.3g}{code}){flags}")


@llc_app.command("calibrate", help=f"Sweep step size × nβ on one checkpoint and recommend a setting. {EMBEDDED}")
def calibrate(ref: str = typer.Argument(..., help="MODEL_ID@REVISION or a local directory."),
              experiment_file: Optional[Path] = typer.Option(None, "--experiment", help=EXPERIMENT_HELP),
              set_: list[str] = typer.Option([], "--set", help=SET_HELP),
              as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
              sampler: Optional[str] = SAMPLER_FLAGS["sampler"],
              localization: Optional[float] = SAMPLER_FLAGS["localization"],
              num_chains: Optional[int] = SAMPLER_FLAGS["num_chains"],
              num_draws: Optional[int] = SAMPLER_FLAGS["num_draws"],
              num_burnin: Optional[int] = SAMPLER_FLAGS["num_burnin"],
              batch_size: Optional[int] = SAMPLER_FLAGS["batch_size"], seed: Optional[int] = SAMPLER_FLAGS["seed"],
              parameters: list[str] = SAMPLER_FLAGS["parameters"],
              plot: Path = typer.Option(Path("llc-calibration.png"), help="Where to draw the sweep.")):
    from rich.progress import Progress

    from mdl_slt.llc.calibrate import N_BETAS, STEP_SIZES, as_rows, plot_sweep, recommend, run_sweep

    chosen = experiment(experiment_file, set_)
    base = _settings(chosen, sampler=sampler, localization=localization, num_chains=num_chains, num_draws=num_draws,
                     num_burnin=num_burnin, batch_size=batch_size, seed=seed, parameters=parameters or None)
    ckpt, tokens = load(ref, chosen)
    with Progress(console=console, transient=True) as bars:
        task = bars.add_task("calibrating", total=len(STEP_SIZES) * len(N_BETAS))
        settings = run_sweep(ckpt.model, tokens.train, base, progress=lambda: bars.advance(task))
    best = recommend(settings)
    plot_sweep(settings, best, plot)
    if as_json:
        print_json({"ref": str(ckpt.ref), "settings": as_rows(settings), "plot": str(plot),
                    "recommended": None if best is None else {"step_size": best.step_size, "n_beta": best.n_beta}})
        return
    print(f"{'nβ':>6} {'step':>8} {'λ̂':>9} {'s.e.':>7} {'R̂':>6} {'drift':>6}  stable")
    for s in settings:
        print(f"{s.n_beta:6g} {s.step_size:8.0e} {s.llc_mean:9.2f} {s.llc_std_error:7.2f} {s.r_hat:6.2f} "
              f"{s.drift:6.2f}  {'yes' if s.stable else 'no' + (f' ({s.diverged} diverged)' if s.diverged else '')}")
    if best is None:
        raise UserError("no stable setting in the sweep: lower the step sizes, or raise --num-draws")
    print(f"recommended: step_size {best.step_size:g}, n_beta {best.n_beta:g} (λ̂ {best.llc_mean:.2f}); plot {plot}")
