"""The analysis layer on synthetic tables with known answers: slopes, intervals, coverage, ε sweeps, fit files."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from mdl_slt.analysis import (eps_sweep, fit_line, fit_relation, llc_description_length, loo_predictions,
                              pooled_fits)
from mdl_slt.errors import UserError
from mdl_slt.fitfile import FitFile, build_fit_file

CONFIG = {"name": "synthetic", "data": {"source": "embedded"}, "llc": {"step_size": 3e-4},
          "critical": {"compressors": [{"name": "rtn", "options": {}}], "epsilons": [0.05]}}


def synthetic(rng, lines: dict, steps: int = 12, noise: float = 0.05, epsilon: float = 0.05) -> pd.DataFrame:
    """Checkpoints of models {name: (intercept, slope, d)} with critical = α + β·λ + N(0, noise²)."""
    rows = []
    for model, (alpha, beta, d) in lines.items():
        llc = np.sort(rng.uniform(10, 60, steps))
        for step, x in enumerate(llc):
            rows.append(dict(model=model, compressor="rtn", epsilon=epsilon, step=step * 100, llc_mean=x,
                             llc_std_error=0.0, num_params=d, llc_params=d,
                             critical_value=alpha + beta * x + rng.normal(0, noise)))
    return pd.DataFrame(rows)


def test_a_known_slope_is_recovered_within_its_interval_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    inside = []
    for _ in range(300):
        fits = fit_relation(synthetic(rng, {"a": (1.5, 0.08, 1000)}))
        inside.append(fits.slope_ci_low.iloc[0] <= 0.08 <= fits.slope_ci_high.iloc[0])
    assert abs(np.mean(inside) - 0.95) < 3 * math.sqrt(0.95 * 0.05 / 300) + 0.01
    one = fit_relation(synthetic(np.random.default_rng(1), {"a": (1.5, 0.08, 1000)}, noise=0.01)).iloc[0]
    assert one.slope == pytest.approx(0.08, abs=0.003) and one.r_squared > 0.99 and one.spearman_rho > 0.95
    assert one.bootstrap_slope_ci_low <= 0.08 <= one.bootstrap_slope_ci_high


def test_prediction_intervals_cover_new_checkpoints_at_their_nominal_rate():
    """A new point whose λ̂ carries a standard error of 3 is covered 95% of the time only when the
    interval adds that error (the β²s₀² term)."""
    rng = np.random.default_rng(2)
    with_se, without = [], []
    for _ in range(400):
        table = synthetic(rng, {"a": (1.0, 0.05, 1000)}, steps=15, noise=0.1)
        fit = fit_line(table.llc_mean, table.critical_value)
        truth = rng.uniform(10, 60)
        observed = 1.0 + 0.05 * truth + rng.normal(0, 0.1)
        measured_llc = truth + rng.normal(0, 3.0)
        _, low, high = fit.predict(measured_llc, 3.0)
        with_se.append(low <= observed <= high)
        _, low, high = fit.predict(measured_llc, 0.0)
        without.append(low <= observed <= high)
    tolerance = 3 * math.sqrt(0.95 * 0.05 / 400)
    assert abs(np.mean(with_se) - 0.95) < tolerance
    assert np.mean(without) < np.mean(with_se)


def test_leave_one_out_is_exact_on_a_noiseless_line_and_tabulated():
    table = synthetic(np.random.default_rng(3), {"a": (2.0, 0.1, 1000)}, noise=0.0)
    fit = fit_line(table.llc_mean, table.critical_value)
    assert fit.loo_rmse == pytest.approx(0.0, abs=1e-9)
    loo = loo_predictions(table)
    assert len(loo) == len(table) and np.allclose(loo.predicted, loo.measured)
    assert fit_line([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) is None  # too few checkpoints for a fit


def test_pooled_fit_tells_one_line_from_a_line_per_size():
    rng = np.random.default_rng(4)
    same = pooled_fits(synthetic(rng, {"small": (1.0, 0.05, 1000), "large": (1.0, 0.05, 4000)})).iloc[0]
    apart = pooled_fits(synthetic(rng, {"small": (1.0, 0.05, 1000), "large": (3.0, 0.02, 4000)})).iloc[0]
    assert same.p_same_line > 0.05 and same.r2_common == pytest.approx(same.r2_separate, abs=0.02)
    assert apart.p_same_line < 1e-6 and apart.p_same_slope < 1e-3 and apart.r2_separate > apart.r2_common
    # a relation that holds in λ/d is one line on λ/d across sizes
    scaled = synthetic(rng, {"small": (1.0, 0.05, 1000), "large": (1.0, 0.05 / 4, 4000)})
    assert pooled_fits(scaled).iloc[0].r2_per_param > 0.99 > pooled_fits(scaled).iloc[0].r2_common


def test_llc_description_length_is_the_two_part_code_redundancy():
    d, n = 10, np.array([2, 1000, 2**20])
    regular = llc_description_length(np.full(3, d / 2), n)  # BIC: (d/2)·log₂ n
    assert math.isnan(regular[0]) and regular[1:] == pytest.approx([5 * math.log2(1000), 5 * 20])
    with_m = llc_description_length(np.full(3, d / 2), n, multiplicity=3)
    assert with_m[2] == pytest.approx(100 - 2 * math.log(math.log(2**20)) / math.log(2))


def test_eps_sweep_recovers_lambda_from_description_lengths():
    rows = [dict(model="a", step=s, compressor="rtn", epsilon=eps, llc_mean=lam, llc_std_error=0.1,
                 num_params=100, critical_dl_bits=lam * math.log2(1 / eps) + 5000)
            for s, lam in [(100, 20.0), (200, 35.0)] for eps in (0.02, 0.05, 0.1)]
    sweep = eps_sweep(pd.DataFrame(rows))
    assert sweep.eps_slope_bits.to_numpy() == pytest.approx([20.0, 35.0])


def test_fit_file_round_trip_and_predictions_for_known_and_new_sizes(tmp_path):
    table = synthetic(np.random.default_rng(5), {"small": (1.0, 0.05, 1000), "large": (1.0, 0.05 / 4, 4000)},
                      noise=0.01)
    payload = build_fit_file(table, CONFIG, 0, tmp_path / "x.sqlite")
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(payload))
    saved = FitFile.load(path)
    assert saved.payload["versions"]["statsmodels"] and saved.payload["llc"] == {"step_size": 3e-4}
    (small,) = saved.predict("small", 40.0, 0.0, 1000)
    direct = fit_line(table[table.model == "small"].llc_mean, table[table.model == "small"].critical_value)
    assert (small.predicted, small.lower, small.upper) == pytest.approx(direct.predict(40.0))
    assert small.basis == "model" and small.predicted == pytest.approx(1.0 + 0.05 * 40, abs=0.02)
    (new,) = saved.predict("medium", 80.0, 0.0, 2000)  # an unseen size: the λ/d line
    assert new.basis == "λ/d" and new.lower < 1.0 + 0.05 * 1000 * 80 / 2000 < new.upper
    path.write_text("{}")
    with pytest.raises(UserError, match="is not a mdl-slt-fit/1 fit file"):
        FitFile.load(path)
