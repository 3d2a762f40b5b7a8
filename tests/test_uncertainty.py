"""How sure each answer is: the critical value's standard error from per-sequence losses, and fits
with errors in both variables, on synthetic data with a known answer. Needs no torch."""

import math

import numpy as np
import pytest

from mdl_slt.analysis.lines import fit_line, york
from mdl_slt.measures.critical import _interpolate, critical_standard_error

BITS = lambda v: -v  # noqa: E731  fewer bits compress more


def paired(rng, means, n, sd=0.05, shared=0.8):
    """Per-sequence loss differences at each knob value: a common per-sequence part (sequences hard
    for every compressed model) plus each value's own noise, with the given means."""
    common = rng.normal(0, sd * math.sqrt(shared), n)
    return {v: m + common + rng.normal(0, sd * math.sqrt(1 - shared), n) for v, m in means.items()}


def delta_method(diffs, good, bad, eps):
    """The log-linear crossing's standard error to first order, from the paired means' covariance."""
    g, b = diffs[good], diffs[bad]
    n = len(g)
    mg, mb = g.mean(), b.mean()
    t = (math.log(eps) - math.log(mg)) / (math.log(mb) - math.log(mg))
    span = math.log(mb) - math.log(mg)
    d_mg = (-1 / mg * span + (math.log(eps) - math.log(mg)) / mg) / span**2  # ∂t/∂Δ_good
    d_mb = -(math.log(eps) - math.log(mg)) / mb / span**2  # ∂t/∂Δ_bad
    cov = np.cov(np.stack([g, b])) / n
    grad = np.array([d_mg, d_mb]) * (bad - good)
    return float(math.sqrt(grad @ cov @ grad)), good + t * (bad - good)


def test_the_bootstrap_error_of_a_crossing_matches_the_delta_method_and_falls_as_one_over_root_n():
    """At n = 1024 the bootstrap agrees with the delta method within 3 of its own Monte Carlo errors
    (a standard deviation from B draws is off by 1/√(2(B − 1)) relatively); over n = 64…2048, six
    samples each, log se falls against log n with slope −½ within 3 standard errors of the fit."""
    import statsmodels.api as sm

    from mdl_slt.measures.critical import SE_DRAWS

    rng = np.random.default_rng(0)
    means = {16.0: 0.0, 8.0: 0.005, 5.0: 0.02, 4.0: 0.035, 3.0: 0.09, 2.0: 0.6}
    diffs = paired(rng, means, 1024)
    expected, value = delta_method(diffs, 4.0, 3.0, 0.05)
    se = critical_standard_error(diffs, 0.05, BITS)
    assert 3.0 < value < 4.0 and se == pytest.approx(expected, rel=3 / math.sqrt(2 * (SE_DRAWS - 1)))
    sizes = np.repeat([64, 128, 256, 512, 1024, 2048], 6)
    errors = [critical_standard_error(paired(rng, means, n), 0.05, BITS, seed=i) for i, n in enumerate(sizes)]
    decay = sm.OLS(np.log(errors), sm.add_constant(np.log(sizes))).fit()
    assert abs(decay.params[1] + 0.5) <= 3 * decay.bse[1]
    exact = {v: np.full(64, m) for v, m in means.items()}
    assert critical_standard_error(exact, 0.05, BITS) < 1e-12  # no spread between sequences, no error


def test_the_bootstrap_brackets_among_every_evaluated_value_as_the_search_does():
    rng = np.random.default_rng(1)
    means = {16.0: 0.0, 4.0: 0.049, 3.0: 0.051, 2.0: 0.6}  # ε sits between two close evaluations
    diffs = paired(rng, means, 64, sd=0.2)
    draws_se = critical_standard_error(diffs, 0.05, BITS)
    # crossings move across evaluations: a value held inside the bracket [3, 4] has a standard deviation
    # of at most half its width (Popoviciu), and one inside the evaluated range [2, 16] at most 7
    assert 0.5 < draws_se <= 7
    assert math.isnan(critical_standard_error({4.0: np.zeros(1)}, 0.05, BITS))  # one sequence: undefined
    excess = {v: d.mean() for v, d in diffs.items()}
    assert _interpolate(4.0, 3.0, excess.__getitem__, 0.05)[1] == "log-linear"


def test_york_recovers_an_exact_line_and_weights_the_noisier_points_less():
    x = np.arange(8.0)
    found = york(x, 1 + 0.5 * x, np.full(8, 0.1), np.full(8, 0.1))
    assert found[1] == pytest.approx(0.5, abs=1e-9) and found[0] == pytest.approx(1.0, abs=1e-9)
    # no scatter beyond the stated errors: the slope's error is theirs, √(σy² + β²σx²)/√Σ(x − x̄)²
    assert found[3] < 1e-12 and found[2] == pytest.approx(math.sqrt(0.01 + 0.25 * 0.01) / math.sqrt(42), rel=1e-6)
    y = 1 + 0.5 * x
    y[7] += 3.0  # an outlier…
    loud = york(x, y, np.full(8, 0.1), np.r_[np.full(7, 0.1), 100.0])  # …stated as uncertain
    quiet = york(x, y, np.full(8, 0.1), np.full(8, 0.1))
    assert abs(loud[1] - 0.5) < 0.01 < abs(quiet[1] - 0.5)
    assert york(x, y, np.zeros(8), np.zeros(8)) is None and york(np.ones(8), y, np.ones(8), np.ones(8)) is None


@pytest.mark.parametrize("x_error, y_error, scatter", [(0.8, 0.3, 0.0), (0.8, 0.3, 0.3), (1.5, 0.3, 0.0)])
def test_intervals_with_errors_in_both_cover_the_true_slope(x_error, y_error, scatter):
    """200 synthetic lines, slope 0.5, 10 points with known errors in both variables (and, in one
    case, scatter beyond them): 95% intervals of York's slope cover 0.5 in 90–99% of trials; where
    λ̂'s errors are large, ordinary least squares does not (it is attenuated toward zero)."""
    rng = np.random.default_rng(7)
    covered, ols_covered = 0, 0
    for _ in range(200):
        truth = rng.uniform(0, 10, 10)
        x = truth + rng.normal(0, x_error, 10)
        y = 2 + 0.5 * truth + rng.normal(0, y_error, 10) + rng.normal(0, scatter, 10)
        fit = fit_line(x, y, np.full(10, x_error), y_se=np.full(10, y_error))
        covered += fit.eiv_slope_ci[0] <= 0.5 <= fit.eiv_slope_ci[1]
        ols_covered += fit.slope_ci[0] <= 0.5 <= fit.slope_ci[1]
    assert 0.90 <= covered / 200 <= 0.99
    if x_error > 1:
        assert ols_covered / 200 < 0.90


def test_a_fit_without_critical_errors_has_no_errors_in_both_slope():
    fit = fit_line(np.arange(6.0), np.arange(6.0) * 2 + np.r_[0.1, -0.1, 0.05, 0, -0.05, 0.1], np.full(6, 0.1),
                   y_se=np.full(6, np.nan))
    assert math.isnan(fit.eiv_slope) and fit.slope == pytest.approx(2, abs=0.05)
