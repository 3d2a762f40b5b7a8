"""Across runs, and the criterion for training variants, on synthetic runs with a known answer.
Needs no torch."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mdl_slt.analysis.parting import checkpoints, criterion, parting_pairs
from mdl_slt.analysis.pooled import across_runs, design
from mdl_slt.analysis.tables import llc_description_length
from mdl_slt.analysis.tournament import leave_one_unit_out


def runs(rng, sizes, critical, n=8):
    """Runs (one per entry of `sizes`, d its parameters) of n checkpoints each, λ̂ and the loss drawn
    apart: the loss falls along each run, λ̂ rises with a per-run offset; c* = critical(λ̂, L, d)."""
    frames = []
    for i, d in enumerate(sizes):
        loss = np.linspace(4.4, 4.0, n) + rng.normal(0, 0.02, n)
        llc = 30 + 10 * i + np.linspace(0, 6, n) + rng.normal(0, 3, n)
        tokens = np.arange(1, n + 1) * 50_000
        frames.append(pd.DataFrame({
            "model": f"run{i}", "compressor": "rtn", "method": "rtn", "epsilon": 0.05, "step": np.arange(1, n + 1) * 100,
            "tokens_seen": tokens, "llc_mean": llc, "llc_std_error": 0.3, "base_loss": loss,
            "critical_value": critical(llc, loss, d) + rng.normal(0, 0.01, n), "num_params": d, "llc_params": d,
            "llc_dl_bits": llc_description_length(llc, tokens)}))
    return pd.concat(frames, ignore_index=True)


def test_runs_driven_by_the_llc_are_told_from_the_loss_and_predicted_on_unseen_runs():
    table = runs(np.random.default_rng(0), [1000] * 4, lambda llc, loss, d: 0.1 * llc)
    row = across_runs(table)[0].iloc[0]
    assert row.scope == "all runs" and row.n_runs == 4 and row.n_sizes == 1
    assert abs(row.r_llc_loss) < 0.8 and not row.collinear
    assert row.p_llc_beyond_loss < 1e-6 and row.p_loss_beyond_llc > 0.001
    assert row.rmse_loro_llc < 0.05 < 0.5 < row.rmse_loro_loss
    assert row.coef_ci_low_llc < 0.1 < row.coef_ci_high_llc
    assert row.best_across_runs == "llc"  # one size: λ̂/d is λ̂ rescaled, never a predictor of its own
    assert math.isnan(row.rmse_loro_llc_per_param) and math.isnan(row.r2_llc_per_param)


def test_runs_driven_by_the_loss_pick_the_loss():
    table = runs(np.random.default_rng(1), [1000] * 4, lambda llc, loss, d: 10 * (4.5 - loss))
    row = across_runs(table)[0].iloc[0]
    assert row.best_across_runs == "loss" and row.rmse_loro_loss < row.rmse_loro_llc
    assert row.p_loss_beyond_llc < 1e-6 and row.p_llc_beyond_loss > 0.001
    se = (row.coef_ci_high_loss - row.coef_ci_low_loss) / (2 * stats.t.ppf(0.975, row.n - 2))
    assert abs(row.coef_loss + 10) <= 3 * se and row.coef_ci_high_loss < 0  # c* = 10·(4.5 − L): −10 per nat
    assert row.coef_loss_beyond_llc == pytest.approx(-10, abs=3 * se)


def test_log_d_carries_an_offset_per_size_and_each_size_with_two_runs_is_its_own_scope():
    sizes = [1000, 1000, 8000, 64000]
    table = runs(np.random.default_rng(2), sizes, lambda llc, loss, d: 0.1 * llc + 0.5 * np.log(d))
    found = across_runs(table)[0].set_index("scope")
    assert list(found.index) == ["all runs", "runs of d = 1,000"]
    every = found.loc["all runs"]
    assert every.n_sizes == 3 and every.r2_llc > 0.99 and every.r2_llc_per_param < 0.9
    assert every.rmse_loro_llc < 0.05
    X, names = design(table, "llc")
    assert names == ["const", "llc", "log_d"] and np.allclose(X[:, 2], np.log(table.llc_params))
    assert design(table[table.llc_params == 1000], "llc")[1] == ["const", "llc"]  # one size: no log d
    assert every.r2_llc_per_param < 0.9 and math.isfinite(every.rmse_loro_llc_per_param)  # several sizes: a form of its own


def test_leave_one_run_out_is_exact_on_a_line_and_undefined_when_a_run_cannot_be_predicted():
    x = np.arange(12.0)
    X = np.column_stack([np.ones(12), x])
    runs_of = np.repeat(["a", "b", "c"], 4)
    assert leave_one_unit_out(X, 2 + 3 * x, runs_of) == pytest.approx(0, abs=1e-9)
    sizes = np.column_stack([X, np.repeat([1.0, 2.0, 3.0], 4)])[:8]  # two runs, a column constant within each:
    assert math.isnan(leave_one_unit_out(sizes, (2 + 3 * x)[:8], runs_of[:8]))  # one run alone cannot fit it


def records(rows):
    """Store-shaped records: an llc and a base_loss row per (model, step, λ̂, se, loss)."""
    out = []
    for model, step, llc, se, loss in rows:
        out.append({"model": model, "revision": f"step{step}", "step": step, "task": "llc", "llc_mean": llc,
                    "llc_std_error": se, "loss": math.nan, "detail": {}})
        out.append({"model": model, "revision": f"step{step}", "step": step, "task": "base_loss", "llc_mean": math.nan,
                    "llc_std_error": math.nan, "loss": loss, "detail": {"uniform_loss": 7.0}})
    return pd.DataFrame(out)


def test_a_variant_is_chosen_only_by_a_pair_at_matched_loss_whose_llc_differ_beyond_four_errors():
    steps = [300, 400, 500, 600]
    reference = [("ref", s, 30 + i, 0.3, 4.3 - 0.05 * i) for i, s in enumerate(steps)]
    apart = [("apart", s, 40 + i, 0.3, 4.31 - 0.05 * i) for i, s in enumerate(steps)]  # +10 λ̂ at +0.01 nats
    close = [("close", s, 30.5 + i, 0.3, 4.3 - 0.05 * i) for i, s in enumerate(steps)]  # 1.2 se apart
    far = [("far", s, 50 + i, 0.3, 4.6 - 0.05 * i) for i, s in enumerate(steps)]  # no loss within 0.02
    table = checkpoints(records(reference + apart + close + far))
    assert table.inside.all()  # every loss has covered 90% of the fall from 7.0 to the lowest
    found, pool = criterion(table, "ref")
    found = found.set_index("run")
    assert found.chosen.to_dict() == {"apart": True, "close": False, "far": False}
    assert found.loc["apart", "max_abs_z"] == pytest.approx(10 / math.hypot(0.3, 0.3))
    assert pool["runs"] == ["ref", "apart"] and pool["checkpoints"] == 8
    assert abs(pool["r"]) <= 0.8 and pool["meets"]
    pairs = parting_pairs(table[table.model == "ref"], table[table.model == "apart"])
    assert len(pairs) == 4 and (pairs.loss_gap.abs() <= 0.02).all()


@pytest.mark.parametrize("beta", [0.1, -0.1])
def test_the_coefficient_of_llc_at_equal_loss_has_its_true_sign_and_value(beta):
    """c* = β·λ̂ + 10·(4.5 − L): the line on both recovers β and the loss's 10 whatever β's sign, and
    the direction is read against the theory's (+ for bits); a negated λ̂ column would fail it."""
    table = runs(np.random.default_rng(7), [1000] * 4, lambda llc, loss, d: beta * llc + 10 * (4.5 - loss))
    row, lines = across_runs(table, signs={"rtn": 1})
    row = row.iloc[0]
    se = (row.coef_ci_high_llc_loss - row.coef_ci_low_llc_loss) / (2 * stats.t.ppf(0.975, row.n - 3))
    assert abs(row.coef_llc_loss - beta) < 4 * se < 0.01  # within 4 standard errors (a 6e-5 chance to fail)
    assert np.sign(row.coef_ci_low_llc_loss) == np.sign(row.coef_ci_high_llc_loss) == np.sign(beta)
    assert row.llc_direction == ("as theory" if beta > 0 else "against theory")
    assert row.llc_adds_out_of_sample and row.rmse_loro_llc_loss < min(row.rmse_loro_llc, row.rmse_loro_loss)
    both = lines[("all runs", "rtn", 0.05)][0]["llc_loss"]
    assert both.columns == ["const", "llc", "loss"]
    assert both.beta[1:] == pytest.approx([beta, -10.0], abs=0.02)
    assert row.r2_llc_loss > 0.99 and both.r2 == row.r2_llc_loss and both.rmse_loro == row.rmse_loro_llc_loss


def test_llc_that_adds_nothing_has_an_unclear_direction_and_does_not_add_out_of_sample():
    table = runs(np.random.default_rng(8), [1000] * 4, lambda llc, loss, d: 10 * (4.5 - loss))
    row = across_runs(table, signs={"rtn": -1})[0].iloc[0]
    assert row.llc_direction == "unclear" and row.coef_ci_low_llc_loss < 0 < row.coef_ci_high_llc_loss
    assert row.theory_sign == -1


def test_a_saved_line_predicts_a_new_checkpoint_with_its_own_interval():
    """The Regression a fit file keeps: the mean is x·β, and the interval widens with λ̂'s own error."""
    from mdl_slt.analysis.lines import Regression

    table = runs(np.random.default_rng(9), [1000] * 4, lambda llc, loss, d: 0.1 * llc + 10 * (4.5 - loss))
    lines = across_runs(table)[1][("all runs", "rtn", 0.05)][0]
    line = Regression.from_dict(lines["llc_loss"].to_dict())
    mean, low, high = line.predict({"const": 1.0, "llc": 40.0, "loss": 4.1}, 0.0)
    assert mean == pytest.approx(0.1 * 40 + 10 * 0.4, abs=0.05) and low < mean < high
    _, wider_low, wider_high = line.predict({"const": 1.0, "llc": 40.0, "loss": 4.1}, 2.0)
    assert wider_high - wider_low > high - low
