"""Pythia at real size: loss-evaluation throughput, SGLD step time and peak memory, one critical search.

Randomly initialised models with Pythia's exact configurations (`mdl_slt.models.pythia.config`), so no
hub is needed; fp32 parameters, bf16 autocast on CUDA. Prints one row per size.

    python bench/pythia_scale.py --sizes 160m 410m 1.4b        # on a GPU
    python bench/pythia_scale.py --sizes 14m --device cpu      # the same path on this machine
"""

from __future__ import annotations

import argparse
import time

import torch

import compressors
from mdl_slt.compute.device import eval_batch_size, resolve_device
from mdl_slt.compute.loss import evaluate_loss
from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.sampling import estimate_llc
from mdl_slt.measures.critical import find_critical
from mdl_slt.models import pythia


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["410m", "1.4b"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--eval-sequences", type=int, default=64)
    parser.add_argument("--sgld-steps", type=int, default=20)
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; context {args.context}; bf16 autocast: {device == 'cuda'}")
    for size in args.sizes:
        measure(size, args, device)
        if device == "cuda":
            torch.cuda.empty_cache()


def measure(size: str, args, device: str) -> None:
    """One row: evaluation throughput, SGLD step time and peak memory, one critical search."""
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(pythia.config(size)).to(device).eval()
    vocab = model.config.vocab_size
    tokens = torch.randint(vocab, (args.eval_sequences, args.context))
    batch = eval_batch_size(model, args.context)
    evaluate_loss(model, tokens[:batch])  # warm-up
    sync(device)
    start = time.perf_counter()
    base = evaluate_loss(model, tokens)
    sync(device)
    throughput = tokens.numel() / (time.perf_counter() - start)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    config = LLCConfig(preset="pythia", num_chains=1, num_draws=args.sgld_steps, num_burnin=0)
    result = estimate_llc(model, torch.randint(vocab, (256, args.context)), config)
    step_ms = 1000 / result.steps_per_second
    sgld_peak = peak_gib(device)

    start = time.perf_counter()
    rtn = compressors.get("rtn")
    prepared = rtn.prepare(model, tokens)

    def loss_at(value: float) -> float:
        with rtn.applied(model, prepared, value):
            return evaluate_loss(model, tokens)

    search = find_critical(loss_at, base, [0.05], rtn.knob, 0.05, lambda v: rtn.snap(v, prepared),
                           rtn.levels(prepared))
    sync(device)
    print(f"pythia-{size}: {sum(p.numel() for p in model.parameters()):,} params; eval {throughput:,.0f} tokens/s "
          f"(batch {batch}); SGLD step {step_ms:.0f} ms at batch 32 × {args.context} (peak {sgld_peak:.1f} GiB, "
          f"step size {result.config['step_size']:g}); critical rtn ε=0.05: {search.points[0].value} bits in "
          f"{search.num_evaluations} evaluations, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
