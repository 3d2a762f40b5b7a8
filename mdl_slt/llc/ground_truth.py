"""Learning coefficients known in closed form, to test LLC estimators against (docs/science.md §4)."""

from __future__ import annotations

import math


def regular(num_params: int) -> float:
    """A regular (identifiable, non-degenerate) model: λ = d/2."""
    return num_params / 2


def normal_crossing(powers) -> tuple[float, int]:
    """K(w) = Π w_i^(2k_i): λ = min_i 1/(2k_i), multiplicity = how many i attain it (Watanabe)."""
    values = [1 / (2 * k) for k in powers if k > 0]
    lam = min(values)
    return lam, sum(1 for v in values if math.isclose(v, lam))


def deep_linear(widths, rank: int) -> float:
    """Aoyagi (2024): λ of a deep linear network with layer widths H_1 (input) … H_{L+1} (output)
    whose true product matrix has rank r.

    With M_j = H_j − r sorted ascending, σ is the smallest prefix (ℓ = |σ| − 1 ≥ 1) with
    max_σ M < min_{¬σ} M, Σ_σ M ≥ ℓ·max_σ M and Σ_σ M < ℓ·min_{¬σ} M; with S = Σ_σ M,
    M̄ = ⌈S/ℓ⌉ and a = S − (M̄ − 1)ℓ:
    λ = (−r² + r(H_1 + H_{L+1}))/2 + a(ℓ − a)/(4ℓ) − ℓ(ℓ − 1)/4·(S/ℓ)² + ½·Σ_{i<j∈σ} M_i M_j.
    """
    widths = list(widths)
    if len(widths) < 2 or rank < 0 or rank > min(widths):
        raise ValueError(f"need at least two widths and 0 ≤ rank ≤ min(widths), got {widths}, r={rank}")
    m = sorted(h - rank for h in widths)
    for size in range(2, len(m) + 1):
        sigma, rest = m[:size], m[size:]
        ell, s = size - 1, sum(m[:size])
        low_rest = min(rest) if rest else math.inf
        if max(sigma) < low_rest and s >= ell * max(sigma) and s < ell * low_rest:
            bar = math.ceil(s / ell)
            a = s - (bar - 1) * ell
            pairs = sum(sigma[i] * sigma[j] for i in range(size) for j in range(i + 1, size))
            return ((-rank**2 + rank * (widths[0] + widths[-1])) / 2 + a * (ell - a) / (4 * ell)
                    - ell * (ell - 1) / 4 * (s / ell) ** 2 + pairs / 2)
    raise ValueError(f"no subset σ satisfies Aoyagi's conditions for widths {widths}, rank {rank}")


RANK_RTOL = 1e-5


def refined_deep_linear(weights, layer: int, covariance=None) -> float:
    """The refined λ of one layer of a deep linear network f(x) = W_L⋯W_1·x, every other layer held
    at its value: the layer enters the loss through A·W_g·B (A the product of the layers after it,
    B of those before, Σ the inputs' covariance), a regular quadratic form of rank
    rank(A)·rank(B·Σ^½), so λ_g = rank(A)·rank(B·Σ^½)/2. `weights`: the (out × in) matrices, first
    layer first; `layer` counts from 0. Ranks count singular values above RANK_RTOL of the largest:
    float32 weights of a low rank carry round-off far above float64's own tolerance."""
    import torch

    weights = [torch.as_tensor(w, dtype=torch.float64) for w in weights]
    after = torch.eye(weights[layer].shape[0], dtype=torch.float64)
    for w in weights[layer + 1:]:
        after = w @ after
    before = torch.eye(weights[0].shape[1], dtype=torch.float64)
    for w in weights[:layer]:
        before = w @ before
    if covariance is not None:
        before = before @ torch.linalg.cholesky(torch.as_tensor(covariance, dtype=torch.float64))
    rank = lambda m: int(torch.linalg.matrix_rank(m, rtol=RANK_RTOL))  # noqa: E731
    return rank(after) * rank(before) / 2


def deep_linear_task(widths, rank: int, num_samples: int, seed: int = 0, exact: bool = False):
    """A random deep linear network at a true parameter w* whose product has rank `rank`, with
    inputs x ~ N(0, I) and noiseless targets y = f(x; w*) (Lau et al.; Hitchcock & Hoogland).

    Returns (model at w*, (x, y), loss) with loss `mdl_slt.llc.batches.mse_loss`, the negative
    log-likelihood of a unit-variance Gaussian up to a constant. `exact`: the n inputs are given
    by their second moment instead, as H_1 rows z = √H_1·R (RᵀR = XᵀX/n, Cholesky), whose loss
    equals the n-sample loss L_n(w) = ½·tr(Δ·XᵀX/n·Δᵀ) for any w (Δ = product − true product): a
    batch of all H_1 rows gives exact gradients at any n. nβ must then be set from n, not from
    the H_1 rows.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    layers = [torch.nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])]
    model = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for layer in layers:
            fan_in = layer.in_features
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / math.sqrt(fan_in))
        # make the widest-rank layer (the middle one) rank-deficient so the product has rank r
        middle = layers[len(layers) // 2]
        out, inp = middle.weight.shape
        low = torch.randn(out, rank, generator=gen) @ torch.randn(rank, inp, generator=gen)
        middle.weight.copy_(low / math.sqrt(inp * max(rank, 1)))
        x = _second_moment_rows(num_samples, widths[0], gen) if exact else \
            torch.randn(num_samples, widths[0], generator=gen)
        y = model(x)
    from mdl_slt.llc.batches import mse_loss

    return model, (x, y), mse_loss


def _second_moment_rows(num_samples: int, width: int, gen, chunk: int = 100_000):
    """√width·R with RᵀR = XᵀX/n for X of n standard normal rows, accumulated in float64 chunks."""
    import torch

    moment = torch.zeros(width, width, dtype=torch.float64)
    for start in range(0, num_samples, chunk):
        x = torch.randn(min(chunk, num_samples - start), width, generator=gen, dtype=torch.float64)
        moment += x.T @ x
    return (math.sqrt(width) * torch.linalg.cholesky(moment / num_samples).T).float()


def deep_linear_cases(count: int, min_params: int = 1_000, max_params: int = 1_000_000, seed: int = 0):
    """`count` random (widths, rank): parameter counts log-spaced from `min_params` to `max_params`
    (each within 15% of its target), 2–5 layers in turn, widths drawn around the size, the rank
    uniform below the narrowest layer."""
    import random

    rng = random.Random(seed)
    cases = []
    for i in range(count):
        target = math.exp(math.log(min_params) + i * (math.log(max_params) - math.log(min_params)) / max(1, count - 1))
        layers = 2 + i % 4
        while True:
            scale = math.sqrt(target / layers)
            widths = [max(2, round(scale * rng.uniform(0.6, 1.4))) for _ in range(layers + 1)]
            params = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
            if abs(params / target - 1) <= 0.15:
                break
        cases.append((widths, rng.randint(1, min(widths) - 1)))
    return cases


def crossing_expectation(n_beta: float, gamma: float, k: int = 2, points: int = 2_000_001) -> float:
    """Exact E_p[nβ·K] for K(w) = w₁²·w₂^(2k) under p ∝ exp(−nβK − γ‖w‖²/2): the value an LLC
    estimator at finite nβ should return (it tends to λ = min(1/2, 1/(2k)) as nβ → ∞).

    Given w₂, w₁ is Gaussian with precision 2a, a = nβ·w₂^(2k) + γ/2, so E[nβK | w₂] =
    nβ·w₂^(2k)/(2a) and w₂ has density ∝ exp(−γw₂²/2)/√a; the rest is a 1-D quadrature.
    """
    import numpy as np

    w2 = np.linspace(-12 / math.sqrt(gamma), 12 / math.sqrt(gamma), points)
    a = n_beta * w2 ** (2 * k) + gamma / 2
    density = np.exp(-gamma * w2**2 / 2) / np.sqrt(a)
    return float(np.sum(density * n_beta * w2 ** (2 * k) / (2 * a)) / np.sum(density))


def quadratic_quartic(n_beta: float, gamma: float, a: float = 1.0, b: float = 1.0, pairs: int = 1,
                      points: int = 400_001) -> float:
    """Exact λ̂ = E_p[nβ·L] for L = Σ a·x² + b·y⁴ over `pairs` pairs (x, y) at w* = 0, under
    p ∝ exp(−nβL − γ‖w‖²/2): per pair ½·2a·nβ/(2a·nβ + γ) (x is Gaussian) plus nβ·b·E[y⁴] by a 1-D
    quadrature. Two scales: ¾ a pair (½ + ¼) as nβ → ∞, 0 as nβ → 0, localization setting the
    crossover."""
    import numpy as np

    y = np.linspace(-20, 20, points) / max(1.0, (n_beta * b) ** 0.25, math.sqrt(gamma))
    weight = np.exp(-n_beta * b * y**4 - gamma * y**2 / 2)
    quartic = n_beta * b * float(np.sum(weight * y**4) / np.sum(weight))
    return pairs * (0.5 * 2 * a * n_beta / (2 * a * n_beta + gamma) + quartic)


def at_tolerance(llc_of, epsilon: float, low: float = 1e-8, high: float = 1e12) -> tuple[float, float]:
    """(λ(ε), nβ_ε) of a closed-form λ̂(nβ): nβ_ε solves λ̂(nβ)/nβ = ε (a root in log nβ, by Brent)."""
    from scipy.optimize import brentq

    u = brentq(lambda u: math.log(llc_of(math.exp(u))) - u - math.log(epsilon), math.log(low), math.log(high))
    return llc_of(math.exp(u)), math.exp(u)
