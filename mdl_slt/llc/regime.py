"""Where a λ̂ was sampled: how far its posterior sits above w*, how close it is to the limit that
localization sets, and how it moves with nβ.

For a quadratic loss ½·Σ h_i·v_i² around w* (eigenvalues h_i of the Hessian H) the localized
posterior is Gaussian and, exactly,

    λ̂(nβ, γ) = Σ_i ½·nβ·h_i / (nβ·h_i + γ).

Each term is ½ (a regular direction's share of d/2) when nβ·h_i ≫ γ, the asymptotic regime in which
λ̂ measures the volume law; and ½·nβ·h_i/γ when nβ·h_i ≪ γ. So λ̂ ≤ T, the trace limit,

    T = nβ·tr(H) / (2γ),

with equality when localization dominates every direction: λ̂ is then a rescaled Hessian trace.
The posterior's mean height above w* is E[ΔL] = λ̂/nβ nats per token: the loss scale λ̂ describes,
to set beside the tolerances ε at which compression is measured. The local slope

    s = d log λ̂ / d log nβ  (= Σ_i ½·x_i·γ/(x_i + γ)² / λ̂, x_i = nβ·h_i, for the quadratic)

is 0 in the volume law and 1 in the trace limit; a ladder reads it from λ̂ at nβ/m and nβ·m (`rung`).
At the scale of a tolerance (`scale`), λ(ε) gives the code length the volume law implies
(`volume_code_bits`).
"""

from __future__ import annotations

import math

from mdl_slt.errors import UserError

LADDER = 3.0  # the ladder's factor m: λ̂ at nβ/3 and 3·nβ around the main nβ
TRACE_BAND = 1.25  # λ̂ within this factor of T: the trace limit; the regime names follow from it and the slope
SLOPE_TRACE, SLOPE_VOLUME = 0.75, 0.25  # slopes at or above: the trace limit; at or below: the volume law


def gaussian_llc(curvatures, n_beta: float, gamma: float) -> float:
    """λ̂ of the localized Gaussian posterior: Σ ½·nβ·h/(nβ·h + γ) over the Hessian's eigenvalues."""
    return float(sum(0.5 * n_beta * h / (n_beta * h + gamma) for h in curvatures))


def gaussian_slope(curvatures, n_beta: float, gamma: float) -> float:
    """d log λ̂ / d log nβ of the localized Gaussian posterior."""
    x = [n_beta * h for h in curvatures]
    return float(sum(0.5 * v * gamma / (v + gamma) ** 2 for v in x)) / gaussian_llc(curvatures, n_beta, gamma)


def trace_limit(hessian_trace: float, n_beta: float, gamma: float) -> float:
    """T = nβ·tr(H)/(2γ), the λ̂ of a posterior whose every direction localization dominates."""
    return n_beta * hessian_trace / (2 * gamma)


def slope(low: float, high: float, factor: float = LADDER) -> float:
    """d log λ̂ / d log nβ from λ̂ at nβ/factor and nβ·factor (NaN unless both are positive)."""
    return math.log(high / low) / math.log(factor ** 2) if low > 0 and high > 0 else math.nan


def regime(ratio: float, local_slope: float = math.nan) -> str:
    """The regime's name: from the slope where a ladder measured it, else from λ̂/T alone (which can
    only tell the trace limit)."""
    if not math.isnan(local_slope):
        return ("trace limit" if local_slope >= SLOPE_TRACE else "volume law" if local_slope <= SLOPE_VOLUME
                else "crossover")
    if math.isnan(ratio):
        return "unknown"
    return "trace limit" if 1 / TRACE_BAND <= ratio <= TRACE_BAND else "not the trace limit"


def rung(config, factor: float):
    """The sampler settings at nβ·factor. Up the ladder the step is divided by the factor (η·nβ, the
    loss's share of the drift, fixed); down it, kept (η·γ, localization's share, must not grow). A
    preconditioned sampler's step is scale-free and kept; `auto` stays auto, each rung resolving its own."""
    from mdl_slt.llc.samplers import SAMPLERS

    if not isinstance(config.n_beta, (int, float)):
        raise UserError("a ladder of nβ needs a number for n_beta (not auto)")
    kept = config.step_size == "auto" or SAMPLERS[config.sampler].preconditioned or factor <= 1
    step = config.step_size if kept else config.step_size / factor
    return config.model_copy(update={"n_beta": config.n_beta * factor, "step_size": step})


def volume_code_bits(epsilons: list[float], llcs: list[float]) -> list[float]:
    """DL_λ(ε) = ∫ λ(s) d log₂(1/s) from the widest tolerance down to each ε, in bits: the length the
    volume law gives a code within ε beyond one within the widest (−log₂ V(ε) + log₂ V(ε_max)), by
    the trapezoid rule in log₂(1/s) between the measured tolerances; in the order given."""
    if len(epsilons) != len(llcs) or not all(e > 0 for e in epsilons):
        raise UserError(f"DL_λ(ε) needs one λ(ε) per tolerance ε > 0, got ε = {list(epsilons)} and λ = {list(llcs)}")
    order = sorted(range(len(epsilons)), key=lambda i: -epsilons[i])
    bits, total = [0.0] * len(epsilons), 0.0
    for wider, narrower in zip(order, order[1:]):
        total += (llcs[wider] + llcs[narrower]) / 2 * math.log2(epsilons[wider] / epsilons[narrower])
        bits[narrower] = total
    return bits
