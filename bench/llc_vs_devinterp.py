"""Our LLC estimator against the field's reference, devinterp 2.0.1, side by side, one thread each.

Same models, data and hyperparameters for both: a 10k-parameter MLP (teacher–student, noiseless
targets), a deep linear network at a rank-deficient truth, and a micro-suite GPT-NeoX checkpoint.
Prints ms per SGLD step for each and the ratio, the bare forward+backward time of one step (the
floor), and the estimates: ours (burn-in excluded), devinterp as it reports (burn-in averaged
in) and devinterp matched (its per-step trace with burn-in excluded), with whether ours and the
matched one agree within two standard errors.

    pip install devinterp==2.0.1   # or: pip install -e '.[bench]'
    python bench/llc_vs_devinterp.py [--home DIR]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # devinterp's per-chain progress bars

import torch

from mdl_slt.ground_truth import deep_linear_task
from mdl_slt.sgld import LLCConfig, estimate_llc, mse_loss

CHAINS, DRAWS, BURNIN = 4, 200, 50


def mlp_task(num_samples=4096, seed=0):
    """A 10.3k-parameter MLP at its teacher's parameters, noiseless regression targets."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(20, 100), torch.nn.Tanh(), torch.nn.Linear(100, 80), torch.nn.Tanh(),
                                torch.nn.Linear(80, 1))
    x = torch.randn(num_samples, 20, generator=gen)
    with torch.no_grad():
        y = model(x)
    return model, (x, y), mse_loss


def floor_ms(model, data, loss_fn, batch_size, repeats=50):
    """Bare forward + backward of one minibatch, the least one SGLD step can cost."""
    params = [p for p in model.parameters() if p.requires_grad]
    size = len(data[0]) if isinstance(data, tuple) else len(data)
    index = torch.arange(batch_size) % size
    batch = tuple(d[index] for d in data) if isinstance(data, tuple) else data[index]
    for _ in range(5):
        torch.autograd.grad(loss_fn(model, batch), params)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.autograd.grad(loss_fn(model, batch), params)
    return (time.perf_counter() - start) / repeats * 1000


def run_devinterp(model, data, loss_fn, config: LLCConfig):
    """devinterp.slt.llc on the same data: regression rows are handed over as row indices."""
    from datasets import Dataset
    from devinterp.slt.llc import llc

    if isinstance(data, tuple):
        rows = torch.arange(len(data[0]))
        ids = torch.stack([rows, rows], dim=1)  # (n, 2): a 'sequence' whose one predicted token is row i

        def per_token(net, input_ids):
            index = input_ids[:, 0]
            return (0.5 * ((net(data[0][index]) - data[1][index]) ** 2).sum(-1)).unsqueeze(1)
    else:
        ids = data

        def per_token(net, input_ids):
            logits = net(input_ids=input_ids).logits[:, :-1].float()
            return torch.nn.functional.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")

    dataset = Dataset.from_dict({"input_ids": ids.tolist()}).with_format("torch")
    start = time.perf_counter()
    result = llc(model, dataset, {}, lr=config.step_size, n_beta=config.n_beta, localization=config.localization,
                 num_chains=config.num_chains, num_draws=config.num_draws, num_burnin_steps=config.num_burnin,
                 batch_size=config.batch_size, loss_fn=per_token, device="cpu", init_seed=config.seed)
    elapsed = time.perf_counter() - start
    trace = torch.as_tensor(result.loss_trace.values, dtype=torch.float64)  # (chain, step), burn-in included
    init = float(result.init_loss)
    matched = config.n_beta * (trace[:, config.num_burnin:].mean(dim=1) - init)
    return {
        "ms_per_step": elapsed / (config.num_chains * config.steps_per_chain) * 1000,
        "reported": float(result.llc_mean), "reported_se": float(result.llc_std) / math.sqrt(config.num_chains),
        "matched": float(matched.mean()), "matched_se": float(matched.std()) / math.sqrt(config.num_chains),
    }


def compare(name, model, data, loss_fn, config: LLCConfig):
    """Both tools warmed up on a short run first (one-time tracing, imports), then timed from the
    outside around the whole call, reference loss included."""
    warm = config.model_copy(update={"num_draws": 5, "num_burnin": 0})
    estimate_llc(model, data, warm, loss_fn)
    run_devinterp(model, data, loss_fn, warm)
    start = time.perf_counter()
    ours = estimate_llc(model, data, config, loss_fn)
    ours_ms = (time.perf_counter() - start) / (config.num_chains * config.steps_per_chain) * 1000
    base = floor_ms(model, data, loss_fn, config.batch_size)
    theirs = run_devinterp(model, data, loss_fn, config)
    gap = abs(ours.llc_mean - theirs["matched"])
    joint = 2 * math.sqrt(ours.llc_std_error**2 + theirs["matched_se"] ** 2)
    params = sum(p.numel() for p in model.parameters())
    print(f"\n{name} ({params:,} parameters; ε {config.step_size:g}, nβ {config.n_beta:g}, γ {config.localization:g}, "
          f"{config.num_chains} chains × {config.num_draws} draws + {config.num_burnin} burn-in, batch {config.batch_size})")
    print(f"  ms per SGLD step: ours {ours_ms:.3f} ({'chains vmapped' if ours.vectorized else 'chain by chain'}), "
          f"devinterp {theirs['ms_per_step']:.3f}: ours {theirs['ms_per_step'] / ours_ms:.1f}× the throughput")
    print(f"  bare forward+backward of one step: {base:.3f} ms; ours per chain-step {ours_ms / base:.2f}× the floor, "
          f"devinterp {theirs['ms_per_step'] / base:.2f}×")
    print(f"  λ̂ ours {ours.llc_mean:.2f} ± {ours.llc_std_error:.2f}; devinterp reported {theirs['reported']:.2f} ± "
          f"{theirs['reported_se']:.2f} (burn-in averaged in), matched {theirs['matched']:.2f} ± {theirs['matched_se']:.2f}: "
          f"{'agree' if gap <= joint else 'DISAGREE'} within 2 s.e. (|Δ| {gap:.2f} vs {joint:.2f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None)
    parser.add_argument("--ref", default="mdl-slt/micro-pythia-230k@step1000")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("devinterp").setLevel(logging.ERROR)

    model, data, loss = mlp_task()
    compare("MLP", model, data, loss, LLCConfig(step_size=1e-4, n_beta=100.0, localization=100.0, num_chains=CHAINS,
                                                num_draws=DRAWS, num_burnin=BURNIN, batch_size=32))
    model, data, loss = deep_linear_task([50, 80, 60, 40], 8, 4096, seed=1)
    compare("deep linear network", model, data, loss,
            LLCConfig(step_size=1e-5, n_beta=1000.0, localization=1.0, num_chains=CHAINS, num_draws=DRAWS,
                      num_burnin=BURNIN, batch_size=32))

    from mdl_slt.checkpoints import load_checkpoint
    from mdl_slt.data import DataConfig, token_sets
    from mdl_slt.home import resolve_home
    from mdl_slt.lm_loss import token_nll

    home = resolve_home(args.home)
    ckpt = load_checkpoint(args.ref, home)
    tokens = token_sets(home, ckpt.tokenizer, DataConfig())
    compare(f"GPT-NeoX {args.ref}", ckpt.model, tokens.train, token_nll,
            LLCConfig(step_size=3e-4, n_beta=30.0, localization=300.0, num_chains=CHAINS, num_draws=DRAWS,
                      num_burnin=BURNIN, batch_size=8))


if __name__ == "__main__":
    main()
