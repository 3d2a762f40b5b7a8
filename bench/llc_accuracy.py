"""The LLC estimator against ground truth from 1k to 1M parameters: random deep linear networks
(Aoyagi's closed form), log-spaced in size, 2–5 layers, random ranks.

Settings (the README's recommendation for such models): inputs x ~ N(0, I) and noiseless
targets, n = 10⁶ samples, nβ = n/log n, γ = 300, SGLD with `step_size: auto`
(ε·(nβ·λ_max + γ) = 0.3), batch 500, 4 chains sampled until R̂ ≤ 1.05 and ESS ≥ 100 (at most
160,000 steps), the burn-in read from the trace. A weak localization (γ = 1) leaves the chains
drifting for millions of steps; a strong one at a small n holds them below λ (README).

Prints one row per network, with its drift (`LLCResult.drift`: the chains' mean level in the
second half of the draws against the first, relative to λ̂; positive while they still climb),
then the mean and worst relative error and whether the targets hold (mean ≤ 5%, worst ≤ 10%,
every R̂ ≤ 1.1).

    python bench/llc_accuracy.py [--only 0 1 2] [--samples 100000] [--localization 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from mdl_slt.ground_truth import deep_linear, deep_linear_cases, deep_linear_task
from mdl_slt.sgld import LLCConfig, estimate_llc

SAMPLES = 1_000_000
SETTINGS = dict(step_size="auto", n_beta="auto", localization=300.0, num_chains=4, batch_size=500, block=500,
                target_r_hat=1.05, target_ess=100, max_steps=160_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=11)
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--max-steps", type=int, default=SETTINGS["max_steps"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", type=int, nargs="*", help="indices of the cases to run")
    parser.add_argument("--sampler", default="sgld", choices=["sgld", "rmsprop"])
    parser.add_argument("--localization", type=float, default=SETTINGS["localization"], help="γ")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = LLCConfig(**{**SETTINGS, "sampler": args.sampler, "max_steps": args.max_steps,
                          "localization": args.localization})
    device = torch.device(args.device)
    print(f"{args.cases} deep linear networks, n = {args.samples:,}, γ = {config.localization:g}, {config.sampler}, "
          f"{config.num_chains} chains, {config.budget_text}; {device}, {args.threads} thread(s)")
    print(f"{'widths':28s} {'rank':>4s} {'d':>9s} {'λ (Aoyagi)':>11s} {'λ̂':>18s} {'error':>7s} {'R̂':>6s} {'ESS':>5s} "
          f"{'drift':>6s} {'steps':>6s} {'ε':>8s} {'time':>6s}")
    errors, hats = [], []
    for i, (widths, rank) in enumerate(deep_linear_cases(args.cases)):
        if args.only is not None and i not in args.only:
            continue
        model, (x, y), loss = deep_linear_task(widths, rank, args.samples, seed=1)
        model, data = model.to(device), (x.to(device), y.to(device))
        truth = deep_linear(widths, rank)
        start = time.perf_counter()
        result = estimate_llc(model, data, config, loss)
        elapsed = time.perf_counter() - start
        error = (result.llc_mean - truth) / truth
        errors.append(abs(error))
        hats.append(result.r_hat)
        print(f"{'-'.join(map(str, widths)):28s} {rank:4d} {result.num_params:9,d} {truth:11,.1f} "
              f"{result.llc_mean:10,.1f} ± {result.llc_std_error:5.1f} {error:+7.1%} {result.r_hat:6.3f} "
              f"{result.ess:5.0f} {result.drift:+6.1%} {result.steps:6d} {result.config['step_size']:8.2g} {elapsed:5.0f}s", flush=True)
    mean, worst = sum(errors) / len(errors), max(errors)
    holds = mean <= 0.05 and worst <= 0.10 and all(h <= 1.1 for h in hats)
    print(f"mean relative error {mean:.1%}, worst {worst:.1%}, worst R̂ {max(hats):.3f}: "
          f"targets (≤ 5%, ≤ 10%, R̂ ≤ 1.1) {'hold' if holds else 'DO NOT HOLD'}")


if __name__ == "__main__":
    main()
