"""λ(ε), the learning coefficient at the scale of a tolerance ε.

The localized posterior at nβ sits E[ΔL] = λ̂(nβ)/nβ above w* on average (`regime`). λ(ε) is λ̂
sampled at the nβ_ε whose posterior sits at ε:

    nβ_ε = λ̂(nβ_ε) / ε.

In u = log nβ this is the root of f(u) = log λ̂(eᵘ) − u − log ε, whose derivative is s − 1, s the
local slope d log λ̂/d log nβ (0 in the volume law, 1 in the trace limit): a single root wherever
s < 1. Newton steps in u find it, s measured between the last two rungs (the first step takes
s = 0, the fixed-point step nβ ← λ̂/ε; a negative s, sampling noise, is taken as 0), until E[ΔL]
is within `tolerance` of ε. A slope of MAX_SLOPE or more between two converged rungs is the trace
limit, where E[ΔL] ≈ tr(H)/(2γ) whatever nβ: an ε above that cap cannot be reached, and the search
stops and says so. Read between rungs short of converged it is taken as MAX_SLOPE and the search
goes on (on micro-pythia-230k@step1000 two such rungs read a slope of 0.99 while λ̂ still climbed);
one rung moves nβ by at most MAX_FACTOR either way. Each rung's settings come from the last by
`regime.rung`. For a regular model with negligible localization λ(ε) = d/2 at every ε.

On token data the loss is the divergence from w*, D(w) = KL(p_w* ‖ p_w) per token
(`compute.loss.divergence_from`), not the cross-entropy: a checkpoint is not a minimum of its
sampling text at these nβ. On micro-pythia-90k@step1000 at nβ = 3·10⁴ (step 10⁻⁵, γ 300) the
cross-entropy chains settled 0.14 nats/token *below* L(w*) (λ̂ = −4,264): the set {L ≤ L* + ε}
there is the way down to a better fit, not a neighbourhood of w*. D is zero with zero gradient at
w*: its sublevel sets are neighbourhoods of w*, where a code within ε must land. On held-out text
it tracks the loss increase critical compression measures: ΔL/D = 0.82–1.49 for the suite's `rtn`
and `svd` compressions with ΔL ≥ 0.02 (micro-pythia-90k and 530k@step1000).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from mdl_slt.errors import UserError
from mdl_slt.llc.regime import rung, slope

MAX_SLOPE = 0.9  # a measured slope this steep ends the search: localization caps E[ΔL]
TOLERANCE = 0.05  # E[ΔL] within 5% of ε ends the search
MAX_RUNGS = 8
MAX_FACTOR = 10.0  # one rung moves nβ by at most this factor either way (a slope read from noisy rungs)


@dataclass
class Scale:
    """λ(ε) at one tolerance: the nβ found, λ̂ there with its error, and every rung sampled."""

    epsilon: float
    n_beta: float
    llc_mean: float
    llc_std_error: float
    converged: bool  # the last rung's chains met the convergence rules
    found: bool  # E[ΔL] = λ̂/nβ within the tolerance of ε
    rungs: list[dict] = field(default_factory=list)  # nβ, step, λ̂, its s.e., R̂, converged, E[ΔL]
    why: str = ""  # why not found

    @property
    def excess_loss(self) -> float:
        return self.llc_mean / self.n_beta

    def to_dict(self) -> dict:
        return asdict(self) | {"excess_loss": self.excess_loss}


def llc_at_scale(model, data, config, epsilon: float, loss_fn=None, tolerance: float = TOLERANCE,
                 max_rungs: int = MAX_RUNGS, progress=None) -> Scale:
    """λ(ε): λ̂ at the nβ whose posterior sits ε above w*, searched from `config`'s nβ, on `loss_fn`
    (token data: the divergence from w*; module docstring). `progress(rung, result)` is called
    after each rung."""
    from mdl_slt.compute.loss import divergence_from
    from mdl_slt.llc.batches import is_tokens
    from mdl_slt.llc.sampling import estimate_llc

    if loss_fn is None and is_tokens(data):
        loss_fn = divergence_from(model)
    if not epsilon > 0:
        raise UserError(f"λ(ε) needs a tolerance ε > 0, got {epsilon!r}")
    rungs, settings, previous = [], config, None
    for number in range(max_rungs):
        result = estimate_llc(model, data, settings, loss_fn)
        rungs.append({"n_beta": result.n_beta, "step_size": result.config["step_size"], "llc_mean": result.llc_mean,
                      "llc_std_error": result.llc_std_error, "r_hat": result.r_hat, "converged": result.converged,
                      "excess_loss": result.llc_mean / result.n_beta})
        if progress is not None:
            progress(number, result)
        if result.llc_mean <= 0:
            raise UserError(f"λ̂ = {result.llc_mean:.3g} at nβ = {result.n_beta:g}: w* is not a minimum of the sampled "
                            "loss at this scale, or the step is too large; λ(ε) needs a positive λ̂")
        miss = math.log(result.llc_mean / result.n_beta / epsilon)  # f(u)
        if abs(miss) <= math.log1p(tolerance):
            return Scale(epsilon, result.n_beta, result.llc_mean, result.llc_std_error, result.converged, True, rungs)
        local = 0.0
        if previous is not None and previous.n_beta != result.n_beta:
            local = slope(previous.llc_mean, result.llc_mean, math.sqrt(result.n_beta / previous.n_beta))
            if local >= MAX_SLOPE and previous.converged and result.converged:  # the trace limit
                why = (f"E[ΔL] stays near {result.llc_mean / result.n_beta:.3g} as nβ moves (slope {local:.2f}): "
                       f"localization caps it there; lower γ to reach ε = {epsilon:g}")
                return Scale(epsilon, result.n_beta, result.llc_mean, result.llc_std_error, result.converged, False,
                             rungs, why)
            local = min(max(local, 0.0), MAX_SLOPE) if math.isfinite(local) else 0.0
        factor = min(max(math.exp(miss / (1 - local)), 1 / MAX_FACTOR), MAX_FACTOR)  # Newton in u = log nβ
        settings, previous = rung(settings.model_copy(update={"n_beta": result.n_beta}), factor), result
    last = rungs[-1]
    return Scale(epsilon, last["n_beta"], last["llc_mean"], last["llc_std_error"], last["converged"], False, rungs,
                 f"E[ΔL] not within {tolerance:.0%} of ε after {max_rungs} rungs")

