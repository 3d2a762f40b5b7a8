"""λ̂ against the loss and training progress, on synthetic tables with a known answer. Needs no torch."""

import math

import numpy as np
import pandas as pd
import pytest

from mdl_slt.analysis.baselines import baselines, hc3_wald, verdict
from mdl_slt.analysis.fits import fit_lines, loss_lines


def compared(frame):
    """The baselines of a table's one group, as the analysis computes them."""
    lines = fit_lines(frame)
    return baselines(lines, loss_lines(lines)).iloc[0]


def table(rng, n, llc, loss, critical):
    """One (model, compressor, ε) group of n checkpoints with the given columns."""
    return pd.DataFrame({"model": "m", "compressor": "rtn", "method": "rtn", "epsilon": 0.05, "step": np.arange(n) * 100,
                         "tokens_seen": np.arange(n) * 100 * 512, "llc_mean": llc, "llc_std_error": 0.1,
                         "base_loss": loss, "critical_value": critical, "num_params": 1000, "llc_params": 1000,
                         "converged": True, "r_hat": 1.0})


def test_a_line_in_the_loss_with_a_collinear_llc_is_flagged_and_the_llc_adds_nothing():
    rng = np.random.default_rng(0)
    loss = np.linspace(4.0, 3.0, 16)
    llc = 100 - 20 * loss + rng.normal(0, 1.5, 16)  # moves with the loss
    critical = 2.0 + 1.5 * (4.0 - loss) + rng.normal(0, 0.01, 16)
    row = compared(table(rng, 16, llc, loss, critical))
    assert row.collinear and -0.99 < row.r_llc_loss < -0.9
    assert row.p_llc_beyond_loss > 0.05 and row.p_loss_beyond_llc < 0.05
    assert row.rmse_loco_loss < row.rmse_loco_llc and row.best_out_of_sample == "loss"
    assert "cannot separate them" in verdict(row) and "best out of sample: held-out loss" in verdict(row)


def test_a_line_in_an_llc_that_is_independent_of_the_loss_wins_and_adds_to_the_loss():
    rng = np.random.default_rng(1)
    loss = rng.uniform(3.0, 3.4, 16)
    llc = rng.uniform(20, 60, 16)  # independent of the loss
    critical = 1.0 + 0.05 * llc + rng.normal(0, 0.02, 16)
    row = compared(table(rng, 16, llc, loss, critical))
    assert not row.collinear and abs(row.r_llc_loss) < 0.6
    assert row.p_llc_beyond_loss < 1e-6 and row.best_out_of_sample == "llc"
    assert row.r2_llc > 0.99 and row.slope_ci_low_llc < 0.05 < row.slope_ci_high_llc
    assert "λ̂ adds to the loss" in verdict(row)


def test_a_line_in_both_finds_each_beyond_the_other():
    rng = np.random.default_rng(2)
    loss, llc = rng.uniform(3.0, 3.4, 20), rng.uniform(20, 60, 20)
    critical = 1.0 + 0.05 * llc - 2.0 * loss + rng.normal(0, 0.02, 20)
    row = compared(table(rng, 20, llc, loss, critical))
    assert row.p_llc_beyond_loss < 1e-6 and row.p_loss_beyond_llc < 1e-6


def test_the_nested_test_is_statsmodels_hc3_wald_test():
    import statsmodels.api as sm

    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(15), rng.normal(size=15), rng.normal(size=15)])
    y = X @ [1.0, 0.3, 0.1] + rng.normal(0, 0.5, 15) * (1 + np.abs(X[:, 1]))  # heteroscedastic
    fit = sm.OLS(y, X).fit(cov_type="HC3", use_t=True)
    for column in (1, 2):
        beta, p = hc3_wald(X, y, column)
        assert beta == pytest.approx(fit.params[column], rel=1e-10)
        assert p == pytest.approx(float(fit.pvalues[column]), rel=1e-8)
    assert math.isnan(hc3_wald(X[:3], y[:3], 1)[1])  # no degrees of freedom left


def test_too_few_checkpoints_say_so():
    rng = np.random.default_rng(4)
    row = compared(table(rng, 3, [1.0, 2.0, 3.0], [3.0, 2.9, 2.8], [1.0, 1.1, 1.3]))
    assert math.isnan(row.p_llc_beyond_loss) and not row.collinear and verdict(row) == "too few checkpoints"
