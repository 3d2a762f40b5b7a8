"""Are λ̂'s stated standard errors honest on a language model? One checkpoint, many sampler seeds.

    python bench/llc_seeds.py [--ref mdl-slt/micro-pythia-90k@step1000] [--seeds 20] [--workers 2]

At the main job's LLC settings (experiments/demo.yaml), λ̂ is estimated with seeds 0 … N−1 (the
seed draws the chains' noise and minibatches); prints each estimate with its stated standard error
and the chains the divergence check flagged, then the spread of λ̂ across seeds (sample standard
deviation) against the root-mean-square stated error: a ratio near 1 means the errors are honest,
above 1 optimistic, below 1 conservative.
Needs the suite (`mdl-slt suite build`).
"""

from __future__ import annotations

import argparse
import math
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).parent.parent


class Estimate(NamedTuple):
    seed: int
    llc: float
    se: float
    r_hat: float
    flagged: list[int]  # the chains the divergence check stopped


def estimate(ref: str, seed: int) -> Estimate:
    from mdl_slt.home.paths import resolve_home
    from mdl_slt.plan.experiment import load_experiment
    from mdl_slt.plan.units import resolve_device
    from mdl_slt.run.measure import load, measure_llc

    demo = resolve_device(load_experiment(ROOT / "experiments" / "demo.yaml"))
    ckpt, tokens = load(ref, demo, resolve_home(None))
    result = measure_llc(ckpt, tokens, demo.llc.model_copy(update={"seed": seed}))
    return Estimate(seed, result.llc_mean, result.llc_std_error, result.r_hat, result.diverged_chains)


def seed_spread(ref: str, seeds: int, workers: int = 2) -> dict:
    """Each seed's Estimate, the standard deviation of λ̂ across seeds, the RMS stated error, their ratio."""
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        found = sorted(pool.map(estimate, [ref] * seeds, range(seeds)))
    values = [e.llc for e in found]
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    stated = math.sqrt(sum(e.se**2 for e in found) / len(found))
    return {"estimates": found, "mean": mean, "spread": spread, "stated": stated, "ratio": spread / stated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="mdl-slt/micro-pythia-90k@step1000")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    figures = seed_spread(args.ref, args.seeds, args.workers)
    for e in figures["estimates"]:
        print(f"seed {e.seed:3d}: λ̂ = {e.llc:8.3f} ± {e.se:.3f}  (R̂ {e.r_hat:.3f}; chains flagged: {e.flagged or 'none'})")
    print(f"{args.ref}, {args.seeds} seeds: mean λ̂ {figures['mean']:.3f}; spread across seeds {figures['spread']:.3f}; "
          f"stated standard error (RMS) {figures['stated']:.3f}; ratio {figures['ratio']:.2f}")


if __name__ == "__main__":
    main()
