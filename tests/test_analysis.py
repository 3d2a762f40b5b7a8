"""The analysis layer on synthetic tables with known answers: slopes, intervals, coverage, ε sweeps, fit files."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from mdl_slt.analysis.fitfile import FitFile, build_fit_file
from mdl_slt.analysis.fits import eps_sweep, fit_lines, fit_relation, loo_predictions, loss_lines, pooled_fits
from mdl_slt.analysis.lines import fit_line, llc_errors
from mdl_slt.analysis.tables import llc_description_length, measurements, select, window
from mdl_slt.errors import UserError

CONFIGS = {"L": {"kind": "llc", "settings": {"data": {"source": "embedded"}, "llc": {"step_size": 3e-4},
                                              "device": "cpu"}},
           "C": {"kind": "critical", "settings": {"data": {"source": "embedded"}, "epsilons": [0.05], "numerics": "fp32",
                                                   "compressor": {"name": "rtn", "options": {}, "precision": 0.05}}}}


def synthetic(rng, lines: dict, steps: int = 12, noise: float = 0.05, epsilon: float = 0.05) -> pd.DataFrame:
    """Checkpoints of models {name: (intercept, slope, d)} with critical = α + β·λ + N(0, noise²)."""
    rows = []
    for model, (alpha, beta, d) in lines.items():
        llc = np.sort(rng.uniform(10, 60, steps))
        for step, x in enumerate(llc):
            rows.append(dict(model=model, compressor="rtn", method="rtn", epsilon=epsilon, step=step * 100, llc_mean=x,
                             llc_std_error=0.0, num_params=d, llc_params=d, converged=True, r_hat=1.0,
                             llc_config="L", critical_config="C",
                             critical_value=alpha + beta * x + rng.normal(0, noise)))
    return pd.DataFrame(rows)


def test_a_known_slope_is_recovered_within_its_interval_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    inside = []
    for _ in range(300):
        fits = fit_relation(fit_lines(synthetic(rng, {"a": (1.5, 0.08, 1000)})))
        inside.append(fits.slope_ci_low.iloc[0] <= 0.08 <= fits.slope_ci_high.iloc[0])
    assert abs(np.mean(inside) - 0.95) < 3 * math.sqrt(0.95 * 0.05 / 300) + 0.01
    one = fit_relation(fit_lines(synthetic(np.random.default_rng(1), {"a": (1.5, 0.08, 1000)}, noise=0.01))).iloc[0]
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
    assert fit.rmse_loco == pytest.approx(0.0, abs=1e-9)
    loo = loo_predictions(fit_lines(table))
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


def test_fit_file_round_trip_and_predictions_for_a_fitted_run(tmp_path):
    table = synthetic(np.random.default_rng(5), {"small": (1.0, 0.05, 1000), "large": (1.0, 0.05 / 4, 4000)},
                      noise=0.01)
    table["base_loss"] = 4.0 - 0.02 * table.llc_mean  # a loss that falls as λ̂ rises, exactly
    lines = fit_lines(table)
    payload = build_fit_file(lines, CONFIGS, {"window": 0.9}, "synthetic", tmp_path / "x.sqlite", loss_lines(lines))
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(payload))
    saved = FitFile.load(path)
    assert saved.payload["versions"]["statsmodels"] and saved.payload["analysis"] == {"window": 0.9}
    measured = saved.measured_with()  # looked up by the config hashes of the fitted rows
    assert measured["llc"] == {"step_size": 3e-4} and measured["compressors"]["rtn"]["precision"] == 0.05
    (small,) = saved.predict("small", 40.0, 0.0, 1000)
    direct = fit_line(table[table.model == "small"].llc_mean, table[table.model == "small"].critical_value)
    assert (small.predicted, small.lower, small.upper) == pytest.approx(direct.predict(40.0))
    assert small.basis == "model" and small.predicted == pytest.approx(1.0 + 0.05 * 40, abs=0.02)
    assert small.loss_predicted is None and small.best == "llc"  # without the checkpoint's loss, no baseline
    (both,) = saved.predict("small", 40.0, 0.0, 1000, base_loss=4.0 - 0.02 * 40)
    assert both.loss_predicted == pytest.approx(small.predicted, abs=1e-6)  # the loss here is λ̂ in other units
    assert both.loss_rmse_unseen == pytest.approx(both.rmse_unseen, rel=1e-6)
    with pytest.raises(UserError, match="no lines across runs"):  # a run it never saw, and no answer across runs
        saved.predict("medium", 80.0, 0.0, 2000)
    path.write_text("{}")
    with pytest.raises(UserError, match="is not a mdl-slt-fit/3 fit file"):
        FitFile.load(path)


def test_a_run_the_fit_never_saw_is_predicted_by_the_lines_across_runs(tmp_path):
    """Four runs of one size in which λ̂ and the loss part; c* = 0.1·λ̂ + 10·(4.5 − L). A fit on three
    of them predicts the fourth from its size's pool: λ̂'s, the loss's and both lines, each with its
    interval and leave-one-run-out error; the line on both covers the left-out run and wins."""
    from mdl_slt.analysis.pooled import across_runs
    from tests.test_pooled import runs

    table = runs(np.random.default_rng(12), [1000] * 4, lambda llc, loss, d: 0.1 * llc + 10 * (4.5 - loss))
    table = pd.concat([table, runs(np.random.default_rng(13), [8000] * 2, lambda llc, loss, d: 0.1 * llc)
                       .assign(model=lambda t: "big" + t.model)], ignore_index=True)
    table = table.assign(llc_config="L", critical_config="C")
    fitted = table[table.model != "run3"]
    rows, across_lines = across_runs(fitted, signs={"rtn": 1})
    lines = fit_lines(fitted)
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(build_fit_file(lines, CONFIGS, {}, "synthetic", tmp_path / "x.sqlite",
                                              loss_lines(lines), rows, across_lines)))
    saved = FitFile.load(path)
    left = table[table.model == "run3"]
    inside = {"llc": [], "loss": [], "both": []}
    for checkpoint in left.itertuples():
        (p,) = saved.predict("run3", checkpoint.llc_mean, 0.3, 1000, base_loss=checkpoint.base_loss)
        assert p.basis == "runs of d = 1,000" and p.best == "llc_loss"
        pool = rows[rows.scope == "runs of d = 1,000"].iloc[0]
        assert (p.rmse_unseen, p.loss_rmse_unseen, p.both_rmse_unseen) == (pool.rmse_loro_llc, pool.rmse_loro_loss, pool.rmse_loro_llc_loss)
        for name, (mean, low, high) in {"llc": (p.predicted, p.lower, p.upper),
                                        "loss": (p.loss_predicted, p.loss_lower, p.loss_upper),
                                        "both": (p.both_predicted, p.both_lower, p.both_upper)}.items():
            assert low < mean < high
            inside[name].append(low <= checkpoint.critical_value <= high)
    assert sum(inside["both"]) >= 6  # of 8 at 95% coverage: a 0.6% chance of fewer
    (other,) = saved.predict("run9", 40.0, 0.3, 4000, base_loss=4.2)  # a size without a pool: all runs, with log d
    assert other.basis == "all runs" and other.both_predicted is not None


def test_predictions_and_their_intervals_stay_inside_the_knob_range(tmp_path):
    rng = np.random.default_rng(11)
    table = synthetic(rng, {"small": (1.0, 0.05, 1000)}, noise=0.2).assign(knob_low=0.0, knob_high=2.2)
    lines = fit_lines(table)
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(build_fit_file(lines, CONFIGS, {}, "synthetic", tmp_path / "x.sqlite")))
    saved = FitFile.load(path)
    assert saved.payload["lines"][0]["knob_range"] == [0.0, 2.2]
    (inside,) = saved.predict("small", 20.0, 0.0, 1000)  # 2.0: its interval reaches past 2.2
    unclipped = lines[("small", "rtn", 0.05)][0].predict(20.0)
    assert unclipped[2] > 2.2 and inside.upper == 2.2 and inside.predicted == pytest.approx(unclipped[0])
    (beyond,) = saved.predict("small", 80.0, 0.0, 1000)  # 5.0 on the line: the knob ends at 2.2
    assert beyond.predicted == beyond.upper == 2.2 and beyond.lower <= 2.2


def test_the_window_is_a_stated_fraction_of_the_loss_fall():
    # uniform prediction ln V = 7; losses fall to 3: 90% of the way is 3.4
    table = pd.DataFrame({"model": "a", "step": [0, 10, 100, 200, 300], "base_loss": [7.0, 5.0, 3.5, 3.4, 3.0],
                          "uniform_loss": 7.0})
    assert window(table).tolist() == [False, False, False, True, True]
    assert window(table, 0.5).tolist() == [False, True, True, True, True]
    assert window(table, min_step=100).tolist() == [False, False, True, True, True]
    # without a uniform-prediction loss the highest measured loss is the start
    assert window(table.assign(uniform_loss=None), 0.9).tolist() == [False, False, False, True, True]


def test_one_rule_for_unknown_standard_errors():
    assert llc_errors([0.1, np.nan, 0.3, np.inf]).tolist() == [0.1, 0.3, 0.3, 0.3]
    assert llc_errors([np.nan, np.nan]).tolist() == [0.0, 0.0]
    table = synthetic(np.random.default_rng(6), {"a": (1.0, 0.05, 1000)}, noise=0.05)
    unknown = table.assign(llc_std_error=[np.nan] + [0.5] * (len(table) - 1))
    same = table.assign(llc_std_error=0.5)
    # the bootstrap and the leave-one-out intervals treat the unknown one as the largest known
    assert fit_relation(fit_lines(unknown)).iloc[0].equals(fit_relation(fit_lines(same)).iloc[0])
    assert loo_predictions(fit_lines(unknown)).equals(loo_predictions(fit_lines(same)))


def records_of(numerics_by_step):
    """Stored rows of one model with critical rows measured under the given numerics per step."""
    rows = []
    for step, numerics in numerics_by_step.items():
        common = dict(model="m", revision=f"step{step}", step=step, num_params=10, tokens_seen=step * 100,
                      device="cpu", numerics=numerics, config_hash="h", key=f"{step}", created_at="", experiment="x")
        rows += [dict(task="llc", llc_mean=float(step), llc_std_error=0.1, detail={"r_hat": 1.0}, **common),
                 dict(task="base_loss", loss=3.0, detail={"uniform_loss": 5.0}, **common),
                 dict(task="critical", compressor="rtn", method="rtn", epsilon=0.05, knob=4.0, knob_interpolated=3.9,
                      bits=40.0, bits_interpolated=39.0, bits_entropy=38.0, detail={"knob_name": "bits"}, **common)]
    return pd.DataFrame(rows)


def test_lines_are_never_fitted_across_numerics():
    table = measurements(records_of({1: "fp32", 2: "fp32"}))
    assert table.critical_value.tolist() == [3.9, 3.9] and table.critical_bracket.tolist() == [4.0, 4.0]
    assert measurements(records_of({1: "fp32"}), "bracket").critical_value.tolist() == [4.0]
    with pytest.raises(UserError, match=r"cannot fit one line across numerics: m rtn ε=0.05 has rows measured as "
                                        r"cpu fp32 \(LLC fp32\); cpu bf16-autocast"):
        measurements(records_of({1: "fp32", 2: "bf16-autocast"}))


def test_rows_of_other_settings_are_left_out_and_named():
    from mdl_slt.plan.experiment import Experiment
    from mdl_slt.plan.tasks import Tasks

    config = Experiment.model_validate({"name": "x", "store": "s", "models": [{"id": "m"}], "device": "cpu"})
    hashes = Tasks(config).hashes
    ours = records_of({1: "fp32"}).assign(config_hash=[hashes["llc"], hashes["base_loss"], hashes["critical:rtn"]])
    older = records_of({1: "fp32"}).assign(key=["o1", "o2", "o3"], config_hash="old", experiment="earlier")
    kept, left = select(pd.concat([ours, older]), config.model_dump(mode="json"))
    assert len(kept) == 3 and set(kept.config_hash) == set(hashes.values())
    assert left.n_rows.sum() == 3 and set(left.experiment) == {"earlier"} and set(left.config_hash) == {"old"}


def test_rows_of_older_bytes_of_a_checkpoint_are_left_out_and_named():
    """A checkpoint rebuilt with other bytes is measured again under a new key; its old rows stay in
    the store but no fit uses them."""
    from mdl_slt.plan.experiment import Experiment
    from mdl_slt.plan.tasks import Tasks

    config = Experiment.model_validate({"name": "x", "store": "s", "models": [{"id": "m"}], "device": "cpu"})
    hashes = [Tasks(config).hashes[k] for k in ("llc", "base_loss", "critical:rtn")]
    old = records_of({1: "fp32"}).assign(config_hash=hashes, checkpoint_id="aaa")
    new = records_of({1: "fp32"}).assign(config_hash=hashes, checkpoint_id="bbb", key=["n1", "n2", "n3"])
    kept, left = select(pd.concat([old, new]), config.model_dump(mode="json"), {("m", "step1"): "bbb"})
    assert set(kept.checkpoint_id) == {"bbb"} and len(kept) == 3
    assert left.n_rows.sum() == 3 and set(left.why) == {"older bytes of the checkpoint"}
    kept, _ = select(pd.concat([old, new]), config.model_dump(mode="json"), {("other", "step1"): "bbb"})
    assert len(kept) == 6  # a checkpoint the latest run did not plan keeps its rows
