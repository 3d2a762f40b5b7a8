"""The variational code (Hinton & van Camp 1993): a sample of a Gaussian posterior over the weights,
sent by relative-entropy coding (compressors.rec) in about KL(q‖p) bits.

At temperature T, q = N(μ, σ²) (one per weight) minimises E_q[L] + T·KL(q‖p) against the prior
p = N(0, s²), s per matrix. It starts from the Laplace form: the loss read as ½·Σ h_i·(v_i − w*_i)²,
h the diagonal of the Fisher information on the training text (labels drawn from the model,
`fisher_labels` draws per sequence, one gradient g of the summed log-loss each, h = mean g² per
position: the positions' scores are uncorrelated), so that

    1/σ² = h/T + 1/s²,   μ = w* (`mean: checkpoint`)   or   μ = (h/T)·σ²·w* (`mean: laplace`),

and s the one minimising KL(q‖p) over the matrix. Then `fit_steps` of Adam on log σ (and on μ with
`mean: learned`, starting from w*) minimise L(μ + σ·ξ) on a batch of the training text plus T·KL,
the Fisher's quadratic replaced by the loss itself. A weight the loss ignores (h = 0) costs nothing
when its mean may move (laplace, learned); held at the checkpoint it pays w*²/(2s²) nats.

The knob is log₁₀ T: more knob, a wider posterior, fewer bits, in eight steps a decade from 10⁻¹⁰
to 10⁻¹. The model evaluated (and saved) is the one the decoder rebuilds from the code's bytes
(`code`); each draw is another seed of the code.

Description length: `block_bits` C per block index (payload), the seed, C and per matrix its
prior scale and block count (side), untouched parameters at 32 bits. A block holds C − o bits of
KL (`overhead_bits` o), so KL(q‖p) ≤ payload ≤ KL + o bits a block. The decoded weights' law
approaches q as o grows: their variance about μ is 24–26% above σ² at o = 2, 4–6% at o = 4 and
within its error (±1%) at o = 6, each 2 bits costing 4× the candidates. At equal measured loss
10-bit blocks at o = 2 (the default) and 12-bit blocks at o = 4 give the same length on
micro-pythia-90k@step1000; o = 6 gives a longer one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from compressors import rec
from compressors.registry import Compressor, Cost, DescriptionLength, Knob, Prepared, register
from mdl_slt.errors import UserError

STEPS_PER_DECADE = 8


def fisher_diagonal(model, params, tokens, seed: int = 0, labels: int = 1) -> list:
    """The per-token Fisher information's diagonal of each of `params` on the token sequences
    `tokens` (a LongTensor, one sequence a row), labels drawn from the model: float64 on the host."""
    import torch
    import torch.nn.functional as F

    from mdl_slt.compute.loss import next_token_logits

    draw = torch.Generator(device="cpu").manual_seed(seed)
    sums = [torch.zeros(p.numel(), dtype=torch.float64, device="cpu") for p in params]
    for sequence in tokens:
        logits = next_token_logits(model, sequence[None])[0]
        with torch.no_grad():
            drawn = torch.multinomial(logits.softmax(-1).cpu(), labels, replacement=True, generator=draw)
        for k in range(labels):
            nll = F.cross_entropy(logits, drawn[:, k].to(logits.device), reduction="sum")
            for total, grad in zip(sums, torch.autograd.grad(nll, params, retain_graph=k < labels - 1)):
                total += grad.detach().double().cpu().reshape(-1).pow(2)
    positions = len(tokens) * (tokens.shape[1] - 1) * labels
    return [total / positions for total in sums]


def fit_posterior(model, targets, families: list, tau: float, tokens, steps: int, lr: float, batch: int,
                  learn_mean: bool, seed: int = 0) -> list:
    """Fit q = N(μ, σ²) to the training text: minimise L(μ + σ·ξ) on a random batch of `tokens` plus
    τ·KL(q‖p), by Adam on log σ (step `lr`) and, where `learn_mean`, on μ (step `lr`·s), from each
    family's q at τ, the prior scales held. Returns each matrix's fitted q as a family through it at
    τ: curvature τ·(1/σ² − 1/s²), σ kept below s·(1 − 10⁻⁶); a learned mean is the shrunk mean of the
    centre that gives it at τ."""
    import torch
    from torch.func import functional_call

    from mdl_slt.compute.loss import token_nll

    device = targets[0].param.device
    start = [family.at(tau) for family in families]
    means = [mu.float().to(device).requires_grad_(learn_mean) for mu, _ in start]
    logs = [sigma.log().float().to(device).requires_grad_() for _, sigma in start]
    ceilings = [math.log(family.scale) + math.log1p(-1e-6) for family in families]
    groups = [{"params": logs}] + ([{"params": [mu], "lr": lr * f.scale} for mu, f in zip(means, families)]
                                   if learn_mean else [])
    optimizer = torch.optim.Adam(groups, lr=lr)
    draw = torch.Generator(device="cpu").manual_seed(seed)

    class Sampled(torch.nn.Module):  # the model with its targets drawn from q
        def forward(self, input_ids):
            noise = [torch.randn(mu.shape, generator=draw, device="cpu").to(device) for mu in means]
            weights = {t.name: (mu + log.exp() * xi).view(t.param.shape)
                       for t, mu, log, xi in zip(targets, means, logs, noise)}
            return functional_call(model, weights, args=(), kwargs={"input_ids": input_ids})

    sampled = Sampled()
    for _ in range(steps):
        rows = torch.randint(0, len(tokens), (min(batch, len(tokens)),), generator=draw, device="cpu")
        kl = sum(rec.kl_nats(mu, log.exp(), f.scale).sum() for mu, log, f in zip(means, logs, families))
        objective = token_nll(sampled, tokens[rows].to(device)) + tau * kl
        optimizer.zero_grad()
        objective.backward()
        optimizer.step()
        with torch.no_grad():
            for log, ceiling in zip(logs, ceilings):
                log.clamp_(max=ceiling)
    fitted = []
    for family, mu, log, ceiling in zip(families, means, logs, ceilings):
        mu, sigma = mu.detach().double().cpu(), log.detach().double().cpu().clamp(max=ceiling).exp()
        curvature = tau * (sigma.pow(-2) - family.scale**-2)
        shrinks = family.shrinks or learn_mean  # a mean that moved from w* moves with τ, along the shrunk path
        centre = mu / (1 - (sigma / family.scale) ** 2) if shrinks else family.w  # whose shrunk mean is μ at τ
        fitted.append(rec.GaussianFamily(centre, curvature, family.scale, shrinks))
    return fitted


@register
@dataclass(frozen=True)
class Variational(Compressor):
    """A Gaussian posterior's sample sent by relative-entropy coding, log₁₀ temperature as knob."""

    name: ClassVar[str] = "variational"
    knob: ClassVar[Knob] = Knob(name="temperature", low=-10.0, high=-1.0, identity=-math.inf,
                                more_compression="higher", unit="log₁₀ T",
                                description="log₁₀ of the posterior's temperature T, q minimising E_q[L] + T·KL(q‖p)",
                                precision=1 / STEPS_PER_DECADE)
    mean: Literal["checkpoint", "laplace", "learned"] = "checkpoint"
    fit_steps: Annotated[int, Field(ge=0)] = 300
    fit_lr: Annotated[float, Field(gt=0)] = 0.05
    fit_batch: Annotated[int, Field(ge=1)] = 16
    fisher_sequences: Annotated[int, Field(ge=1)] = 256
    fisher_labels: Annotated[int, Field(ge=1, le=64)] = 4
    block_bits: Annotated[int, Field(ge=4, le=20)] = 10
    overhead_bits: Annotated[int, Field(ge=0, le=12)] = 2
    draws: Annotated[int, Field(ge=1, le=100)] = 1
    seed: Annotated[int, Field(ge=0, lt=2**31)] = 0

    def __post_init__(self):
        if self.overhead_bits >= self.block_bits:
            raise UserError(f"variational: overhead_bits ({self.overhead_bits}) must be below block_bits "
                            f"({self.block_bits}): a block holds block_bits − overhead_bits bits of KL")

    @property
    def num_draws(self) -> int:
        return self.draws

    def cost(self) -> Cost:
        return Cost(self.draws, f"per knob value a fit of {self.fit_steps} steps; per draw one encoding and one "
                                f"decoding over 2^{self.block_bits} candidates a block")

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        steps = round(value * STEPS_PER_DECADE)
        return min(max(steps, round(self.knob.low * STEPS_PER_DECADE)), round(self.knob.high * STEPS_PER_DECADE)) \
            / STEPS_PER_DECADE

    def levels(self, prepared: Prepared) -> list[float]:
        low, high = (round(end * STEPS_PER_DECADE) for end in (self.knob.low, self.knob.high))
        return [step / STEPS_PER_DECADE for step in range(low, high + 1)]

    def prepare(self, model, calibration=None) -> Prepared:
        if calibration is None:
            raise UserError("variational needs calibration tokens: its posterior is fitted on the training text")
        prepared = super().prepare(model, calibration)
        prepared.cache["fisher"] = fisher_diagonal(model, [t.param for t in prepared.targets],
                                                   calibration[:self.fisher_sequences], self.seed, self.fisher_labels)
        return prepared

    def posterior(self, prepared: Prepared, value: float) -> list[rec.GaussianFamily]:
        """Each target's fitted posterior at knob `value` (log₁₀ T), as a family through it; the last
        value's is kept."""
        if prepared.cache.get("posterior", (None,))[0] != value:
            tau = 10.0**value
            families = [rec.with_prior(t.original.detach().double().cpu().reshape(-1), h, tau, self.mean == "laplace")
                        for t, h in zip(prepared.targets, prepared.cache["fisher"])]
            if self.fit_steps:
                families = fit_posterior(prepared.model, prepared.targets, families, tau, prepared.calibration,
                                         self.fit_steps, self.fit_lr, self.fit_batch, self.mean == "learned",
                                         self.seed)
            prepared.cache["posterior"] = (value, families)
        return prepared.cache["posterior"][1]

    def plans(self, prepared: Prepared, value: float, draw: int = 0) -> list[rec.MatrixPlan]:
        """Each target's blocks and tempered posterior at knob `value`."""
        tau, seed = 10.0**value, self._seed(draw)
        return [rec.plan_matrix(family, tau, self.block_bits - self.overhead_bits, seed, j)
                for j, family in enumerate(self.posterior(prepared, value))]

    def code(self, prepared: Prepared, value: float, draw: int = 0) -> bytes:
        """The bytes a decoder rebuilds the targets from (compressors.rec); the last value's are kept, so
        saving a model after applying it encodes once."""
        if prepared.cache.get("code", (None,))[0] != (value, draw):
            data = rec.encode(self.plans(prepared, value, draw), self.block_bits, self._seed(draw))[0]
            prepared.cache["code"] = ((value, draw), data)
        return prepared.cache["code"][1]

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        import torch

        decoded = rec.decode(self.code(prepared, value, draw), [t.original.numel() for t in prepared.targets])
        with torch.no_grad():
            for t, flat in zip(prepared.targets, decoded):
                t.param.copy_(flat.view(t.param.shape).to(t.param.device, t.param.dtype))

    def _description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        key = ("blocks", value)
        if key not in prepared.cache:
            prepared.cache[key] = sum(plan.blocks for plan in self.plans(prepared, value))
        return self._length(prepared, payload=self.block_bits * prepared.cache[key],
                            side=32.0 + 8.0 + 64.0 * len(prepared.targets))

    def _seed(self, draw: int) -> int:
        return (self.seed * 1_000_003 + draw) % 2**32
