"""Milliseconds per chain-step of the LLC's runners on the embedded suite, side by side.

    python bench/chain_step.py [--models 90k 530k] [--steps 200] [--revision step1000]

At the main job's settings (experiments/demo.yaml: 4 chains, minibatches of 8 sequences of 64
tokens, SGLD), on each model's checkpoint: the eager chain-by-chain runner (the default on a CPU),
the compiled chain-by-chain runner (`compile: true`), and the vmapped chains (eager attention)
eager and compiled, and the chains stacked along a leading dimension through a hand-written
GPT-NeoX forward (batched matrix products with per-chain weights: one dispatch per operation for
all chains; it matches the model's loss to 5e-7 and its gradients to 3e-7). Each is timed over
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

from mdl_slt.data.tokens import DataConfig, token_sets
from mdl_slt.home.paths import resolve_home
from mdl_slt.llc.batches import minibatches
from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.samplers import SAMPLERS
from mdl_slt.llc.sampling import sample
from mdl_slt.models.checkpoints import load_checkpoint

RUNNERS = {"chain by chain, eager": {"compile": False, "vectorize": "never"},
           "chain by chain, compiled": {"compile": True, "vectorize": "never"},
           "vmapped, eager": {"compile": False, "vectorize": "always"},
           "vmapped, compiled": {"compile": True, "vectorize": "always"},
           "stacked, hand-written": None}


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


def neox_losses(config, params: dict, tokens):
    """Each chain's mean next-token NLL, (C,), of a GPT-NeoX model with parallel residuals and
    partial rotary embeddings, from parameters stacked along a leading chain dimension C and
    tokens (C, B, T): the Hugging Face forward written as batched products."""
    import torch.nn.functional as F

    chains, batch, length = tokens.shape
    width, heads = config.hidden_size, config.num_attention_heads
    head = width // heads
    rotary = int(head * config.rope_parameters.get("partial_rotary_factor", 1.0))
    inverse = 1.0 / config.rope_parameters["rope_theta"] ** (torch.arange(0, rotary, 2).float() / rotary)
    angles = torch.arange(length).float()[:, None] * inverse
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()

    def linear(x, name):
        return torch.baddbmm(params[name + ".bias"].unsqueeze(1), x, params[name + ".weight"].transpose(1, 2))

    def norm(x, name):
        x = F.layer_norm(x, (width,), eps=config.layer_norm_eps)
        return x * params[name + ".weight"].unsqueeze(1) + params[name + ".bias"].unsqueeze(1)

    def rope(x):
        turned, kept = x[..., :rotary], x[..., rotary:]
        half = rotary // 2
        rotated = torch.cat((-turned[..., half:], turned[..., :half]), -1)
        return torch.cat((turned * cos + rotated * sin, kept), -1)

    h = params["gpt_neox.embed_in.weight"][torch.arange(chains)[:, None, None], tokens].flatten(1, 2)
    for i in range(config.num_hidden_layers):
        layer = f"gpt_neox.layers.{i}."
        qkv = linear(norm(h, layer + "input_layernorm"), layer + "attention.query_key_value")
        q, k, v = qkv.view(chains * batch, length, heads, 3 * head).transpose(1, 2).chunk(3, dim=-1)
        mixed = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
        attention = linear(mixed.transpose(1, 2).reshape(chains, batch * length, width), layer + "attention.dense")
        up = F.gelu(linear(norm(h, layer + "post_attention_layernorm"), layer + "mlp.dense_h_to_4h"))
        h = h + attention + linear(up, layer + "mlp.dense_4h_to_h")
    h = norm(h, "gpt_neox.final_layer_norm")
    logits = torch.bmm(h, params["lm_head.weight"].transpose(1, 2)).view(chains, batch, length, -1)[:, :, :-1]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, :, 1:].reshape(-1), reduction="none")
    return nll.view(chains, -1).mean(1)


def stacked(model, tokens, config: LLCConfig, steps: int) -> float:
    """Seconds for `steps` SGLD steps of all chains through `neox_losses`."""
    names = [n for n, _ in model.named_parameters()]
    anchor = [p.detach().unsqueeze(0) for _, p in model.named_parameters()]
    chains = [a.expand(config.num_chains, *a.shape[1:]).clone().requires_grad_(True) for a in anchor]
    update = SAMPLERS[config.sampler](anchor, config, config.n_beta)
    gens = [torch.Generator().manual_seed(c) for c in range(config.num_chains)]
    picks = torch.stack([minibatches(len(tokens), config.batch_size, steps, g) for g in gens], dim=1)
    start = time.perf_counter()
    for t in range(steps):
        losses = neox_losses(model.config, dict(zip(names, chains)), tokens[picks[t]])
        grads = torch.autograd.grad(losses.sum(), chains)
        with torch.no_grad():
            update.step(chains, list(grads), gens)
    return time.perf_counter() - start


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
            if settings is None:
                warm = stacked(ckpt.model, tokens, base, 25)
                ms = stacked(ckpt.model, tokens, base, args.steps) / (args.steps * base.num_chains) * 1000
                print(f"micro-pythia-{size:5s} {label:26s} {warm:9.1f} {ms:13.2f} {eager / ms if eager else 0:8.2f}×",
                      flush=True)
                continue
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
