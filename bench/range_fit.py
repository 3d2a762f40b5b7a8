"""The quantization range fit, fast against exhaustive, side by side.

1. On a randomly initialised model with Pythia-70m's configuration (70.4M parameters): seconds per
   bit width of `rtn`'s range fit (per-tensor scales, clip ratio by weight error) with the fast
   search (coarse then fine, on ≤ 69,632 weights per group) and the exhaustive one (50 ratios on
   every weight, as before 0.3), the squared error of the grids they choose, and one loss
   evaluation for scale.
2. On micro-suite checkpoints: the critical bits of `rtn` at ε = 0.02, 0.05, 0.1 with each search.

    python bench/range_fit.py [--home DIR] [--skip-70m]
"""

from __future__ import annotations

import argparse
import time

import torch

import compressors
from compressors.grid import as_groups, fit_grid
from mdl_slt.compute.loss import evaluate_loss
from mdl_slt.measures.critical import find_critical

REFS = ["mdl-slt/micro-pythia-90k@step1000", "mdl-slt/micro-pythia-230k@step500", "mdl-slt/micro-pythia-530k@step250"]


def pythia_70m():
    from transformers import GPTNeoXForCausalLM

    from mdl_slt.models import pythia

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(pythia.config("70m")).eval()
    tokens = torch.randint(model.config.vocab_size, (64, 128), generator=torch.Generator().manual_seed(0))
    return model, tokens


def range_fit_times(model, tokens) -> None:
    method = compressors.get("rtn")
    prepared = method.prepare(model)
    start = time.perf_counter()
    evaluate_loss(model, tokens)
    loss_s = time.perf_counter() - start
    count = sum(t.original.numel() for t in prepared.targets)
    print(f"Pythia-70m configuration: {sum(p.numel() for p in model.parameters()):,} parameters, {count:,} quantized "
          f"in {len(prepared.targets)} tensors; one loss evaluation (64 × 128 tokens) {loss_s:.1f} s")
    for bits, levels in ((4.0, 16), (8.0, 256)):
        times, errors = {}, {}
        for search in ("exhaustive", "fast"):
            start = time.perf_counter()
            error = 0.0
            for t in prepared.targets:
                (groups,) = as_groups(t.matrix(), "tensor", 128)
                grid = fit_grid(groups, levels, True, 50, search)
                error += float(((grid.decode(grid.encode(groups)) - groups) ** 2).sum())
            times[search], errors[search] = time.perf_counter() - start, error
        print(f"  {bits:g} bits: range fit exhaustive {times['exhaustive']:.1f} s, fast {times['fast']:.2f} s "
              f"({times['exhaustive'] / times['fast']:.0f}× faster; against the loss evaluation "
              f"{times['fast'] / loss_s:.2f}×); squared error fast / exhaustive {errors['fast'] / errors['exhaustive']:.5f}")


def critical_bits(home) -> None:
    from mdl_slt.data.tokens import DataConfig, token_sets
    from mdl_slt.models.checkpoints import load_checkpoint

    same = total = 0
    for ref in REFS:
        ckpt = load_checkpoint(ref, home)
        tokens = token_sets(home, ckpt.tokenizer, DataConfig())
        base = evaluate_loss(ckpt.model, tokens.eval)
        found = {}
        for search in ("exhaustive", "fast"):
            method = compressors.get("rtn", range_search=search)
            prepared = method.prepare(ckpt.model, tokens.train)

            def loss_at(value):
                with method.applied(ckpt.model, prepared, value):
                    return evaluate_loss(ckpt.model, tokens.eval)

            result = find_critical(loss_at, base, [0.02, 0.05, 0.1], method.knob, method.knob.precision,
                                   lambda v: method.snap(v, prepared), method.levels(prepared))
            found[search] = [(p.value, p.interpolated) for p in result.points]
        for (ex, ex_i), (fa, fa_i), eps in zip(found["exhaustive"], found["fast"], (0.02, 0.05, 0.1)):
            total += 1
            same += ex == fa
            print(f"  {ref} ε={eps:g}: critical bits exhaustive {ex:.3f} (interpolated {ex_i:.3f}), "
                  f"fast {fa:.3f} ({fa_i:.3f}){'' if ex == fa else '  DIFFERENT'}")
    print(f"critical bits identical at {same} of {total}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None)
    parser.add_argument("--skip-70m", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from mdl_slt.home.paths import resolve_home

    if not args.skip_70m:
        range_fit_times(*pythia_70m())
    critical_bits(resolve_home(args.home))


if __name__ == "__main__":
    main()
