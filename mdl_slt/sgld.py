"""Local learning coefficient (LLC) estimation with SGLD (Lau et al., arXiv 2308.12108).

Posterior localized at the trained parameter w*:  p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²).
SGLD step on a minibatch B:  Δw = (ε/2)·(−nβ·∇L_B(w) − γ(w − w*)) + N(0, ε·I).
Estimate:  λ̂ = nβ·(E_p[L_B(w)] − L_n(w*)), with E_p the mean minibatch loss of the draws
after burn-in (thinned), per chain; λ̂ is the mean over chains. L_n(w*) is measured once, on
the whole fixed data set, so the reference is deterministic.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from mdl_slt.errors import UserError


class LLCConfig(BaseModel):
    """Sampler settings; hold them fixed across the checkpoints you compare."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step_size: float = Field(3e-4, gt=0, description="SGLD step size ε")
    n_beta: float = Field(30.0, gt=0, description="nβ, the inverse temperature times sample size")
    localization: float = Field(300.0, ge=0, description="γ, strength of the pull towards w*")
    num_chains: int = Field(2, ge=1)
    num_draws: int = Field(150, ge=2, description="draws kept per chain, after burn-in and thinning")
    num_burnin: int = Field(50, ge=0, description="steps discarded at the start of each chain")
    thinning: int = Field(1, ge=1, description="keep every k-th step after burn-in")
    batch_size: int = Field(16, ge=1)
    seed: int = 0

    @property
    def steps_per_chain(self) -> int:
        return self.num_burnin + self.num_draws * self.thinning


@dataclass
class LLCResult:
    llc_mean: float
    llc_std_error: float  # across healthy chains: sd / sqrt(chains); NaN for one chain
    llc_per_chain: list[float]  # NaN for a diverged chain
    init_loss: float  # L_n(w*)
    loss_trace: list[list[float]]  # chains × draws, minibatch losses after burn-in and thinning
    diverged_chains: list[int]
    config: dict
    elapsed_s: float
    steps_per_second: float
    extra: dict = field(default_factory=dict)

    @property
    def negative(self) -> bool:
        return self.llc_mean < 0

    def to_dict(self) -> dict:
        return asdict(self)


def _batches(data, batch_size: int):
    """Fixed, in-order batches over all of `data` (a tensor, or a tuple of tensors)."""
    size = len(data[0]) if isinstance(data, tuple) else len(data)
    for start in range(0, size, batch_size):
        stop = min(size, start + batch_size)
        yield (tuple(d[start:stop] for d in data) if isinstance(data, tuple) else data[start:stop]), stop - start


def _pick(data, index):
    return tuple(d[index] for d in data) if isinstance(data, tuple) else data[index]


def default_loss(data) -> Callable:
    import torch

    from mdl_slt.lm_loss import token_nll

    if isinstance(data, torch.Tensor) and not data.is_floating_point():
        return token_nll
    raise UserError("estimate_llc needs a loss_fn(model, batch) for data other than a LongTensor of tokens")


def estimate_llc(model, data, config: LLCConfig = LLCConfig(), loss_fn: Callable | None = None) -> LLCResult:
    """Estimate the LLC of `model` at its current parameters w* on `data`.

    `data` is a LongTensor of token sequences (loss: per-token cross-entropy) or any tensor or
    tuple of tensors indexed along dim 0 with a `loss_fn(model, batch) -> scalar mean loss`.
    The model's parameters are restored to w* on return.
    """
    import torch

    loss_fn = loss_fn or default_loss(data)
    params = [p for p in model.parameters() if p.requires_grad]
    size = len(data[0]) if isinstance(data, tuple) else len(data)
    if size < 1 or not params:
        raise UserError("estimate_llc needs non-empty data and a model with trainable parameters")
    anchor = [p.detach().clone() for p in params]
    noise = [torch.empty_like(p) for p in params]
    with torch.no_grad():
        total = sum(float(loss_fn(model, batch)) * n for batch, n in _batches(data, config.batch_size))
    init_loss = total / size

    eps, nbeta, gamma = config.step_size, config.n_beta, config.localization
    steps = config.steps_per_chain
    keep = torch.arange(config.num_burnin, steps, config.thinning)
    traces, per_chain, diverged = [], [], []
    start = time.perf_counter()
    try:
        for chain in range(config.num_chains):
            gen = torch.Generator().manual_seed(config.seed * 1_000_003 + chain)
            with torch.no_grad():
                torch._foreach_copy_(params, anchor)
            losses = torch.full((steps,), float("nan"))
            for t in range(steps):
                batch = _pick(data, torch.randint(size, (min(config.batch_size, size),), generator=gen))
                loss = loss_fn(model, batch)
                grads = torch.autograd.grad(loss, params)
                losses[t] = loss.detach()
                with torch.no_grad():
                    drift = torch._foreach_sub(params, anchor)  # γ(w − w*) + nβ∇L
                    torch._foreach_mul_(drift, gamma)
                    torch._foreach_add_(drift, grads, alpha=nbeta)
                    torch._foreach_add_(params, drift, alpha=-eps / 2)
                    for buffer in noise:
                        buffer.normal_(generator=gen)
                    torch._foreach_add_(params, noise, alpha=math.sqrt(eps))
                if t % 50 == 49 and not torch.isfinite(losses[t]):
                    break
            draws = losses[keep]
            if not torch.isfinite(draws).all():
                diverged.append(chain)
                per_chain.append(float("nan"))
            else:
                per_chain.append(nbeta * (float(draws.double().mean()) - init_loss))
            traces.append(draws.tolist())
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, anchor)
    elapsed = time.perf_counter() - start
    healthy = [v for v in per_chain if not math.isnan(v)]
    if not healthy:
        raise UserError(f"all {config.num_chains} SGLD chains diverged at step size {eps:g}: "
                        f"try a smaller step size, e.g. {eps / 10:g}")
    mean = sum(healthy) / len(healthy)
    se = (math.sqrt(sum((v - mean) ** 2 for v in healthy) / (len(healthy) - 1) / len(healthy))
          if len(healthy) > 1 else float("nan"))
    return LLCResult(mean, se, per_chain, init_loss, traces, diverged, config.model_dump(), elapsed,
                     config.num_chains * steps / elapsed)
