"""Local learning coefficient (LLC) estimation with SGLD (Lau et al., arXiv 2308.12108).

Posterior localized at the trained parameter w*:  p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²).
SGLD step on a minibatch B:  Δw = (ε/2)·P·(−nβ·∇L_B(w) − γ(w − w*)) + N(0, ε·P), with P = I, or
for RMSProp-preconditioned SGLD P = 1/(√V̂ + eps), V ← αV + (1 − α)(∇L_B)², V̂ bias-corrected
(Hitchcock & Hoogland, arXiv 2507.21449).
`sampler: baoab` is underdamped Langevin with momentum p, time step h = √ε and friction ζ, split
B-A-O-A-B (Leimkuhler & Matthews 2013) on U(w) = nβ·L_B(w) + (γ/2)‖w − w*‖²:
p ← p − (h/2)∇U;  w ← w + (h/2)p;  p ← c·p + √(1 − c²)·N(0, I), c = e^(−ζh);  w ← w + (h/2)p;
p ← p − (h/2)∇U. It samples a quadratic U exactly for any stable h (h²·a < 4), and the directions
held only by γ relax in about ζ/(2γh) steps (ζ ≥ 2√γ) where SGLD takes 1/(εγ) = 1/(γh²): far
fewer on stiff, nearly singular models. `friction: auto` is ζ = 10√γ, five times the critical
damping of those directions: with critical damping the chains of an 874k-parameter deep linear
network overshot and diverged. It wants exact gradients (`batch_size` at least the data size):
minibatch noise heats it in proportion to 1/ζ. (Any sampler: a `batch_size` at least the data
size uses every row at every step.)

Sampling produces an artifact, estimation reads it (`mdl_slt.trace`): `sample` runs the chains
and returns a `Trace` of every step's minibatch loss, burn-in included; `estimate(trace)` gives
λ̂ = nβ·(E_p[L_B(w)] − L_n(w*)) with its diagnostics; `estimate_llc` does both. L_n(w*) is
measured once, on the whole fixed data set (or its first `reference_batches` batches).

Converged by default: with `num_draws: auto` the chains run in blocks of `block` steps until,
after the burn-in (detected from the trace unless fixed), split R̂ ≤ `target_r_hat` and the
pooled bulk ESS ≥ `target_ess`, and at least four relaxation times of the slowest direction γ
holds have passed (`trace.relaxation_steps`), or `max_steps` is reached; the result says whether
it converged.

Divergence, checked every CHECK_EVERY steps on each chain's window mean, against scales that mean
something for the model: a non-finite loss; a mean minibatch loss above that of a uniform
prediction, ln V (a language model that far from w* is destroyed; judged where w* itself is at
least half a nat better than uniform, so not for barely trained checkpoints); nβ·(L − L*) above `runaway`·d
(8× a regular model's λ); or above `jump` × the larger of the other chains' median level and the
chain's own earlier median level (each floored at 1). A diverged chain is stopped (vmapped: held
at w*), excluded and named; when all diverge, one error with a smaller step to try.

Chains run together through `torch.func.vmap` over stacked parameters when the model allows it,
else one after another, each chain's state kept between blocks; either way each chain has its
own seeded stream, so the same seed gives the same chains.
"""

from __future__ import annotations

import fnmatch
import math
import time
from contextlib import nullcontext
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mdl_slt.errors import UserError
from mdl_slt.trace import (LLCResult, Trace, burnin_of, chain_diagnostics, estimate, levels_of, meets_targets,
                           relaxation_steps)

CHECK_EVERY = 25  # steps between divergence checks (each costs one host synchronisation)
UNIFORM_MARGIN = 0.5  # nats: the uniform-prediction check needs w* this much better than uniform
STEP_SCALE = 0.3  # `step_size: auto` outside Pythia's table: ε·(nβ·λ_max + γ) = STEP_SCALE (see the README)
FRICTION_SCALE = 10.0  # BAOAB's `friction: auto` = FRICTION_SCALE·√γ


class LLCConfig(BaseModel):
    """Sampler settings; hold them fixed across the checkpoints you compare."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sampler: Literal["sgld", "rmsprop", "baoab"] = Field("sgld", description="plain or RMSProp-preconditioned "
                                                          "SGLD, or underdamped Langevin (BAOAB; wants exact "
                                                          "gradients, see the module docstring)")
    preset: Literal["pythia"] | None = Field(None, description="`pythia`: the paper's settings (γ 300, nβ 30, "
                                                            "batch 32, 4 chains, 100 draws, step size by model size) "
                                                            "for every field not given")
    step_size: float | Literal["auto"] = Field(3e-4, description="SGLD step size ε; `auto`: the paper's step for a "
                                               "Pythia model, else ε = 0.3/(nβ·λ_max + γ) from the top Hessian "
                                               "eigenvalue at w* (in a run: of each model's last checkpoint, held "
                                               "for all its checkpoints); for baoab ε = h², h its time step")
    n_beta: float | Literal["auto"] = Field(30.0, description="nβ; `auto` = n/log n, β = 1/log n")
    localization: float = Field(300.0, ge=0, description="γ, strength of the pull towards w*")
    num_chains: int = Field(4, ge=1)
    num_draws: int | Literal["auto"] = Field("auto", description="draws kept per chain after burn-in and thinning; "
                                             "`auto`: sample until converged (target_r_hat, target_ess)")
    num_burnin: int | Literal["auto"] = Field("auto", description="steps discarded at the start of each chain; "
                                              "`auto`: where the transient ends (MSER-5 on the trace)")
    thinning: int = Field(1, ge=1, description="keep every k-th step after burn-in")
    max_steps: int = Field(2000, ge=2, description="the most steps a chain takes when sampling until converged")
    block: int = Field(100, ge=CHECK_EVERY, description="steps between convergence checks")
    target_r_hat: float = Field(1.05, gt=1, description="converged: split R̂ at most this")
    target_ess: float = Field(100.0, ge=0, description="converged: pooled bulk ESS at least this")
    batch_size: int = Field(16, ge=1)
    seed: int = 0
    friction: float | Literal["auto"] = Field("auto", description="baoab's friction ζ; auto = 10√γ, five "
                                                                  "times the critical damping of the directions "
                                                                  "only γ holds")
    rmsprop_alpha: float = Field(0.99, gt=0, lt=1)
    rmsprop_eps: float = Field(0.1, gt=0, description="caps the preconditioner at 1/eps (devinterp's default): "
                               "near an exact minimum V → 0 and a tiny eps would blow the step up")
    parameters: list[str] | None = Field(None, description="sample only parameters whose names match these "
                                                            "glob patterns (component LLC); None = all")
    reference_batches: int | None = Field(None, ge=1, description="batches for L(w*); None = the whole set")
    vectorize: Literal["auto", "always", "never"] = Field(
        "auto", description="run chains together with torch.func.vmap: `auto` does for plain torch modules "
                            "and for transformers models on CUDA (eager attention), not for those on CPU")
    compile: bool = Field(False, description="torch.compile the vmapped chains' gradient: about 15 s to compile on "
                                             "a CPU once per model, then several times faster per step on small models (README); "
                                             "worth it for long runs")
    runaway: float = Field(4.0, gt=0, description="divergence: window means of nβ·(L − L*) above this × d")
    jump: float = Field(10.0, gt=1, description="divergence: window means of nβ·(L − L*) above this × the other "
                                                "chains' and the chain's own earlier level")
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

    @field_validator("step_size", "friction")
    @classmethod
    def _positive(cls, value, info):
        if value != "auto" and value <= 0:
            raise ValueError(f"{info.field_name} must be positive, or auto")
        return value

    @field_validator("num_draws", "num_burnin")
    @classmethod
    def _count(cls, value, info):
        least = {"num_draws": 2, "num_burnin": 0}[info.field_name]
        if value != "auto" and value < least:
            raise ValueError(f"{info.field_name} must be at least {least}, or auto")
        return value

    @property
    def fixed_steps(self) -> int | None:
        """Steps per chain when both burn-in and draws are fixed; None when the trace decides."""
        if self.num_draws == "auto" or self.num_burnin == "auto":
            return None
        return self.num_burnin + self.num_draws * self.thinning

    @property
    def budget_steps(self) -> int:
        """The most SGLD steps one chain can take."""
        return self.fixed_steps or self.max_steps

    @property
    def budget_text(self) -> str:
        if self.fixed_steps is not None:
            return f"{self.fixed_steps} steps"
        what = f"{self.num_draws} draws after a detected burn-in" if self.num_draws != "auto" else \
            f"until R̂ ≤ {self.target_r_hat:g}, ESS ≥ {self.target_ess:g} and 4 relaxation times"
        return f"≤ {self.max_steps} steps ({what})"


def data_size(data) -> int:
    return len(data[0]) if isinstance(data, tuple) else len(data)


def _to_device(data, device):
    return tuple(d.to(device) for d in data) if isinstance(data, tuple) else data.to(device)


def _pick(data, index):
    return tuple(d[index] for d in data) if isinstance(data, tuple) else data[index]


def _minibatches(size: int, batch_size: int, steps: int, gen):
    """Row indices, (steps, b): drawn uniformly with replacement, or every row at every step
    when the batch is at least the data (exact gradients)."""
    import torch

    if batch_size >= size:
        return torch.arange(size, device=gen.device).expand(steps, size)
    return torch.randint(size, (steps, batch_size), generator=gen, device=gen.device)


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


def _is_tokens(data) -> bool:
    import torch

    return isinstance(data, torch.Tensor) and not data.is_floating_point()


def default_loss(data, numerics: str = "fp32") -> Callable:
    import functools

    from mdl_slt.lm_loss import token_nll

    if _is_tokens(data):
        return functools.partial(token_nll, numerics=numerics)
    if isinstance(data, tuple) and len(data) == 2:
        return mse_loss
    raise UserError("estimate_llc needs a loss_fn(model, batch) for data other than tokens or (x, y)")


def resolve_n_beta(config: LLCConfig, data) -> float:
    """nβ as set, or n/log n with n the number of data points (predicted tokens for token data)."""
    if config.n_beta != "auto":
        return float(config.n_beta)
    n = data.shape[0] * (data.shape[1] - 1) if _is_tokens(data) and data.ndim == 2 else data_size(data)
    return n / math.log(n)


def resolve(config: LLCConfig, model, data, loss_fn) -> tuple[LLCConfig, dict]:
    """The config with nβ, the step size and BAOAB's friction made concrete for this model and
    data, and how: the paper's step for a model of a Pythia size, else ε from λ_max of ∇²L at w*;
    with the relaxation time these settings imply (`trace.relaxation_steps`)."""
    from mdl_slt.pythia import default_step_size, is_pythia_sized

    update, how = {"n_beta": resolve_n_beta(config, data)}, {}
    if config.step_size == "auto":
        count = sum(p.numel() for p in model.parameters())
        if is_pythia_sized(model):
            update["step_size"] = default_step_size(count)
            how = {"step_size_rule": "the paper's step for the nearest Pythia size"}
        else:
            from mdl_slt.curvature import top_hessian_eigenvalue

            top = top_hessian_eigenvalue(model, data, loss_fn, batch_size=config.batch_size * 4)
            update["step_size"] = STEP_SCALE / (update["n_beta"] * max(top, 0.0) + config.localization)
            how = {"step_size_rule": f"ε = {STEP_SCALE:g}/(nβ·λ_max + γ)", "lambda_max": top}
    if config.sampler == "baoab" and config.friction == "auto":
        if config.localization <= 0:
            raise UserError("sampler baoab with friction auto (10√γ) needs localization > 0: set localization "
                            "or a friction")
        update["friction"] = FRICTION_SCALE * math.sqrt(config.localization)
    resolved = config.model_copy(update=update)
    return resolved, {**how, "relaxation_steps": relaxation_steps(resolved.model_dump())}


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


class _Update:
    """The sampler's update of C chains over stacked parameter tensors (leading dim C)."""

    def __init__(self, anchor, config: LLCConfig, n_beta: float):
        self.anchor = anchor  # per parameter, shape (1, ...) for broadcasting
        self.config, self.n_beta = config, n_beta
        self.flat = None  # (chains, d): every parameter's noise, drawn with one call per chain
        self.noise = None  # views of `flat`, one per parameter
        self.aux = None  # the sampler's own state: RMSProp's V, BAOAB's momentum p
        self.t = 0

    def _buffers(self, params) -> None:
        import torch

        sizes = [p[0].numel() for p in params]
        self.flat = torch.empty(params[0].shape[0], sum(sizes), dtype=params[0].dtype, device=params[0].device)
        self.noise = [part.view(p.shape) for part, p in zip(self.flat.split(sizes, dim=1), params)]

    def _draw(self, gens) -> None:
        for c, gen in enumerate(gens):
            self.flat[c].normal_(generator=gen)

    def step(self, params, grads, gens) -> None:
        """One step for every chain in place: params and grads are lists of (C, ...) tensors.

        Memory: besides the parameters it keeps the anchor w*, one noise buffer and (RMSProp) V
        or (BAOAB) p, each the size of the sampled parameters; the gradients are turned into the
        drift in place and the noise buffer holds the preconditioner, so a step allocates nothing.
        """
        import torch

        cfg = self.config
        if self.noise is None:
            self._buffers(params)
        if cfg.sampler == "rmsprop" and self.aux is None:
            self.aux = [torch.zeros_like(p) for p in params]
        self.t += 1
        with torch.no_grad():
            if cfg.sampler == "rmsprop":  # V ← αV + (1 − α)g², before g becomes the drift
                torch._foreach_mul_(self.aux, cfg.rmsprop_alpha)
                torch._foreach_addcmul_(self.aux, grads, grads, value=1 - cfg.rmsprop_alpha)
            drift = grads  # ∇U = nβ∇L + γ(w − w*), in place
            torch._foreach_mul_(drift, self.n_beta)
            torch._foreach_add_(drift, params, alpha=cfg.localization)
            torch._foreach_add_(drift, self.anchor, alpha=-cfg.localization)
            if cfg.sampler == "baoab":
                self._baoab(params, drift, gens)
            elif cfg.sampler == "rmsprop":
                self._rmsprop(params, drift, gens)
            else:
                torch._foreach_add_(params, drift, alpha=-cfg.step_size / 2)
                self._draw(gens)
                torch._foreach_add_(params, self.noise, alpha=math.sqrt(cfg.step_size))

    def _rmsprop(self, params, drift, gens) -> None:
        import torch

        cfg, eps = self.config, self.config.step_size
        precond = self.noise  # P = 1/(√V̂ + eps), V̂ bias-corrected, in the noise buffer
        torch._foreach_copy_(precond, self.aux)
        torch._foreach_div_(precond, 1 - cfg.rmsprop_alpha**self.t)
        torch._foreach_sqrt_(precond)
        torch._foreach_add_(precond, cfg.rmsprop_eps)
        torch._foreach_reciprocal_(precond)
        torch._foreach_mul_(drift, precond)
        torch._foreach_add_(params, drift, alpha=-eps / 2)
        torch._foreach_sqrt_(precond)  # √P scales the noise; the drift buffer is free again
        torch._foreach_copy_(drift, precond)
        self._draw(gens)
        torch._foreach_mul_(self.noise, drift)
        torch._foreach_add_(params, self.noise, alpha=math.sqrt(eps))

    def _baoab(self, params, drift, gens) -> None:
        """The closing B of the last step and the opening B of this one share ∇U at w: one
        kick of h (h/2 on the first step, whose momentum is drawn from N(0, I))."""
        import torch

        h = math.sqrt(self.config.step_size)
        c = math.exp(-self.config.friction * h)
        first = self.aux is None
        if first:
            self._draw(gens)
            self.aux = [n.clone() for n in self.noise]
        momentum = self.aux
        torch._foreach_add_(momentum, drift, alpha=-h / 2 if first else -h)
        torch._foreach_add_(params, momentum, alpha=h / 2)
        self._draw(gens)
        torch._foreach_mul_(momentum, c)
        torch._foreach_add_(momentum, self.noise, alpha=math.sqrt(1 - c * c))
        torch._foreach_add_(params, momentum, alpha=h / 2)


def _generators(config: LLCConfig, device):
    """One seeded stream per chain, on the parameters' device (minibatch picks and noise)."""
    import torch

    return [torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + c) for c in range(config.num_chains)]


class _Health:
    """Divergence checks on each chain's window means (see the module docstring)."""

    def __init__(self, config: LLCConfig, n_beta: float, init_loss: float, uniform: float | None, d: int):
        self.n_beta, self.init_loss = n_beta, init_loss
        self.uniform = uniform if uniform is not None and init_loss < uniform - UNIFORM_MARGIN else None
        self.limit, self.jump = config.runaway * d, config.jump
        self.history: list[list[float]] = [[] for _ in range(config.num_chains)]
        self.stopped: dict[int, tuple[int, str]] = {}  # chain → (steps taken, why)

    def active(self, chain: int) -> bool:
        return chain not in self.stopped

    def any_active(self, chains: int) -> bool:
        return len(self.stopped) < chains

    def check(self, traces, upto: int, chains) -> list[int]:
        """Judge `chains` on the window of CHECK_EVERY steps ending at `upto`; return those newly stopped."""
        import numpy as np

        window = traces[:, upto - CHECK_EVERY:upto].double().cpu().numpy()
        with np.errstate(invalid="ignore"):
            means = window.mean(axis=1)
        levels = self.n_beta * (means - self.init_loss)
        ready = [c for c in range(len(window)) if self.active(c) and np.isfinite(window[c]).all()]
        stopped = []
        for c in chains:
            if not self.active(c):
                continue
            others, own = [levels[o] for o in ready if o != c], self.history[c]
            reference = max(1.0, float(np.median(others)) if others else 1.0,
                            float(np.median(own)) if len(own) >= 2 else 1.0)
            why = None
            if not np.isfinite(window[c]).all():
                why = "its loss became non-finite"
            elif self.uniform is not None and means[c] > self.uniform:
                why = f"its loss ({means[c]:.2f} nats) rose above a uniform prediction's ({self.uniform:.2f})"
            elif levels[c] > self.limit:
                why = f"nβ·(L − L*) = {levels[c]:.3g} passed {self.limit:.3g} (runaway × d)"
            elif (others or len(own) >= 2) and levels[c] > self.jump * reference:
                why = f"nβ·(L − L*) = {levels[c]:.3g} jumped past {self.jump:g}× the other chains' and its own level"
            if why is None:
                self.history[c].append(float(levels[c]))
            else:
                self.stopped[c] = (upto, f"{why} by step {upto}")
                stopped.append(c)
        return stopped


class _Vectorized:
    """All chains at once: vmap of grad-and-value over stacked parameters and per-chain batches."""

    def __init__(self, model, names, anchor, data, loss_fn, config, n_beta):
        import torch
        from torch.func import functional_call, grad_and_value, vmap

        class LossOf(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, batch):
                return loss_fn(self.model, batch)

        wrapper = LossOf()

        def loss_single(params, batch):
            return functional_call(wrapper, {f"model.{n}": p for n, p in zip(names, params)}, (batch,))

        self.step_fn = vmap(grad_and_value(loss_single), in_dims=(0, 0), randomness="error")
        if config.compile:  # compiled once per model, loss and chains; later estimates on it (seeds) reuse it
            cache = model.__dict__.setdefault("_mdl_slt_compiled", {})
            key = (loss_fn, tuple(names), config.num_chains)
            if key not in cache:
                cache[key] = torch.compile(self.step_fn)
            self.step_fn = cache[key]
        self.params = [a.expand(config.num_chains, *a.shape[1:]).clone() for a in anchor]
        self.anchor, self.data, self.config = anchor, data, config
        self.update = _Update(anchor, config, n_beta)
        self.gens = _generators(config, anchor[0].device)

    def advance(self, start: int, stop: int, traces, health: _Health) -> None:
        import torch

        size = data_size(self.data)
        picks = torch.stack([_minibatches(size, self.config.batch_size, stop - start, g) for g in self.gens],
                            dim=1)  # (steps, chains, batch): a block's minibatches drawn at once
        for t in range(start, stop):
            grads, loss = self.step_fn(self.params, _pick(self.data, picks[t - start]))
            traces[:, t] = loss.detach()
            self.update.step(self.params, list(grads), self.gens)
            if (t + 1) % CHECK_EVERY == 0:
                for c in health.check(traces, t + 1, range(self.config.num_chains)):
                    with torch.no_grad():  # a stopped chain is held at w*, its slot idle until the run ends
                        for p, a in zip(self.params, self.anchor):
                            p[c].copy_(a[0])
                if not health.any_active(self.config.num_chains):
                    return


class _Sequential:
    """One chain after another on the model's own parameters; between blocks each chain's
    parameters (and RMSProp moments or BAOAB momenta) are kept in host memory, so chains can be
    extended block by block while the device holds one chain's state at a time."""

    def __init__(self, model, params, anchor, data, loss_fn, config, n_beta):
        self.model, self.params, self.anchor, self.data, self.loss_fn = model, params, anchor, data, loss_fn
        self.config = config
        self.update = _Update([a[0] for a in anchor], config, n_beta)
        self.gens = _generators(config, anchor[0].device)
        self.states: list = [None] * config.num_chains  # (parameters, sampler state, step count) per chain

    def advance(self, start: int, stop: int, traces, health: _Health) -> None:
        import torch

        size = data_size(self.data)
        views = [p.unsqueeze(0) for p in self.params]  # (1, ...) views: the update writes into the model
        for chain, gen in enumerate(self.gens):
            if not health.active(chain):
                continue
            state = self.states[chain]
            with torch.no_grad():
                for p, saved in zip(self.params, state[0] if state else [a[0] for a in self.anchor]):
                    p.copy_(saved)
            aux = None if not state or state[1] is None else [m.to(self.params[0].device) for m in state[1]]
            self.update.aux, self.update.t = aux, state[2] if state else 0
            picks = _minibatches(size, self.config.batch_size, stop - start, gen)
            for t in range(start, stop):
                loss = self.loss_fn(self.model, _pick(self.data, picks[t - start]))
                grads = torch.autograd.grad(loss, self.params)
                traces[chain, t] = loss.detach()
                self.update.step(views, [g.unsqueeze(0) for g in grads], [gen])
                if (t + 1) % CHECK_EVERY == 0 and health.check(traces, t + 1, [chain]):
                    break
            if health.active(chain):  # kept in host memory: the device holds one chain at a time
                aux = self.update.aux
                self.states[chain] = ([p.detach().to("cpu", copy=True) for p in self.params],
                                      None if aux is None else [m.to("cpu", copy=True) for m in aux], self.update.t)
            else:
                self.states[chain] = None


def _checkpointing(model, on: bool) -> None:
    """Switch activation (gradient) checkpointing on, in train mode, which transformers requires
    for it, or off, back to eval mode. Only for models whose dropout is zero, as Pythia's is:
    train mode must not change the loss. Newer transformers name it `activation_checkpointing`."""
    new = hasattr(model, "activation_checkpointing_enable")
    if not on:
        if getattr(model, "is_activation_checkpointing" if new else "is_gradient_checkpointing", False):
            model.activation_checkpointing_disable() if new else model.gradient_checkpointing_disable()
            if hasattr(model, "disable_input_require_grads"):  # enabling added this hook; disabling leaves it
                model.disable_input_require_grads()
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


def _vectorize(model, config: LLCConfig, device) -> bool:
    """vmap for plain modules; for transformers models only on CUDA, with eager attention (on CPU,
    chains one after another measured faster: see the README's speed table). Gradient
    checkpointing runs chain by chain."""
    if config.vectorize != "auto":
        return config.vectorize == "always" and not config.gradient_checkpointing
    if config.gradient_checkpointing or config.num_chains == 1:
        return False
    transformers_model = any(cls.__name__ == "PreTrainedModel" for cls in type(model).__mro__)
    return not transformers_model or device.type == "cuda"


def _converged(traces, steps: int, health: _Health, config: LLCConfig, n_beta: float, init_loss: float) -> bool:
    """Whether sampling can stop at `steps`: fixed draws are complete after the burn-in, or
    (`num_draws: auto`) R̂ and ESS after the burn-in meet their targets, past four relaxation times."""
    healthy = [c for c in range(config.num_chains) if health.active(c)]
    probe = Trace(traces[:, :steps].cpu().numpy(), init_loss, 0.0, n_beta, 0, None,
                  {c: "" for c in range(config.num_chains) if c not in healthy}, config.model_dump())
    burnin, _ = burnin_of(probe, steps)
    if config.num_draws != "auto":
        return steps - burnin >= config.num_draws * config.thinning
    if steps - burnin < config.block:
        return False
    found = chain_diagnostics(levels_of(probe, healthy, steps)[:, burnin::config.thinning])
    return meets_targets(found["r_hat"], found["ess"], probe.config, steps)


def sample(model, data, config: LLCConfig = LLCConfig(), loss_fn: Callable | None = None) -> Trace:
    """Run SGLD chains localized at `model`'s current parameters w*; return the whole trace.

    `data` is a LongTensor of token sequences (default loss: per-token cross-entropy), an (x, y)
    pair (default: `mse_loss`), or any tensor or tuple of tensors indexed along dim 0 with a
    `loss_fn(model, batch) -> scalar mean loss`. The model's parameters are restored to w* on return.
    """
    import torch

    from mdl_slt.lm_loss import eager_attention

    if data_size(data) < 1:
        raise UserError("estimate_llc needs non-empty data")
    chosen = select_parameters(model, config.parameters)
    names, params = [n for n, _ in chosen], [p for _, p in chosen]
    d = sum(p.numel() for p in params)
    device = params[0].device
    data = _to_device(data, device)
    if config.numerics == "auto":
        config = config.model_copy(update={"numerics": "bf16" if device.type == "cuda" else "fp32"})
    loss_fn = loss_fn or default_loss(data, config.numerics)
    config, how = resolve(config, model, data, loss_fn)
    n_beta = config.n_beta
    init_loss, init_se = reference_loss(model, data, loss_fn, config)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    uniform = math.log(vocab) if _is_tokens(data) and vocab else None
    anchor = [p.detach().clone().unsqueeze(0) for p in params]
    budget = config.budget_steps
    traces = torch.full((config.num_chains, budget), float("nan"), device=device)
    health = _Health(config, n_beta, init_loss, uniform, d)
    vectorized = _vectorize(model, config, device)
    start = time.perf_counter()
    try:
        _checkpointing(model, config.gradient_checkpointing)
        with eager_attention(model) if vectorized else nullcontext():
            runner = (_Vectorized(model, names, anchor, data, loss_fn, config, n_beta) if vectorized else
                      _Sequential(model, params, anchor, data, loss_fn, config, n_beta))
            steps = 0
            while steps < budget and health.any_active(config.num_chains):
                stop = budget if config.fixed_steps else min(budget, steps + config.block)
                runner.advance(steps, stop, traces, health)
                steps = stop
                if not config.fixed_steps and health.any_active(config.num_chains) and \
                        _converged(traces, steps, health, config, n_beta, init_loss):
                    break
    finally:
        _checkpointing(model, False)
        with torch.no_grad():
            for p, a in zip(params, anchor):
                p.copy_(a[0])
    losses = traces[:, :steps].float().cpu().numpy()
    for chain, (upto, _) in health.stopped.items():
        losses[chain, upto:] = float("nan")
    return Trace(losses, init_loss, init_se, n_beta, d, uniform, {c: why for c, (_, why) in health.stopped.items()},
                 config.model_dump(mode="json"), time.perf_counter() - start, vectorized, how)


def estimate_llc(model, data, config: LLCConfig = LLCConfig(), loss_fn: Callable | None = None) -> LLCResult:
    """Sample (see `sample`) and estimate λ̂ from the trace (see `mdl_slt.trace.estimate`)."""
    return estimate(sample(model, data, config, loss_fn))
