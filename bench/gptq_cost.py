"""GPTQ: its loss against round-to-nearest on micro-suite checkpoints, and the cost of `prepare`,
block by block against the way before 0.3 (a forward pass through the whole model per layer,
hooks catching that layer's inputs), side by side, with the Hessians checked equal.

    python bench/gptq_cost.py [--home DIR] [--skip-160m]
"""

from __future__ import annotations

import argparse
import time

import torch

import compressors
from compressors import layout
from compressors.calibration import collect_statistics
from mdl_slt.compute.loss import evaluate_loss

REFS = ["mdl-slt/micro-pythia-90k@step1000", "mdl-slt/micro-pythia-230k@step1000", "mdl-slt/micro-pythia-530k@step1000"]


def hessians_per_layer(model, targets, calibration) -> dict:
    """The quadratic way: for each decoder layer, a forward pass through the whole model."""
    blocks = layout.blocks(model)
    owner = {id(p): i for i, b in enumerate(blocks) for p in b.parameters()}
    found = {}
    for i in sorted({owner.get(id(t.param), -1) for t in targets}):
        sums, hooks = {}, []
        for t in (t for t in targets if owner.get(id(t.param), -1) == i):
            def add(module, args, name=t.name):
                x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
                total, count = sums.get(name, (0, 0))
                sums[name] = (total + x.T @ x, count + x.shape[0])
            hooks.append(t.module.register_forward_pre_hook(add))
        with torch.inference_mode():
            for batch in calibration.split(16):
                model(input_ids=batch, use_cache=False)
        for hook in hooks:
            hook.remove()
        found.update({name: 2 * total / count for name, (total, count) in sums.items()})
    return found


def prepare_cost(name: str, model, calibration) -> None:
    gptq = compressors.get("gptq")
    prepared = gptq.prepare(model, calibration[:2])  # the targets; Hessians collected below
    start = time.perf_counter()
    ours = {}
    collect_statistics(model, prepared.targets, calibration, lambda found: ours.update(
        {name: s.hessian for name, s in found.items()}))
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    before = hessians_per_layer(model, prepared.targets, calibration)
    before_s = time.perf_counter() - start
    worst = max(float((ours[k] - before[k]).abs().max() / before[k].abs().max()) for k in before)
    print(f"{name}: {len(layout.blocks(model))} layers, {len(calibration)} calibration sequences × "
          f"{calibration.shape[1]} tokens: Hessians block by block {ours_s:.1f} s, a full pass per layer "
          f"{before_s:.1f} s ({before_s / ours_s:.1f}× faster); largest relative difference {worst:.1e}")


def loss_against_rtn(home) -> None:
    from mdl_slt.data.tokens import DataConfig, token_sets
    from mdl_slt.models.checkpoints import load_checkpoint

    for ref in REFS:
        ckpt = load_checkpoint(ref, home)
        tokens = token_sets(home, ckpt.tokenizer, DataConfig())
        base = evaluate_loss(ckpt.model, tokens.eval)
        gptq = compressors.get("gptq")
        start = time.perf_counter()
        prepared = gptq.prepare(ckpt.model, tokens.train)
        prepare_s = time.perf_counter() - start
        rtn = compressors.get("rtn", granularity="channel", targets=list(gptq.targets))
        rtn_prepared = rtn.prepare(ckpt.model)
        for bits in (3.0, 4.0):
            start = time.perf_counter()
            with gptq.applied(ckpt.model, prepared, bits):
                apply_s = time.perf_counter() - start
                gptq_loss = evaluate_loss(ckpt.model, tokens.eval)
            with rtn.applied(ckpt.model, rtn_prepared, bits):
                rtn_loss = evaluate_loss(ckpt.model, tokens.eval)
            print(f"{ref} {bits:g} bits: gptq +{gptq_loss - base:.4f}, rtn per channel +{rtn_loss - base:.4f} nats; "
                  f"prepare {prepare_s:.2f} s, per bit width {apply_s:.2f} s")
        prepare_cost(ref, ckpt.model, tokens.train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None)
    parser.add_argument("--skip-160m", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from mdl_slt.home.paths import resolve_home

    loss_against_rtn(resolve_home(args.home))
    if not args.skip_160m:
        from transformers import GPTNeoXForCausalLM

        from mdl_slt.models import pythia

        torch.manual_seed(0)
        model = GPTNeoXForCausalLM(pythia.config("160m")).eval()
        calibration = torch.randint(model.config.vocab_size, (32, 128), generator=torch.Generator().manual_seed(0))
        prepare_cost("Pythia-160m configuration (random weights)", model, calibration)


if __name__ == "__main__":
    main()
