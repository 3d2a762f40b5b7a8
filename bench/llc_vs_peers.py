"""Our LLC estimator against its peers, side by side, one thread each: devinterp 2.0.1 (the field's
reference) and canonical-interp 0.1.5 (a lean rewrite: vmapped chains, torch.compile).

Same models, data and hyperparameters for all three, 4 chains × 200 draws after 50 burn-in steps:
a 10k-parameter MLP (teacher–student, noiseless targets), a deep linear network at a rank-deficient
truth, and a micro-suite GPT-NeoX checkpoint. Prints ms per chain-step for each, the ratio of ours
to the faster peer, the floor (the bare forward + backward + update of one chain, times the number
of chains), and the estimates with whether they agree within two standard errors. devinterp's
reported figure averages the burn-in in; its burn-in-matched figure (its per-step trace after the
burn-in) is the one compared. canonical-interp draws one minibatch for all chains, we draw one per
chain: the expectation is the same.

    pip install -e '.[bench]' && pip install --no-deps canonical-interp==0.1.5
    python bench/llc_vs_peers.py [--home DIR]

(canonical-interp declares torchvision, which it does not use and which has no CPU build here, hence
--no-deps; its 0.1.x imports `itertools.batched`, new in Python 3.12, backported below.)
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # the peers' per-chain progress bars

import torch

from mdl_slt.llc.batches import mse_loss
from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.ground_truth import deep_linear_task
from mdl_slt.llc.samplers import SAMPLERS
from mdl_slt.llc.sampling import estimate_llc

CHAINS, DRAWS, BURNIN = 4, 200, 50

if not hasattr(itertools, "batched"):  # canonical-interp 0.1.x on Python 3.11
    def _batched(iterable, n):
        it = iter(iterable)
        while chunk := tuple(itertools.islice(it, n)):
            yield chunk

    itertools.batched = _batched


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


def floor_ms(model, data, loss_fn, config: LLCConfig, repeats=50):
    """Bare forward + backward + SGLD update of one chain on one minibatch: the least a step costs."""
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone().unsqueeze(0) for p in params]
    size = len(data[0]) if isinstance(data, tuple) else len(data)
    index = torch.arange(config.batch_size) % size
    batch = tuple(d[index] for d in data) if isinstance(data, tuple) else data[index]
    update = SAMPLERS[config.sampler]([a[0] for a in anchor], config, float(config.n_beta))
    gen = torch.Generator().manual_seed(0)
    saved = [p.detach().clone() for p in params]

    def step():
        grads = torch.autograd.grad(loss_fn(model, batch), params)
        update.step([p.unsqueeze(0) for p in params], [g.unsqueeze(0) for g in grads], [gen])

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    elapsed = (time.perf_counter() - start) / repeats * 1000
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
    return elapsed


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
    matched = config.n_beta * (trace[:, config.num_burnin:].mean(dim=1) - float(result.init_loss))
    return {"ms": elapsed / (config.num_chains * (config.num_burnin + config.num_draws)) * 1000,
            "reported": float(result.llc_mean), "value": float(matched.mean()),
            "se": float(matched.std()) / math.sqrt(config.num_chains)}


class _Logits(torch.nn.Module):
    """A language model as canonical-interp calls it: logits of every position but the last."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(input_ids=x).logits[:, :-1].float()


def run_canonical(model, data, loss_fn, config: LLCConfig, compile: bool):
    """canonical-interp's LLCEstimator on the same data and settings."""
    from canonical_interp import LLCEstimator
    from torch.utils.data import DataLoader, TensorDataset

    if isinstance(data, tuple):
        dataset, net = TensorDataset(*data), model

        def criterion(prediction, target):
            return 0.5 * ((prediction - target) ** 2).sum(-1).mean()
    else:
        dataset, net = TensorDataset(data, data[:, 1:]), _Logits(model)

        def criterion(logits, target):
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(config.seed))
    estimator = LLCEstimator(draws=config.num_draws, chains=config.num_chains, burnin_steps=config.num_burnin,
                             steps_bw_draws=1, learning_rate=config.step_size, localization=config.localization,
                             nbeta=config.n_beta)
    start = time.perf_counter()
    try:
        estimator.estimate_llc(net, loader, criterion_fn=criterion, seed=config.seed, compile=compile,
                               show_progress=False)
    except Exception as error:  # noqa: BLE001  torch.compile of SDPA's backward fails on CPU
        if not compile:
            raise
        print(f"  (canonical-interp cannot compile here: {str(error).splitlines()[-1][:90]}; timed eager)")
        return run_canonical(model, data, loss_fn, config, False)
    elapsed = time.perf_counter() - start
    llcs = estimator.get_metrics()["llcs"].double()
    return {"ms": elapsed / (config.num_chains * (config.num_burnin + config.num_draws)) * 1000,
            "value": float(llcs.mean()), "se": float(llcs.std()) / math.sqrt(config.num_chains), "compiled": compile}


def compare(name, model, data, loss_fn, config: LLCConfig, compile: bool):
    """Each tool warmed up on a short run (one-time tracing, compilation, imports), then timed
    around the whole call, reference loss included. With `compile`, both we and canonical-interp
    use torch.compile (ours: `compile: true`, for vmapped chains)."""
    config = config.model_copy(update={"compile": compile})
    warm = config.model_copy(update={"num_draws": 5, "num_burnin": 0})
    run_devinterp(model, data, loss_fn, warm)
    run_canonical(model, data, loss_fn, warm, compile)
    estimate_llc(model, data, warm, loss_fn)  # last: devinterp's run changes state that makes compiled code re-trace
    start = time.perf_counter()
    ours = estimate_llc(model, data, config, loss_fn)
    ours_ms = (time.perf_counter() - start) / (config.num_chains * config.fixed_steps) * 1000
    floor = floor_ms(model, data, loss_fn, config)
    devinterp = run_devinterp(model, data, loss_fn, config)
    canonical = run_canonical(model, data, loss_fn, config, compile)
    faster = min(devinterp["ms"], canonical["ms"])
    params = sum(p.numel() for p in model.parameters())
    print(f"\n{name} ({params:,} parameters; ε {config.step_size:g}, nβ {config.n_beta:g}, γ {config.localization:g}, "
          f"{config.num_chains} chains × {config.num_draws} draws + {config.num_burnin} burn-in, batch {config.batch_size})")
    print(f"  ms per chain-step: ours {ours_ms:.3f} ({'chains vmapped' if ours.vectorized else 'chain by chain'}{', compiled' if compile and ours.vectorized else ''}), "
          f"devinterp {devinterp['ms']:.3f}, canonical-interp {canonical['ms']:.3f} "
          f"({'compiled' if canonical['compiled'] else 'eager'}): ours {faster / ours_ms:.2f}× the faster peer's throughput")
    print(f"  floor (one chain's forward + backward + update): {floor:.3f} ms; ours {ours_ms / floor:.2f}× it per "
          f"chain-step, devinterp {devinterp['ms'] / floor:.2f}×, canonical-interp {canonical['ms'] / floor:.2f}×")
    pairs = {"devinterp": devinterp, "canonical-interp": canonical}
    verdicts = []
    for peer, found in pairs.items():
        joint = 2 * math.sqrt(ours.llc_std_error**2 + found["se"] ** 2)
        verdicts.append(f"{peer} {found['value']:.2f} ± {found['se']:.2f} "
                        f"({'agree' if abs(ours.llc_mean - found['value']) <= joint else 'DISAGREE'})")
    print(f"  λ̂ ours {ours.llc_mean:.2f} ± {ours.llc_std_error:.2f}; {'; '.join(verdicts)}; devinterp as reported "
          f"(burn-in averaged in) {devinterp['reported']:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None)
    parser.add_argument("--ref", default="mdl-slt/micro-pythia-230k@step1000")
    parser.add_argument("--compile", action="store_true", help="torch.compile for us and canonical-interp (its default)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    for name in ("devinterp", "canonical_interp"):
        logging.getLogger(name).setLevel(logging.ERROR)
    fixed = dict(num_chains=CHAINS, num_draws=DRAWS, num_burnin=BURNIN)

    model, data, loss = mlp_task()
    compare("MLP", model, data, loss, LLCConfig(step_size=1e-4, n_beta=100.0, localization=100.0, batch_size=32,
                                                **fixed), args.compile)
    model, data, loss = deep_linear_task([50, 80, 60, 40], 8, 4096, seed=1)
    compare("deep linear network", model, data, loss,
            LLCConfig(step_size=1e-5, n_beta=1000.0, localization=1.0, batch_size=32, **fixed), args.compile)

    from mdl_slt.compute.loss import token_nll
    from mdl_slt.data.tokens import DataConfig, token_sets
    from mdl_slt.home.paths import resolve_home
    from mdl_slt.models.checkpoints import load_checkpoint

    home = resolve_home(args.home)
    ckpt = load_checkpoint(args.ref, home)
    tokens = token_sets(home, ckpt.tokenizer, DataConfig())
    compare(f"GPT-NeoX {args.ref}", ckpt.model, tokens.train, token_nll,
            LLCConfig(step_size=3e-4, n_beta=30.0, localization=300.0, batch_size=8, **fixed), args.compile)


if __name__ == "__main__":
    main()
