"""The samplers, one class each: its update, its own settings and their `auto` values, its relaxation time.

Every sampler draws from the posterior localized at the trained parameter w*,
    p(w) ∝ exp(−U(w)),   U(w) = nβ·L_B(w) + (γ/2)‖w − w*‖²,
on a minibatch B, and steps C chains at once over stacked parameters (leading dim C).

- `sgld`: Δw = −(η/2)·∇U + N(0, η) (Welling & Teh 2011; Lau et al., arXiv 2308.12108).
- `rmsprop`: the same with the preconditioner P = 1/(√V̂ + eps), V ← αV + (1 − α)(∇L_B)², V̂
  bias-corrected: Δw = −(η/2)·P∇U + N(0, η·P) (Hitchcock & Hoogland, arXiv 2507.21449).
- `baoab`: underdamped Langevin with momentum p, time step h = √η and friction ζ, split
  B-A-O-A-B (Leimkuhler & Matthews 2013): p ← p − (h/2)∇U;  w ← w + (h/2)p;
  p ← c·p + √(1 − c²)·N(0, I), c = e^(−ζh);  w ← w + (h/2)p;  p ← p − (h/2)∇U. It samples a
  quadratic U exactly for any stable h (h²·a < 4), and the directions held only by γ relax in
  about ζ/(2γh) steps (ζ ≥ 2√γ) where SGLD takes 1/(ηγ): far fewer on stiff, nearly singular
  models. `friction: auto` is ζ = 10√γ, five times the critical damping of those directions: with
  critical damping the chains of an 874k-parameter deep linear network overshot and diverged. It
  wants exact gradients (`batch_size` at least the data size): minibatch noise heats it in
  proportion to 1/ζ.

Adding a sampler is one subclass of `Sampler` (its `name`, its `Settings` if it has settings of
its own, `move`, `relaxation_steps`, and `observe` / `resolve` / `preconditioned` where needed)
and one line in `SAMPLERS`; `LLCConfig` takes its settings from the registry.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, field_validator

from mdl_slt.errors import UserError

FRICTION_SCALE = 10.0  # BAOAB's `friction: auto` = FRICTION_SCALE·√γ


class Sampler:
    """The update of C chains over stacked parameter tensors (leading dim C).

    Memory: besides the parameters it keeps the anchor w*, one noise buffer and the sampler's own
    state (`aux`: RMSProp's V, BAOAB's momentum), each the size of the sampled parameters; the
    gradients are turned into the drift in place, so a step allocates nothing.
    """

    name: ClassVar[str]
    preconditioned: ClassVar[bool] = False  # needs the Hessian's diagonal at w* (`curvature`)

    class Settings(BaseModel):
        """The settings this sampler adds to `LLCConfig` (none by default)."""

    def __init__(self, anchor, config, n_beta: float, curvature=None):
        """`curvature`: per parameter, the Hessian's diagonal at w* (shape (1, ...)), given to a
        `preconditioned` sampler."""
        self.anchor = anchor  # per parameter, shape (1, ...) for broadcasting
        self.config, self.n_beta = config, n_beta
        self.flat = None  # (chains, d): every parameter's noise, drawn with one call per chain
        self.noise = None  # views of `flat`, one per parameter
        self.aux = None  # the sampler's own state, kept per chain by the sequential runner
        self.t = 0  # steps taken

    @classmethod
    def resolve(cls, config) -> dict:
        """Concrete values for this sampler's own `auto` settings."""
        return {}

    @staticmethod
    def relaxation_steps(step: float, gamma: float, config: dict) -> float:
        """Steps for the variance of a direction of curvature γ alone to relax by a factor e."""
        raise NotImplementedError

    def observe(self, grads) -> None:
        """Whatever the sampler learns from ∇L_B before it becomes the drift."""

    def move(self, params, drift, gens) -> None:
        """One step of every chain in place, given the drift ∇U."""
        raise NotImplementedError

    def _buffers(self, params) -> None:
        import torch

        sizes = [p[0].numel() for p in params]
        self.flat = torch.empty(params[0].shape[0], sum(sizes), dtype=params[0].dtype, device=params[0].device)
        self.noise = [part.view(p.shape) for part, p in zip(self.flat.split(sizes, dim=1), params)]

    def _draw(self, gens) -> None:
        for c, gen in enumerate(gens):
            self.flat[c].normal_(generator=gen)

    def step(self, params, grads, gens) -> None:
        """One step for every chain in place: params and grads are lists of (C, ...) tensors."""
        import torch

        if self.noise is None:
            self._buffers(params)
        self.t += 1
        with torch.no_grad():
            self.observe(grads)
            drift = grads  # ∇U = nβ∇L + γ(w − w*), in place
            torch._foreach_mul_(drift, self.n_beta)
            torch._foreach_add_(drift, params, alpha=self.config.localization)
            torch._foreach_add_(drift, self.anchor, alpha=-self.config.localization)
            self.move(params, drift, gens)


class SGLD(Sampler):
    """Plain SGLD: Δw = −(η/2)·∇U + N(0, η)."""

    name = "sgld"

    @staticmethod
    def relaxation_steps(step: float, gamma: float, config: dict) -> float:
        return 1 / (step * gamma)

    def move(self, params, drift, gens) -> None:
        import torch

        torch._foreach_add_(params, drift, alpha=-self.config.step_size / 2)
        self._draw(gens)
        torch._foreach_add_(params, self.noise, alpha=math.sqrt(self.config.step_size))


class RMSProp(Sampler):
    """RMSProp-preconditioned SGLD: Δw = −(η/2)·P∇U + N(0, η·P), P = 1/(√V̂ + eps)."""

    name = "rmsprop"

    class Settings(BaseModel):
        rmsprop_alpha: float = Field(0.99, gt=0, lt=1)
        rmsprop_eps: float = Field(0.1, gt=0, description="caps the preconditioner at 1/eps (devinterp's default): "
                                   "near an exact minimum V → 0 and a tiny eps would blow the step up")

    @staticmethod
    def relaxation_steps(step: float, gamma: float, config: dict) -> float:
        """The preconditioner is 1/eps where V → 0, as along a direction only γ holds."""
        return config["rmsprop_eps"] / (step * gamma)

    def observe(self, grads) -> None:
        """V ← αV + (1 − α)g², before g becomes the drift."""
        import torch

        if self.aux is None:
            self.aux = [torch.zeros_like(g) for g in grads]
        torch._foreach_mul_(self.aux, self.config.rmsprop_alpha)
        torch._foreach_addcmul_(self.aux, grads, grads, value=1 - self.config.rmsprop_alpha)

    def move(self, params, drift, gens) -> None:
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


class BAOAB(Sampler):
    """Underdamped Langevin, BAOAB splitting with h = √η and friction ζ (module docstring)."""

    name = "baoab"

    class Settings(BaseModel):
        friction: float | Literal["auto"] = Field("auto", description="baoab's friction ζ; auto = 10√γ, five "
                                                                      "times the critical damping of the directions "
                                                                      "only γ holds")

        @field_validator("friction")
        @classmethod
        def _positive_friction(cls, value):
            if value != "auto" and value <= 0:
                raise ValueError("friction must be positive, or auto")
            return value

    @classmethod
    def resolve(cls, config) -> dict:
        if config.friction != "auto":
            return {}
        if config.localization <= 0:
            raise UserError("sampler baoab with friction auto (10√γ) needs localization > 0: set localization "
                            "or a friction")
        return {"friction": FRICTION_SCALE * math.sqrt(config.localization)}

    @staticmethod
    def relaxation_steps(step: float, gamma: float, config: dict) -> float:
        """1/(2r·h), h = √η, r = ζ/2 − √(ζ²/4 − γ) for ζ ≥ 2√γ, else ζ/2."""
        friction = config["friction"]
        rate = friction / 2 - math.sqrt(max(friction**2 / 4 - gamma, 0.0))
        return 1 / (2 * rate * math.sqrt(step))

    def move(self, params, drift, gens) -> None:
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


class Fisher(Sampler):
    """SGLD preconditioned by the curvature's diagonal, held fixed: M = 1/(nβ·F + γ) with F the
    diagonal of the Hessian at w* (`curvature.hessian_diagonal`); Δw = −(η/2)·M∇U + N(0, η·M). A
    fixed M needs no correction term: the chain samples exp(−U) exactly as η → 0. Where the Hessian
    is close to its diagonal every direction relaxes in about 1/η steps, so η is a dimensionless step
    (0.1 relaxes in ten), where plain SGLD's slowest direction takes nβ·h_max/(nβ·h_min + γ) times
    longer than its fastest."""

    name = "fisher"
    preconditioned = True

    def __init__(self, anchor, config, n_beta: float, curvature=None):
        import torch

        super().__init__(anchor, config, n_beta)
        if curvature is None:
            raise UserError("sampler fisher needs the curvature's diagonal at w* (estimate_llc computes it)")
        self.root = [torch.rsqrt(n_beta * f + config.localization) for f in curvature]  # √M

    @staticmethod
    def relaxation_steps(step: float, gamma: float, config: dict) -> float:
        """A direction only γ holds has M = 1/γ: it relaxes at rate η."""
        return 1 / step

    def move(self, params, drift, gens) -> None:
        import torch

        torch._foreach_mul_(drift, self.root)
        torch._foreach_mul_(drift, self.root)
        torch._foreach_add_(params, drift, alpha=-self.config.step_size / 2)
        self._draw(gens)
        torch._foreach_mul_(self.noise, self.root)
        torch._foreach_add_(params, self.noise, alpha=math.sqrt(self.config.step_size))


SAMPLERS: dict[str, type[Sampler]] = {s.name: s for s in (SGLD, RMSProp, BAOAB, Fisher)}


def relaxation_steps(config: dict) -> float:
    """Steps for the variance of a direction held only by γ (curvature γ) to relax by a factor e,
    from the resolved sampler settings (each sampler's own formula); 0 without localization
    (no such direction to go by) or before the step is resolved."""
    step, gamma = config.get("step_size"), config.get("localization", 0.0)
    if gamma <= 0 or not isinstance(step, (int, float)):
        return 0.0
    return SAMPLERS[config.get("sampler", "sgld")].relaxation_steps(step, gamma, config)
