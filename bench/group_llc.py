"""What a weight group's refined λ̂ costs against the whole model's, on the embedded suite.

    python bench/group_llc.py [--models 90k 230k 530k] [--steps 100] [--revision step1000]

At the main job's settings (4 chains, minibatches of 8 sequences of 64 tokens, SGLD, the chain-by-
chain runner of a CPU), per model: ms per chain-step sampling the whole model, then each weight
group alone (gradients of that group only, every other parameter held at w*), each timed over
`--steps` steps per chain after a warm-up block, and the ratio of each to the whole model's. A
group's chain still runs the whole forward and the backward down to the group's first matrix:
the saving is the weight gradients of the other groups and the update of their parameters.
Needs the suite (`mdl-slt suite build`).
"""

from __future__ import annotations

import argparse
import time

import torch

from compressors.groups import weight_groups
from mdl_slt.data.tokens import DataConfig, token_sets
from mdl_slt.home.paths import resolve_home
from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.sampling import sample
from mdl_slt.models.checkpoints import load_checkpoint

SETTINGS = LLCConfig(step_size=3e-4, n_beta=30, localization=300, num_chains=4, batch_size=8, num_burnin=0)


def per_step(model, tokens, parameters, steps: int) -> float:
    """ms per chain-step of `steps` fixed steps per chain, after a warm-up of 20."""
    config = SETTINGS.model_copy(update={"parameters": parameters})
    sample(model, tokens, config.model_copy(update={"num_draws": 20}))
    start = time.perf_counter()
    sample(model, tokens, config.model_copy(update={"num_draws": steps}))
    return (time.perf_counter() - start) / (steps * SETTINGS.num_chains) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["90k", "230k", "530k"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--revision", default="step1000")
    args = parser.parse_args()
    torch.set_num_threads(1)
    home = resolve_home(None)
    for size in args.models:
        ckpt = load_checkpoint(f"mdl-slt/micro-pythia-{size}@{args.revision}", home)
        tokens = token_sets(home, ckpt.tokenizer, DataConfig(context_length=64)).train
        whole = per_step(ckpt.model, tokens, None, args.steps)
        print(f"micro-pythia-{size}@{args.revision}: whole model ({ckpt.num_params:,} parameters) {whole:.2f} ms per "
              "chain-step")
        for group in weight_groups(ckpt.model):
            own = per_step(ckpt.model, tokens, [n for n, _ in group.params], args.steps)
            print(f"  {group.name:18s} d_g {group.size:>9,d}  {own:6.2f} ms  {own / whole:5.2f}× the whole model's")


if __name__ == "__main__":
    main()
