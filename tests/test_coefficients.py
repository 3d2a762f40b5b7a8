"""Every coefficient the report states, with a known sign and value on synthetic data: within each run
(the line on λ̂, on the loss, on log tokens, and λ̂ and the loss each at equal other), across runs
(every form, the loss beside λ̂, λ̂/d over sizes) and the tournament of measures. Each truth is
tried with both signs, so a predictor column negated or swapped anywhere fails. A coefficient is
within 3 of its standard errors of the truth (the error read from its stated 95% interval). Needs
no torch."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mdl_slt.analysis.baselines import baselines, verdict
from mdl_slt.analysis.fits import fit_lines, fit_relation, loss_lines, pooled_fits
from mdl_slt.analysis.pooled import across_runs, measures_across_runs
from mdl_slt.analysis.tables import llc_description_length

SIGNS = [1, -1]


def near(value, low, high, truth, df):
    """A coefficient within 3 standard errors of the truth, its interval excluding zero (the sign)."""
    se = (high - low) / (2 * stats.t.ppf(0.975, df))
    return abs(value - truth) <= 3 * se and (low > 0) == (truth > 0) and (high < 0) == (truth < 0)


def one_run(rng, n=16):
    """One run's checkpoints with λ̂, the loss and tokens seen drawn apart from one another."""
    return pd.DataFrame({"model": "m", "compressor": "rtn", "method": "rtn", "epsilon": 0.05,
                         "step": np.arange(1, n + 1) * 100, "tokens_seen": rng.permutation(np.geomspace(1e4, 1e8, n)),
                         "llc_mean": rng.uniform(20, 60, n), "llc_std_error": 0.0, "base_loss": rng.uniform(3.0, 3.4, n),
                         "num_params": 1000, "llc_params": 1000, "converged": True, "r_hat": 1.0})


PER_RUN = {"llc": lambda f: f.llc_mean, "loss": lambda f: f.base_loss, "tokens": lambda f: np.log1p(f.tokens_seen)}
SLOPES = {"llc": 0.05, "loss": 2.0, "tokens": 0.2}


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("predictor", list(PER_RUN))
def test_each_line_within_a_run_has_its_slope_and_sign(predictor, sign):
    rng = np.random.default_rng(10)
    frame = one_run(rng)
    slope = sign * SLOPES[predictor]
    frame["critical_value"] = 3.0 + slope * PER_RUN[predictor](frame) + rng.normal(0, 0.01, len(frame))
    lines = fit_lines(frame)
    row = baselines(lines, loss_lines(lines)).iloc[0]
    assert near(row[f"slope_{predictor}"], row[f"slope_ci_low_{predictor}"], row[f"slope_ci_high_{predictor}"],
                slope, len(frame) - 2), row[f"slope_{predictor}"]
    assert row.best_out_of_sample == predictor
    if predictor == "llc":  # the report's own line: OLS, York's, Spearman's ρ, the bootstrap interval
        fit = fit_relation(lines).iloc[0]
        assert near(fit.slope, fit.slope_ci_low, fit.slope_ci_high, slope, len(frame) - 2)
        assert fit.bootstrap_slope_ci_low <= slope <= fit.bootstrap_slope_ci_high
        assert np.sign(fit.spearman_rho) == sign and fit.r_squared > 0.99


@pytest.mark.parametrize("sign", SIGNS)
def test_llc_and_the_loss_each_at_equal_other_within_a_run(sign):
    """c* = α + β_λ·λ̂ + β_L·L: β_λ (λ̂ at equal loss) and β_L (the loss at equal λ̂) are recovered with
    their signs, and the verdict says β_λ's sign: +0.05·λ̂ and −0.05·λ̂ read apart."""
    rng = np.random.default_rng(11)
    frame = one_run(rng, 20)
    beta_llc, beta_loss = sign * 0.05, -2.0 * sign
    frame["critical_value"] = 3.0 + beta_llc * frame.llc_mean + beta_loss * frame.base_loss + rng.normal(0, 0.01, 20)
    lines = fit_lines(frame)
    row = baselines(lines, loss_lines(lines)).iloc[0]
    assert row.coef_llc_beyond_loss == pytest.approx(beta_llc, abs=0.001)
    assert row.coef_loss_beyond_llc == pytest.approx(beta_loss, abs=0.05)
    assert row.p_llc_beyond_loss < 1e-6 and row.p_loss_beyond_llc < 1e-6
    stated = f"at equal loss {row.coef_llc_beyond_loss:+.3g} per unit of λ̂"
    assert stated in verdict(row) and stated.split()[3][0] == ("+" if sign > 0 else "-")


def runs(rng, sizes, n=8):
    """Runs (one per entry of `sizes`, d its parameters) of n checkpoints each; λ̂, the loss and tokens
    seen drawn apart, λ̂ with a per-run offset."""
    frames = []
    for i, d in enumerate(sizes):
        tokens = rng.permutation(np.geomspace(1e4, 1e8, n))
        llc = 30 + 10 * i + rng.uniform(0, 20, n)
        frames.append(pd.DataFrame({
            "model": f"run{i}", "compressor": "rtn", "method": "rtn", "epsilon": 0.05, "step": np.arange(1, n + 1) * 100,
            "tokens_seen": tokens, "llc_mean": llc, "llc_std_error": 0.3, "base_loss": rng.uniform(4.0, 4.4, n),
            "num_params": d, "llc_params": d, "llc_dl_bits": llc_description_length(llc, tokens)}))
    return pd.concat(frames, ignore_index=True)


ACROSS = {  # form → (its predictor, the coefficient put in, the sizes pooled)
    "llc": (lambda f: f.llc_mean, 0.05, [1000] * 4),
    "loss": (lambda f: f.base_loss, 2.0, [1000] * 4),
    "tokens": (lambda f: np.log1p(f.tokens_seen), 0.2, [1000] * 4),
    "llc_per_param": (lambda f: f.llc_mean / f.llc_params, 40.0, [1000, 1000, 8000, 64000]),
    "redundancy": (lambda f: f.llc_dl_bits, 0.002, [1000] * 4),
}


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("form", list(ACROSS))
def test_each_form_across_runs_has_its_coefficient_and_sign(form, sign):
    predictor, coefficient, sizes = ACROSS[form]
    rng = np.random.default_rng(12)
    table = runs(rng, sizes)
    truth = sign * coefficient
    table["critical_value"] = 3.0 + truth * predictor(table) + rng.normal(0, 0.01, len(table))
    row = across_runs(table)[0].iloc[0]
    df = len(table) - 2
    assert near(row[f"coef_{form}"], row[f"coef_ci_low_{form}"], row[f"coef_ci_high_{form}"], truth, df), \
        row[f"coef_{form}"]
    assert row.best_across_runs == form


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("theory", SIGNS)
def test_llc_at_equal_loss_across_runs_is_read_against_the_theory(sign, theory):
    """c* = β_λ·λ̂ + β_L·L + γ·log d over three sizes: β_λ (the llc_loss form), β_L beside it, and the
    direction: as theory where β_λ has the theory's sign, against it where it has the other."""
    rng = np.random.default_rng(13)
    table = runs(rng, [1000, 1000, 8000, 64000])
    beta_llc, beta_loss = sign * 0.05, 2.0
    table["critical_value"] = (beta_llc * table.llc_mean + beta_loss * table.base_loss + 0.5 * np.log(table.llc_params)
                               + rng.normal(0, 0.01, len(table)))
    row = across_runs(table, signs={"rtn": theory})[0].set_index("scope").loc["all runs"]
    assert near(row.coef_llc_loss, row.coef_ci_low_llc_loss, row.coef_ci_high_llc_loss, beta_llc, len(table) - 4)
    assert row.coef_loss_beyond_llc == pytest.approx(beta_loss, abs=0.05) and row.p_llc_beyond_loss < 1e-6
    assert row.theory_sign == theory
    assert row.llc_direction == ("as theory" if sign == theory else "against theory")
    assert row.llc_adds_out_of_sample and row.rmse_loro_llc_loss < row.rmse_loro_loss


@pytest.mark.parametrize("sign", SIGNS)
def test_one_line_on_llc_per_parameter_over_sizes_has_its_slope(sign):
    rng = np.random.default_rng(14)
    table = runs(rng, [1000, 8000, 64000], n=10).assign(converged=True, r_hat=1.0)
    truth = sign * 40.0
    table["critical_value"] = 3.0 + truth * table.llc_mean / table.llc_params + rng.normal(0, 0.01, len(table))
    row = pooled_fits(table).iloc[0]
    assert abs(row.slope_per_param - truth) <= 3 * row.slope_per_param_se and row.r2_per_param > 0.99


@pytest.mark.parametrize("sign", SIGNS)
def test_a_measure_across_runs_has_its_coefficient_and_llc_its_own_beside_it(sign):
    """c* = β·m + β_λ·λ̂ for a sensitivity measure m drawn apart from λ̂: m's coefficient alone, λ̂'s
    beside it, and the tournament names m the best measure that is not λ̂."""
    rng = np.random.default_rng(15)
    table = runs(rng, [1000] * 5)
    table["fisher"] = rng.uniform(1, 3, len(table))
    beta, beta_llc = 1.5 * sign, -0.05 * sign
    table["critical_value"] = 3.0 + beta * table.fisher + beta_llc * table.llc_mean + rng.normal(0, 0.01, len(table))
    answer, figures = measures_across_runs(table, None, {"rtn": 1}, ["fisher"])
    fisher = figures.set_index("predictor").loc["fisher"]
    df = len(table) - 3
    assert near(fisher.llc_coef_beside, fisher.llc_coef_beside_ci_low, fisher.llc_coef_beside_ci_high, beta_llc, df)
    assert np.sign(fisher.coef) == sign
    row = answer.iloc[0]
    assert row.best_other == "fisher" and row.llc_adds
    assert row.llc_direction_beside == ("as theory" if beta_llc > 0 else "against theory")


def test_the_coefficients_are_not_fitted_on_a_chosen_sign():
    """The same table with the critical values negated gives every coefficient negated: nothing in
    the fits prefers a direction."""
    rng = np.random.default_rng(16)
    table = runs(rng, [1000] * 4)
    table["critical_value"] = 0.05 * table.llc_mean + 2.0 * table.base_loss + rng.normal(0, 0.01, len(table))
    flipped = table.assign(critical_value=-table.critical_value)
    up, down = across_runs(table)[0].iloc[0], across_runs(flipped)[0].iloc[0]
    for form in ("llc", "loss", "tokens", "llc_loss", "redundancy"):
        assert down[f"coef_{form}"] == pytest.approx(-up[f"coef_{form}"], rel=1e-9)
    assert math.isclose(down.coef_loss_beyond_llc, -up.coef_loss_beyond_llc, rel_tol=1e-9)
