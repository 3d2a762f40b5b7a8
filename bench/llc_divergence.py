"""The divergence check on a language model: the case that used to pass unflagged, and its
false-alarm rate on healthy chains.

1. micro-pythia-90k@step1000 at step size 1e-2 (its chains' loss sits at 15–26 nats, far above a
   uniform prediction's 6.93): every chain must be flagged.
2. The main job's sampler (experiments/demo.yaml) on the last checkpoint of each model, where the
   loss is sharpest (λ_max grows over training) and a false alarm most likely, over 20 seeds each:
   no chain may be flagged.

    python bench/llc_divergence.py [--home DIR] [--seeds 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from mdl_slt.data.tokens import token_sets
from mdl_slt.home.paths import resolve_home
from mdl_slt.llc.sampling import sample
from mdl_slt.models.checkpoints import load_checkpoint
from mdl_slt.plan.experiment import load_experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    home = resolve_home(args.home)
    demo = load_experiment("experiments/demo.yaml")
    ckpt = load_checkpoint("mdl-slt/micro-pythia-90k@step1000", home)
    tokens = token_sets(home, ckpt.tokenizer, demo.data)
    destroyed = sample(ckpt.model, tokens.train, demo.llc.model_copy(update={"step_size": 1e-2, "num_draws": 100,
                                                                             "num_burnin": 0}))
    print(f"micro-pythia-90k@step1000 at step 1e-2: {len(destroyed.diverged)} of {demo.llc.num_chains} chains flagged: "
          f"{sorted(set(destroyed.diverged.values()))}")
    flagged = runs = 0
    start = time.perf_counter()
    for entry in demo.models:
        for revision in entry.revisions[-1:]:
            ckpt = load_checkpoint(f"{entry.id}@{revision}", home)
            tokens = token_sets(home, ckpt.tokenizer, demo.data)
            here = 0
            for seed in range(args.seeds):
                trace = sample(ckpt.model, tokens.train, demo.llc.model_copy(update={"seed": seed}))
                here += len(trace.diverged)
                runs += 1
            flagged += here
            print(f"  {entry.id}@{revision}: {here} chains flagged over {args.seeds} seeds × {demo.llc.num_chains} "
                  f"chains", flush=True)
    print(f"false alarms at the main job's settings: {flagged} of {runs * demo.llc.num_chains} chains "
          f"({runs} runs, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
