"""Milliseconds per chain-step of the LLC's runners on the embedded suite, side by side.

    python bench/chain_step.py [--models 90k 530k] [--steps 200] [--revision step1000]

At the main job's settings (experiments/demo.yaml: 4 chains, minibatches of 8 sequences of 64
tokens, SGLD), on each model's checkpoint: the eager chain-by-chain runner (the default on a CPU),
the compiled chain-by-chain runner (`compile: true`), and the vmapped chains (eager attention)
eager and compiled. Each is timed over
`--steps` steps per chain after a warm-up of one block, whose time is printed apart (for the
compiled runners it holds the compile: the first in this process, and from torch's on-disk
cache after that). Prints ms per chain-step and the ratio of each to the eager chain-by-chain
runner, and the compute floor: the floating-point operations of one forward and backward on a
minibatch (torch's FLOP counter) at this core's rate on a large fp32 matrix product, the time no
runner of the same model can beat on it. Needs the suite (`mdl-slt suite build`).
"""

from __future__ import annotations

import argparse
import time

import torch

from mdl_slt.checkpoints import load_checkpoint
from mdl_slt.data import DataConfig, token_sets
from mdl_slt.home import resolve_home
from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.sampling import sample

RUNNERS = {"chain by chain, eager": {"compile": False, "vectorize": "never"},
           "chain by chain, compiled": {"compile": True, "vectorize": "never"},
           "vmapped, eager": {"compile": False, "vectorize": "always"},
           "vmapped, compiled": {"compile": True, "vectorize": "always"}}


def matmul_rate(size: int = 768, repeats: int = 20) -> float:
    """This core's fp32 matrix-product rate, FLOP/s, the best of `repeats`."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def step_flops(model, tokens, batch_size: int = 8) -> int:
    """FLOPs of one forward and backward of the model's loss on a minibatch."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = tokens[:batch_size]
    with FlopCounterMode(display=False) as counter:
        model(input_ids=batch, labels=batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["90k", "230k", "530k"])
    parser.add_argument("--revision", default="step1000")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    home = resolve_home(None)
    base = LLCConfig(step_size=3e-4, n_beta=30, localization=300, num_chains=4, batch_size=8, num_burnin=0)
    rate = matmul_rate()
    print(f"this core: {rate / 1e9:.1f} GFLOP/s on a 768² fp32 matrix product")
    print(f"{'model':18s} {'runner':26s} {'warm-up s':>9s} {'ms/chain-step':>13s} {'vs eager':>9s}")
    for size in args.models:
        ckpt = load_checkpoint(f"mdl-slt/micro-pythia-{size}@{args.revision}", home)
        tokens = token_sets(home, ckpt.tokenizer, DataConfig(context_length=64, eval_sequences=64,
                                                             llc_sequences=256)).train
        flops = step_flops(ckpt.model, tokens)
        floor = flops / rate * 1000
        eager = None
        for label in args.runners:
            settings = RUNNERS[label]
            start = time.perf_counter()
            sample(ckpt.model, tokens, base.model_copy(update={**settings, "num_draws": 25}))
            warm = time.perf_counter() - start
            trace = sample(ckpt.model, tokens, base.model_copy(update={**settings, "num_draws": args.steps}))
            ms = trace.elapsed_s / (args.steps * base.num_chains) * 1000
            eager = ms if label == "chain by chain, eager" else eager
            ratio = f"{eager / ms:8.2f}×" if eager else "        –"
            print(f"micro-pythia-{size:5s} {label:26s} {warm:9.1f} {ms:13.2f} {ratio}", flush=True)
        print(f"micro-pythia-{size:5s} {'compute floor':26s} {'':9s} {floor:13.2f} {eager / floor if eager else 0:8.2f}×  "
              f"({flops / 1e6:.0f} MFLOP per forward + backward)", flush=True)


if __name__ == "__main__":
    main()
