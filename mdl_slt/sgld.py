"""Local learning coefficient (LLC) estimation with SGLD (Lau et al., arXiv 2308.12108).

Posterior localized at the trained parameter w*:  p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²).
SGLD step on a minibatch B:  Δw = (ε/2)·P·(−nβ·∇L_B(w) − γ(w − w*)) + N(0, ε·P), with P = I, or
for RMSProp-preconditioned SGLD P = 1/(√V̂ + eps), V ← αV + (1 − α)(∇L_B)², V̂ bias-corrected
(Hitchcock & Hoogland, arXiv 2507.21449).
Estimate:  λ̂ = nβ·(E_p[L_B(w)] − L_n(w*)), E_p the mean minibatch loss of each chain's draws
after burn-in (thinned); λ̂ is the mean over healthy chains. L_n(w*) is measured once, on the
whole fixed data set (or its first `reference_batches` batches), so it is deterministic.

Chains run together through `torch.func.vmap` over stacked parameters when the model allows
it, else one after another; either way each chain has its own seeded stream, so the same seed
gives the same chains. A chain whose loss becomes non-finite or runs away (nβ·(L − L*) above
`runaway` × d, d the number of sampled parameters: 8× a regular model's λ by default)
is stopped and excluded; runaway is judged on the mean over each window of CHECK_EVERY steps.
"""

from __future__ import annotations

import fnmatch
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mdl_slt.errors import UserError

CHECK_EVERY = 25  # steps between health checks (each costs one host synchronisation)


class LLCConfig(BaseModel):
    """Sampler settings; hold them fixed across the checkpoints you compare."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sampler: Literal["sgld", "rmsprop"] = Field("sgld", description="plain or RMSProp-preconditioned SGLD")
    preset: Literal["pythia"] | None = Field(None, description="`pythia`: the paper's settings (γ 300, nβ 30, "
                                                            "batch 32, 4 chains, 100 draws, step size by model size) "
                                                            "for every field not given")
    step_size: float | Literal["auto"] = Field(3e-4, description="SGLD step size ε; `auto`: the paper's step for "
                                                                "the Pythia size nearest in parameters")
    n_beta: float | Literal["auto"] = Field(30.0, description="nβ; `auto` = n/log n, β = 1/log n")
    localization: float = Field(300.0, ge=0, description="γ, strength of the pull towards w*")
    num_chains: int = Field(2, ge=1)
    num_draws: int = Field(150, ge=2, description="draws kept per chain, after burn-in and thinning")
    num_burnin: int = Field(50, ge=0, description="steps discarded at the start of each chain")
    thinning: int = Field(1, ge=1, description="keep every k-th step after burn-in")
    batch_size: int = Field(16, ge=1)
    seed: int = 0
    rmsprop_alpha: float = Field(0.99, gt=0, lt=1)
    rmsprop_eps: float = Field(0.1, gt=0, description="caps the preconditioner at 1/eps (devinterp's default): "
                               "near an exact minimum V → 0 and a tiny eps would blow the step up")
    parameters: list[str] | None = Field(None, description="sample only parameters whose names match these "
                                                            "glob patterns (component LLC); None = all")
    reference_batches: int | None = Field(None, ge=1, description="batches for L(w*); None = the whole set")
    vectorize: Literal["auto", "always", "never"] = Field(
        "auto", description="run chains together with torch.func.vmap: `auto` does for plain torch modules "
                            "and not for transformers models, whose CPU attention has no vmap batching rule")
    runaway: float = Field(4.0, gt=0, description="runaway threshold on window means of nβ·(L − L*), in units of d")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass "
                                                            "(transformers models): less memory for long contexts")
    numerics: Literal["auto", "fp32", "bf16"] = Field("auto", description="token losses in fp32 or under bf16 "
                                                                        "autocast; auto: bf16 on CUDA, fp32 elsewhere")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, values):
        if isinstance(values, dict) and values.get("preset") == "pythia":
            from mdl_slt.pythia import PAPER_SAMPLER

            values = {**PAPER_SAMPLER, "step_size": "auto", **values}
        return values

    @field_validator("step_size")
    @classmethod
    def _positive(cls, value):
        if value != "auto" and value <= 0:
            raise ValueError("step_size must be positive, or auto")
        return value

    def resolved(self, model) -> "LLCConfig":
        """This config with `auto` settings made concrete for `model`: the paper's step for its
        size, and bf16 numerics when it lives on CUDA."""
        update = {}
        if self.step_size == "auto":
            from mdl_slt.pythia import default_step_size

            update["step_size"] = default_step_size(sum(p.numel() for p in model.parameters()))
        if self.numerics == "auto":
            update["numerics"] = "bf16" if next(model.parameters()).device.type == "cuda" else "fp32"
        return self.model_copy(update=update)

    @property
    def steps_per_chain(self) -> int:
        return self.num_burnin + self.num_draws * self.thinning

    @property
    def max_steps(self) -> int:
        """The most SGLD steps one chain can take."""
        return self.steps_per_chain

    @property
    def budget_text(self) -> str:
        return f"{self.steps_per_chain} steps"


@dataclass
class LLCResult:
    llc_mean: float
    llc_std_error: float  # √(se_chains² + se_reference²); NaN with one healthy chain
    llc_per_chain: list[float]  # NaN for a diverged chain
    init_loss: float  # L_n(w*)
    loss_trace: list[list[float]]  # chains × draws, minibatch losses after burn-in and thinning
    diverged_chains: list[int]
    r_hat: float  # rank-normalised split R̂ over healthy chains (≈ 1 when they agree)
    ess: float  # bulk effective sample size over healthy chains
    n_beta: float
    num_params: int  # parameters sampled
    config: dict
    elapsed_s: float
    steps_per_second: float  # SGLD steps per second, all chains counted
    vectorized: bool
    suggested_step_size: float | None = None  # when chains diverged
    extra: dict = field(default_factory=dict)
    trace: bytes | None = None  # the stored sampling artifact

    @property
    def negative(self) -> bool:
        return self.llc_mean < 0

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "trace"}, "negative": self.negative}


def data_size(data) -> int:
    return len(data[0]) if isinstance(data, tuple) else len(data)


def _to_device(data, device):
    return tuple(d.to(device) for d in data) if isinstance(data, tuple) else data.to(device)


def _pick(data, index):
    return tuple(d[index] for d in data) if isinstance(data, tuple) else data[index]


def _batches(data, batch_size: int):
    """Fixed, in-order batches over all of `data` (a tensor, or a tuple of tensors)."""
    size = data_size(data)
    for start in range(0, size, batch_size):
        stop = min(size, start + batch_size)
        yield _pick(data, slice(start, stop)), stop - start


def mse_loss(model, batch):
    """½·mean over rows of ‖model(x) − y‖²: the unit-variance Gaussian NLL up to a constant."""
    x, y = batch
    return 0.5 * ((model(x) - y) ** 2).sum(-1).mean()


def default_loss(data, numerics: str = "fp32") -> Callable:
    import functools

    import torch

    from mdl_slt.lm_loss import token_nll

    if isinstance(data, torch.Tensor) and not data.is_floating_point():
        return functools.partial(token_nll, numerics=numerics)
    if isinstance(data, tuple) and len(data) == 2:
        return mse_loss
    raise UserError("estimate_llc needs a loss_fn(model, batch) for data other than tokens or (x, y)")


def resolve_n_beta(config: LLCConfig, data) -> float:
    """nβ as set, or n/log n with n the number of data points (predicted tokens for token data)."""
    if config.n_beta != "auto":
        return float(config.n_beta)
    import torch

    n = data.shape[0] * (data.shape[1] - 1) if isinstance(data, torch.Tensor) and data.ndim == 2 \
        and not data.is_floating_point() else data_size(data)
    return n / math.log(n)


def select_parameters(model, patterns) -> list[tuple[str, object]]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if patterns is None:
        return named
    chosen = [(n, p) for n, p in named if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
    if not chosen:
        raise UserError(f"no parameter matches {patterns}: names look like {named[0][0]!r} "
                        "(use glob patterns such as 'gpt_neox.layers.0.attention.*')")
    return chosen


def reference_loss(model, data, loss_fn, config: LLCConfig) -> tuple[float, float]:
    """L_n(w*) over the whole set (standard error 0), or its first `reference_batches` batches
    with the standard error of their mean."""
    import torch

    losses, sizes = [], []
    with torch.no_grad():
        for i, (batch, n) in enumerate(_batches(data, config.batch_size)):
            if config.reference_batches is not None and i >= config.reference_batches:
                break
            losses.append(float(loss_fn(model, batch)))
            sizes.append(n)
    mean = sum(l * n for l, n in zip(losses, sizes)) / sum(sizes)
    if config.reference_batches is None or len(losses) < 2:
        return mean, 0.0
    sd = math.sqrt(sum((l - mean) ** 2 for l in losses) / (len(losses) - 1))
    return mean, sd / math.sqrt(len(losses))


class _Chains:
    """State and update of C chains over stacked parameter tensors (leading dim C)."""

    def __init__(self, anchor, config: LLCConfig, n_beta: float):
        self.anchor = anchor  # per parameter, shape (1, ...) for broadcasting
        self.config, self.n_beta = config, n_beta
        self.noise = None
        self.second_moment = None
        self.t = 0

    def step(self, params, grads, gens) -> None:
        """One SGLD step for every chain in place: params and grads are lists of (C, ...) tensors.

        Memory: besides the parameters it keeps the anchor w*, one noise buffer and (RMSProp) V,
        each the size of the sampled parameters; the gradients are turned into the drift in place
        and the noise buffer holds the preconditioner, so a step allocates nothing.
        """
        import torch

        cfg = self.config
        eps, gamma = cfg.step_size, cfg.localization
        if self.noise is None:
            self.noise = [torch.empty_like(p) for p in params]
            if cfg.sampler == "rmsprop":
                self.second_moment = [torch.zeros_like(p) for p in params]
        self.t += 1
        with torch.no_grad():
            if cfg.sampler == "rmsprop":  # V ← αV + (1 − α)g², before g becomes the drift
                torch._foreach_mul_(self.second_moment, cfg.rmsprop_alpha)
                torch._foreach_addcmul_(self.second_moment, grads, grads, value=1 - cfg.rmsprop_alpha)
            drift = grads  # nβ∇L + γ(w − w*), in place
            torch._foreach_mul_(drift, self.n_beta)
            torch._foreach_add_(drift, params, alpha=gamma)
            torch._foreach_add_(drift, self.anchor, alpha=-gamma)
            if cfg.sampler == "rmsprop":
                precond = self.noise  # P = 1/(√V̂ + eps), V̂ bias-corrected, in the noise buffer
                torch._foreach_copy_(precond, self.second_moment)
                torch._foreach_div_(precond, 1 - cfg.rmsprop_alpha**self.t)
                torch._foreach_sqrt_(precond)
                torch._foreach_add_(precond, cfg.rmsprop_eps)
                torch._foreach_reciprocal_(precond)
                torch._foreach_mul_(drift, precond)
                torch._foreach_add_(params, drift, alpha=-eps / 2)
                torch._foreach_sqrt_(precond)  # √P scales the noise; the drift buffer is free again
                torch._foreach_copy_(drift, precond)
            else:
                torch._foreach_add_(params, drift, alpha=-eps / 2)
            for buffer in self.noise:
                for c, gen in enumerate(gens):
                    buffer[c].normal_(generator=gen)
            if cfg.sampler == "rmsprop":
                torch._foreach_mul_(self.noise, drift)
            torch._foreach_add_(params, self.noise, alpha=math.sqrt(eps))


def _generators(config: LLCConfig, chains, device):
    """One seeded stream per chain, on the parameters' device (minibatch picks and noise)."""
    import torch

    return [torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + c) for c in chains]


def _sample_vectorized(model, names, anchor, data, loss_fn, config, n_beta, traces, health):
    """All chains at once: vmap of grad-and-value over stacked parameters and per-chain batches."""
    import torch
    from torch.func import functional_call, grad_and_value, vmap

    class LossOf(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch):
            return loss_fn(self.model, batch)

    wrapper = LossOf()
    chains = config.num_chains
    size = data_size(data)

    def loss_single(params, batch):
        return functional_call(wrapper, {f"model.{n}": p for n, p in zip(names, params)}, (batch,))

    step_fn = vmap(grad_and_value(loss_single), in_dims=(0, 0), randomness="error")
    params = [a.expand(chains, *a.shape[1:]).clone() for a in anchor]
    sampler = _Chains(anchor, config, n_beta)
    gens = _generators(config, range(chains), anchor[0].device)
    b = min(config.batch_size, size)
    for t in range(config.steps_per_chain):
        index = torch.stack([torch.randint(size, (b,), generator=g, device=g.device) for g in gens])
        grads, loss = step_fn(params, _pick(data, index))
        traces[:, t] = loss.detach()
        sampler.step(params, list(grads), gens)
        if t % CHECK_EVERY == CHECK_EVERY - 1 and not health(traces[:, : t + 1]).any():
            break


def _sample_sequential(model, params, anchor, data, loss_fn, config, n_beta, traces, health):
    """One chain after another on the model's own parameters."""
    import torch

    size = data_size(data)
    b = min(config.batch_size, size)
    for chain, gen in enumerate(_generators(config, range(config.num_chains), anchor[0].device)):
        with torch.no_grad():
            for p, a in zip(params, anchor):
                p.copy_(a[0])
        sampler = _Chains([a[0] for a in anchor], config, n_beta)
        views = [p.unsqueeze(0) for p in params]  # (1, ...) views: the update writes into the model
        for t in range(config.steps_per_chain):
            loss = loss_fn(model, _pick(data, torch.randint(size, (b,), generator=gen, device=gen.device)))
            grads = torch.autograd.grad(loss, params)
            traces[chain, t] = loss.detach()
            sampler.step(views, [g.unsqueeze(0) for g in grads], [gen])
            if t % CHECK_EVERY == CHECK_EVERY - 1 and not health(traces[chain: chain + 1, : t + 1]).any():
                break


def _checkpointing(model, on: bool) -> None:
    """Switch activation (gradient) checkpointing on, in train mode, which transformers requires
    for it, or off, back to eval mode. Only for models whose dropout is zero, as Pythia's is:
    train mode must not change the loss. Newer transformers name it `activation_checkpointing`."""
    new = hasattr(model, "activation_checkpointing_enable")
    if not on:
        if getattr(model, "is_activation_checkpointing" if new else "is_gradient_checkpointing", False):
            model.activation_checkpointing_disable() if new else model.gradient_checkpointing_disable()
            model.eval()
        return
    if not hasattr(model, "gradient_checkpointing_enable"):
        raise UserError("gradient_checkpointing needs a transformers model")
    dropout = [v for k, v in vars(model.config).items()
               if "dropout" in k and "classifier" not in k and isinstance(v, float)]
    if any(dropout):
        raise UserError("gradient_checkpointing runs the model in train mode, which would switch on its "
                        f"dropout ({max(dropout)}): use it only for models without dropout")
    if new:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()


def _vectorize(model, config: LLCConfig) -> bool:
    """Measured on micro-pythia-90k (CPU, one thread): vmap 22.9–30.0 ms/step against 19.8–20.2 in
    sequence, because scaled-dot-product attention falls back to a per-chain loop under vmap."""
    if config.vectorize != "auto":
        return config.vectorize == "always"
    return not any(cls.__name__ == "PreTrainedModel" for cls in type(model).__mro__)


def estimate_llc(model, data, config: LLCConfig = LLCConfig(), loss_fn: Callable | None = None) -> LLCResult:
    """Estimate the LLC of `model` at its current parameters w* on `data`.

    `data` is a LongTensor of token sequences (default loss: per-token cross-entropy), an (x, y)
    pair (default: `mse_loss`), or any tensor or tuple of tensors indexed along dim 0 with a
    `loss_fn(model, batch) -> scalar mean loss`.
    The model's parameters are restored to w* on return.
    """
    import torch

    config = config.resolved(model)
    loss_fn = loss_fn or default_loss(data, config.numerics)
    if data_size(data) < 1:
        raise UserError("estimate_llc needs non-empty data")
    chosen = select_parameters(model, config.parameters)
    names, params = [n for n, _ in chosen], [p for _, p in chosen]
    d = sum(p.numel() for p in params)
    data = _to_device(data, params[0].device)
    n_beta = resolve_n_beta(config, data)
    init_loss, init_se = reference_loss(model, data, loss_fn, config)
    anchor = [p.detach().clone().unsqueeze(0) for p in params]
    steps = config.steps_per_chain
    traces = torch.full((config.num_chains, steps), float("nan"), device=params[0].device)
    limit = config.runaway * d

    def health(trace):
        """True per chain while its losses are finite and no window of CHECK_EVERY steps has a mean
        nβ·(L − L*) above the runaway limit (single draws fluctuate too much to judge)."""
        finite = torch.isfinite(trace).all(dim=1)
        full = trace.shape[1] // CHECK_EVERY * CHECK_EVERY
        windows = (n_beta * (trace[:, :full] - init_loss)).reshape(len(trace), -1, CHECK_EVERY).mean(-1)
        return finite & (windows <= limit).all(dim=1)

    start = time.perf_counter()
    vectorized = False
    try:
        _checkpointing(model, config.gradient_checkpointing)
        if config.num_chains > 1 and _vectorize(model, config):
            try:
                _sample_vectorized(model, names, anchor, data, loss_fn, config, n_beta, traces, health)
                vectorized = True
            except Exception:  # noqa: BLE001  models vmap cannot trace run chain by chain
                traces.fill_(float("nan"))
        if not vectorized:
            _sample_sequential(model, params, anchor, data, loss_fn, config, n_beta, traces, health)
    finally:
        _checkpointing(model, False)
        with torch.no_grad():
            for p, a in zip(params, anchor):
                p.copy_(a[0])
    elapsed = time.perf_counter() - start
    return _summarise(traces.cpu(), health(traces).cpu(), init_loss, init_se, n_beta, d, config, elapsed, vectorized)


def _summarise(traces, healthy, init_loss, init_se, n_beta, d, config, elapsed, vectorized) -> LLCResult:
    import torch

    keep = torch.arange(config.num_burnin, config.steps_per_chain, config.thinning)
    draws = traces[:, keep].double()
    per_chain = [n_beta * (float(draws[c].mean()) - init_loss) if healthy[c] else float("nan")
                 for c in range(config.num_chains)]
    good = [c for c in range(config.num_chains) if healthy[c]]
    diverged = [c for c in range(config.num_chains) if not healthy[c]]
    suggestion = config.step_size / 10 if diverged else None
    if not good:
        raise UserError(f"all {config.num_chains} SGLD chains diverged at step size {config.step_size:g}: "
                        f"try a smaller step size, e.g. {suggestion:g}")
    values = [per_chain[c] for c in good]
    mean = sum(values) / len(values)
    chain_se = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
                if len(values) > 1 else float("nan"))
    r_hat, ess = chain_diagnostics((n_beta * (draws[good] - init_loss)).numpy())
    return LLCResult(
        llc_mean=mean, llc_std_error=math.sqrt(chain_se**2 + (n_beta * init_se) ** 2),
        llc_per_chain=per_chain, init_loss=init_loss, loss_trace=draws.float().tolist(),
        diverged_chains=diverged, r_hat=r_hat, ess=ess, n_beta=n_beta, num_params=d,
        config=config.model_dump(), elapsed_s=elapsed,
        steps_per_second=config.num_chains * config.steps_per_chain / elapsed, vectorized=vectorized,
        suggested_step_size=suggestion, extra={"reference_std_error": init_se},
    )


def chain_diagnostics(samples) -> tuple[float, float]:
    """Rank-normalised split R̂ and bulk ESS (arviz) of a chains × draws array; NaN below 2 chains."""
    if samples.shape[0] < 2 or samples.shape[1] < 4:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz announces its refactor on import
        import arviz as az

        return float(az.rhat(samples, method="rank")), float(az.ess(samples, method="bulk"))
