"""The LLC estimator against ground truth from 1k to 1M parameters: random deep linear networks
(Aoyagi's closed form), log-spaced in size, 2–5 layers, random ranks.

Recommended settings (the README's, `SETTINGS["baoab"]`): inputs x ~ N(0, I), noiseless targets,
n = 10⁶ samples given exactly by their second moment (`deep_linear_task(exact=True)`: every step
sees the whole n-sample loss, at the cost of a batch of H_1 rows), nβ = n/log n, γ = 100,
underdamped Langevin (`sampler: baoab`, friction 10√γ) with `step_size: auto`
(η·(nβ·λ_max + γ) = 0.3, h = √η), 4 chains sampled until R̂ ≤ 1.05, ESS ≥ 100 and four
relaxation times (at most 40,000 steps), the burn-in read from the trace. `--sampler sgld` runs the previous
recommendation for comparison: SGLD on the n samples in minibatches of 500, γ = 300 (at most
160,000 steps); its chains relax over ~1/(ε·γ) steps, 10⁴–10⁵ here (README).

Prints one row per network, with its drift (`LLCResult.drift`: the chains' mean level in the
second half of the draws against the first, relative to λ̂; positive while they still climb),
then the mean and worst relative error and whether the targets hold (mean ≤ 5%, worst ≤ 10%,
every R̂ ≤ 1.1).

    python bench/llc_accuracy.py [--only 0 1 2] [--sampler sgld] [--localization 30] [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.ground_truth import deep_linear, deep_linear_cases, deep_linear_task
from mdl_slt.llc.sampling import estimate_llc

SAMPLES = 1_000_000
_COMMON = dict(step_size="auto", num_chains=4, block=500, target_r_hat=1.05, target_ess=100)
SETTINGS = {  # exact gradients for baoab: batch_size is set to the data's rows
    "baoab": dict(_COMMON, sampler="baoab", localization=100.0, max_steps=40_000),
    "sgld": dict(_COMMON, sampler="sgld", localization=300.0, batch_size=500, max_steps=160_000),
}


def run_case(widths, rank, sampler: str = "baoab", samples: int = SAMPLES, device="cpu", **override):
    """λ̂ of one network at the settings of `sampler`: (result, Aoyagi's λ)."""
    exact = sampler == "baoab"
    model, (x, y), loss = deep_linear_task(widths, rank, samples, seed=1, exact=exact)
    settings = {**SETTINGS[sampler], "n_beta": samples / math.log(samples), **override}
    if exact:
        settings["batch_size"] = len(x)
    result = estimate_llc(model.to(device), (x.to(device), y.to(device)), LLCConfig(**settings), loss)
    return result, deep_linear(widths, rank)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=11)
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--sampler", default="baoab", choices=sorted(SETTINGS))
    parser.add_argument("--localization", type=float, help="γ [default: the sampler's setting]")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", type=int, nargs="*", help="indices of the cases to run")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    override = {k: v for k, v in (("localization", args.localization), ("max_steps", args.max_steps))
                if v is not None}
    config = LLCConfig(**{**SETTINGS[args.sampler], **override})
    gradients = "exact gradients" if args.sampler == "baoab" else f"minibatches of {config.batch_size}"
    print(f"{args.cases} deep linear networks, n = {args.samples:,}, γ = {config.localization:g}, {config.sampler}, "
          f"{gradients}, {config.num_chains} chains, {config.budget_text}; {args.device}, {args.threads} thread(s)")
    print(f"{'widths':28s} {'rank':>4s} {'d':>9s} {'λ (Aoyagi)':>11s} {'λ̂':>18s} {'error':>7s} {'R̂':>6s} {'ESS':>5s} "
          f"{'drift':>6s} {'steps':>6s} {'ε':>8s} {'time':>6s}")
    errors, hats = [], []
    for i, (widths, rank) in enumerate(deep_linear_cases(args.cases)):
        if args.only is not None and i not in args.only:
            continue
        start = time.perf_counter()
        result, truth = run_case(widths, rank, args.sampler, args.samples, args.device, **override)
        elapsed = time.perf_counter() - start
        error = (result.llc_mean - truth) / truth
        errors.append(abs(error))
        hats.append(result.r_hat)
        print(f"{'-'.join(map(str, widths)):28s} {rank:4d} {result.num_params:9,d} {truth:11,.1f} "
              f"{result.llc_mean:10,.1f} ± {result.llc_std_error:5.1f} {error:+7.1%} {result.r_hat:6.3f} "
              f"{result.ess:5.0f} {result.drift:+6.1%} {result.steps:6d} {result.config['step_size']:8.2g} "
              f"{elapsed:5.0f}s", flush=True)
    mean, worst = sum(errors) / len(errors), max(errors)
    holds = mean <= 0.05 and worst <= 0.10 and all(h <= 1.1 for h in hats)
    print(f"mean relative error {mean:.1%}, worst {worst:.1%}, worst R̂ {max(hats):.3f}: "
          f"targets (≤ 5%, ≤ 10%, R̂ ≤ 1.1) {'hold' if holds else 'DO NOT HOLD'}")


if __name__ == "__main__":
    main()
