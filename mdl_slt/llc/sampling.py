"""Sampling to a trace: the chains localized at w*, run until converged, and λ̂ estimated from them.

`sample(model, data, config)` resolves the `auto` settings, measures L_n(w*) once on the whole
fixed data set (or its first `reference_batches` batches), runs the chains (`chains`) under the
divergence checks (`health`) and returns a `Trace` of every step's minibatch loss, burn-in
included; `estimate_llc` estimates λ̂ = nβ·(E_p[L_B(w)] − L_n(w*)) from it (`trace.estimate`).

Converged by default: with `num_draws: auto` the chains run in blocks of `block` steps until,
after the burn-in (detected from the trace unless fixed), split R̂ ≤ `target_r_hat` and the
pooled bulk ESS ≥ `target_ess`, and at least four relaxation times of the slowest direction γ
holds have passed (`samplers.relaxation_steps`), or `max_steps` is reached; the result says
whether it converged.
"""

from __future__ import annotations

import fnmatch
import math
import time
from contextlib import nullcontext
from typing import Callable

from mdl_slt.errors import UserError
from mdl_slt.llc.batches import batches, data_size, default_loss, is_tokens, to_device
from mdl_slt.llc.chains import Sequential, Vectorized, checkpointing, vectorize
from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.health import Health
from mdl_slt.llc.samplers import SAMPLERS, relaxation_steps
from mdl_slt.llc.trace import LLCResult, Trace, burnin_of, chain_diagnostics, estimate, levels_of, meets_targets

STEP_SCALE = 0.3  # `step_size: auto` outside Pythia's table: η·(nβ·λ_max + γ) = STEP_SCALE (see the README)
FISHER_PROBES = 16  # Rademacher probes of the Hessian's diagonal, a `preconditioned` sampler's M
FISHER_STEP_SCALE = 0.1  # preconditioned, step auto: η·λ_max(M^½·(nβ·H + γ)·M^½); a quadratic's stiffest variance +2.6%


def resolve_n_beta(config: LLCConfig, data) -> float:
    """nβ as set, or n/log n with n the number of data points (predicted tokens for token data)."""
    if config.n_beta != "auto":
        return float(config.n_beta)
    n = data.shape[0] * (data.shape[1] - 1) if is_tokens(data) and data.ndim == 2 else data_size(data)
    return n / math.log(n)


def resolve(config: LLCConfig, model, data, loss_fn, curvature: list | None = None) -> tuple[LLCConfig, dict]:
    """The config with nβ, the step size and the sampler's own `auto` settings made concrete for
    this model and data, and how: for a `preconditioned` sampler η from λ_max of the preconditioned
    Hessian (its diagonal `curvature`, estimated when not given); else the paper's step for a model
    of a Pythia size, else η from λ_max of ∇²L at w*; with the relaxation time these settings imply
    (`samplers.relaxation_steps`)."""
    from mdl_slt.models.pythia import default_step_size, is_pythia_sized

    update, how = {"n_beta": resolve_n_beta(config, data)}, {}
    if config.step_size == "auto" and SAMPLERS[config.sampler].preconditioned:
        from mdl_slt.llc.curvature import hessian_diagonal, preconditioned_top

        params = [p for _, p in select_parameters(model, config.parameters)]
        if curvature is None:
            curvature = hessian_diagonal(model, params, data, loss_fn, FISHER_PROBES, config.seed)
        top = preconditioned_top(model, params, data, loss_fn, curvature, update["n_beta"], config.localization,
                                 seed=config.seed)
        update["step_size"] = FISHER_STEP_SCALE / max(top, 1e-12)
        how = {"step_size_rule": f"η = {FISHER_STEP_SCALE:g}/λ_max(M^½·(nβ·H + γ)·M^½)", "lambda_max": top}
    elif config.step_size == "auto":
        count = sum(p.numel() for p in model.parameters())
        if is_pythia_sized(model):
            update["step_size"] = default_step_size(count)
            how = {"step_size_rule": "the paper's step for the nearest Pythia size"}
        else:
            from mdl_slt.llc.curvature import top_hessian_eigenvalue

            top = top_hessian_eigenvalue(model, data, loss_fn, batch_size=config.batch_size * 4)
            update["step_size"] = STEP_SCALE / (update["n_beta"] * max(top, 0.0) + config.localization)
            how = {"step_size_rule": f"η = {STEP_SCALE:g}/(nβ·λ_max + γ)", "lambda_max": top}
    update.update(SAMPLERS[config.sampler].resolve(config))
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


def reference_loss(model, data, loss_fn, config: LLCConfig) -> tuple[float, float, float]:
    """L_n(w*) over the whole set (standard error 0), or its first `reference_batches` batches with
    the standard error of their mean; and σ_B, the spread of one minibatch's loss there (0 for one batch)."""
    import torch

    losses, sizes = [], []
    with torch.no_grad():
        for i, (batch, n) in enumerate(batches(data, config.batch_size)):
            if config.reference_batches is not None and i >= config.reference_batches:
                break
            losses.append(float(loss_fn(model, batch)))
            sizes.append(n)
    mean = sum(l * n for l, n in zip(losses, sizes)) / sum(sizes)
    if len(losses) < 2:
        return mean, 0.0, 0.0
    spread = math.sqrt(sum((l - mean) ** 2 for l in losses) / (len(losses) - 1))
    return mean, 0.0 if config.reference_batches is None else spread / math.sqrt(len(losses)), spread


def _converged(traces, steps: int, health: Health, config: LLCConfig, n_beta: float, init_loss: float) -> bool:
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


def sample(model, data, config: LLCConfig = LLCConfig(), loss_fn: Callable | None = None,
           progress: Callable[[int, int], None] | None = None) -> Trace:
    """Run SGLD chains localized at `model`'s current parameters w*; return the whole trace.

    `data` is a LongTensor of token sequences (default loss: per-token cross-entropy), an (x, y)
    pair (default: `mse_loss`), or any tensor or tuple of tensors indexed along dim 0 with a
    `loss_fn(model, batch) -> scalar mean loss`. `progress(steps, budget)` is called after each block
    of steps per chain. The model's parameters are restored to w* on return.
    """
    import torch

    from mdl_slt.compute.loss import eager_attention

    if data_size(data) < 1:
        raise UserError("estimate_llc needs non-empty data")
    chosen = select_parameters(model, config.parameters)
    names, params = [n for n, _ in chosen], [p for _, p in chosen]
    d = sum(p.numel() for p in params)
    device = params[0].device
    data = to_device(data, device)
    if config.numerics == "auto":
        config = config.model_copy(update={"numerics": "bf16" if device.type == "cuda" else "fp32"})
    loss_fn = loss_fn or default_loss(data, config.numerics)
    curvature = None
    if SAMPLERS[config.sampler].preconditioned:
        from mdl_slt.llc.curvature import hessian_diagonal

        curvature = hessian_diagonal(model, params, data, loss_fn, FISHER_PROBES, config.seed)
    config, how = resolve(config, model, data, loss_fn, curvature)
    n_beta = config.n_beta
    init_loss, init_se, spread = reference_loss(model, data, loss_fn, config)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    uniform = math.log(vocab) if is_tokens(data) and vocab else None
    anchor = [p.detach().clone().unsqueeze(0) for p in params]
    budget = config.budget_steps
    traces = torch.full((config.num_chains, budget), float("nan"), device=device)
    health = Health(config, n_beta, init_loss, uniform, d, spread)
    vectorized = vectorize(model, config, device)
    start = time.perf_counter()
    try:
        checkpointing(model, config.gradient_checkpointing)
        with eager_attention(model) if vectorized else nullcontext():
            diagonal = None if curvature is None else [c.to(device).unsqueeze(0) for c in curvature]
            runner = (Vectorized(model, names, anchor, data, loss_fn, config, n_beta, diagonal)
                      if vectorized else
                      Sequential(model, params, anchor, data, loss_fn, config, n_beta,
                                 config.compile and not config.gradient_checkpointing, diagonal))
            steps = 0
            while steps < budget and health.any_active(config.num_chains):
                stop = budget if config.fixed_steps else min(budget, steps + config.block)
                runner.advance(steps, stop, traces, health)
                steps = stop
                if progress is not None:
                    progress(steps, budget)
                if not config.fixed_steps and health.any_active(config.num_chains) and \
                        _converged(traces, steps, health, config, n_beta, init_loss):
                    break
    finally:
        checkpointing(model, False)
        with torch.no_grad():
            for p, a in zip(params, anchor):
                p.copy_(a[0])
    losses = traces[:, :steps].float().cpu().numpy()
    for chain, (upto, _) in health.stopped.items():
        losses[chain, upto:] = float("nan")
    return Trace(losses, init_loss, init_se, n_beta, d, uniform, {c: why for c, (_, why) in health.stopped.items()},
                 config.model_dump(mode="json"), time.perf_counter() - start, vectorized, how)


def estimate_llc(model, data, config: LLCConfig = LLCConfig(), loss_fn: Callable | None = None,
                 progress: Callable[[int, int], None] | None = None) -> LLCResult:
    """Sample (see `sample`) and estimate λ̂ from the trace (see `mdl_slt.llc.trace.estimate`)."""
    return estimate(sample(model, data, config, loss_fn, progress))
