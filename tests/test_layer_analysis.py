"""The within-checkpoint analysis and the tournament of predictors on synthetic data with a known
answer. Needs no torch."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mdl_slt.analysis.layers import group_table, within_checkpoints
from mdl_slt.analysis.tournament import compare

GROUPS = ["embed", "block0.attn.in", "block0.attn.out", "block0.mlp.in", "block0.mlp.out", "block1.attn.in",
          "block1.attn.out", "block1.mlp.in", "block1.mlp.out", "unembed"]


def groups(rng, critical, checkpoints=("step500", "step1000"), noise=0.02):
    """Weight groups of one run at `checkpoints`: sizes of a 2-block model, λ̂_g/d_g drawn apart
    from the size, c*_g = critical(λ̂_g/d_g, d_g) + a per-checkpoint offset + noise."""
    sizes = np.array([32768, 3072, 1024, 4096, 4096, 3072, 1024, 4096, 4096, 32768], float)
    per_param = rng.uniform(0.002, 0.02, len(GROUPS))
    rows = []
    for i, revision in enumerate(checkpoints):
        drift = per_param * (1 + 0.1 * i) + rng.normal(0, 0.0005, len(GROUPS))
        value = critical(drift, sizes) + 0.3 * i + rng.normal(0, noise, len(GROUPS))
        for g, d, lam, c in zip(GROUPS, sizes, drift * sizes, value):
            rows.append({"model": "run", "revision": revision, "step": 500 * (i + 1), "compressor": "rtn",
                         "epsilon": 0.05, "weight_group": g, "critical_value": c, "llc_mean": lam,
                         "llc_std_error": 0.1, "group_params": d, "llc_per_param": lam / d, "log_params": math.log(d)})
    return pd.DataFrame(rows)


def figures_of(answers, figures, scope):
    """(the answer of a scope, its figures by predictor)."""
    return answers.set_index("scope").loc[scope], figures[figures.scope == scope].set_index("predictor")


@pytest.mark.parametrize("beta", [50.0, -50.0])
def test_a_known_per_parameter_relation_is_found_with_its_sign_on_unseen_groups(beta):
    table = groups(np.random.default_rng(0), lambda per_param, d: 3 + beta * per_param)
    answers, figures = within_checkpoints(table, {"rtn": 1})
    assert list(answers.scope) == ["step500", "step1000", "pooled"]
    for scope in answers.scope:
        row, own = figures_of(answers, figures, scope)
        fit = own.loc["llc_per_param"]
        se = (fit.coef_ci_high - fit.coef_ci_low) / (2 * stats.t.ppf(0.975, row.n - 2 - (scope == "pooled")))
        assert abs(fit.coef - beta) < 4 * se, scope  # within 4 standard errors
        assert row.best == "llc_per_param" and fit.r2 > 0.95
        assert fit.rmse_logo < min(own.loc["llc"].rmse_logo, own.loc["log_params"].rmse_logo)
        assert own.loc["log_params"].p_llc_beside < 1e-4  # λ̂_g/d_g beyond the size
        assert row.llc_direction == ("as theory" if beta > 0 else "against theory")
    pooled = answers.set_index("scope").loc["pooled"]
    assert pooled.n_checkpoints == 2 and pooled.n == 2 * len(GROUPS) and pooled.n_groups == len(GROUPS)


def test_size_alone_wins_when_the_critical_value_follows_the_size():
    table = groups(np.random.default_rng(1), lambda per_param, d: 1 + 0.5 * np.log(d))
    row, own = figures_of(*within_checkpoints(table, {"rtn": 1}), "pooled")
    assert row.best == "log_params" and own.loc["log_params"].coef == pytest.approx(0.5, abs=0.05)
    assert own.loc["log_params"].p_llc_beside > 0.001 and row.llc_direction == "unclear"


def test_too_few_groups_give_no_fit():
    table = groups(np.random.default_rng(2), lambda per_param, d: 3 + 50 * per_param)
    few = table[table.weight_group.isin(GROUPS[:3])]
    answers, figures = within_checkpoints(few, {"rtn": 1})
    row = answers.iloc[0]
    assert row.n_groups == 3 and figures.coef.isna().all() and row.best is None


def test_the_group_table_joins_each_group_s_critical_value_to_its_refined_llc():
    def row(task, group, **values):
        return {"task": task, "model": "m", "revision": "step1", "step": 1, "weight_group": group, "compressor": None,
                "method": None, "epsilon": None, "knob": None, "knob_interpolated": None, "bits_interpolated": None,
                "llc_mean": None, "llc_std_error": None, **values}

    records = pd.DataFrame([
        row("llc_group", "block0.mlp.in", llc_mean=8.0, llc_std_error=0.2, detail={"num_params": 400, "r_hat": 1.01}),
        row("critical_group", "block0.mlp.in", compressor="rtn", method="rtn", epsilon=0.05, knob=3.0,
            knob_interpolated=2.8, detail={"knob_name": "bits", "critical_se": 0.1, "tolerance": 0.005}),
        row("llc", None, llc_mean=40.0, detail={})])
    (found,) = group_table(records).to_dict(orient="records")
    assert found["critical_value"] == 2.8 and found["llc_mean"] == 8.0 and found["group_params"] == 400
    assert found["llc_per_param"] == pytest.approx(0.02) and found["log_params"] == pytest.approx(math.log(400))
    assert found["tolerance"] == 0.005 and found["epsilon"] == 0.05


def tournament_rows(rng, critical, runs=6, n=5):
    """Runs of one size: λ̂, the loss and a Fisher trace drawn apart; c* = critical(λ̂, loss, fisher)."""
    frames = []
    for r in range(runs):
        llc = 30 + 5 * r + rng.normal(0, 2, n)
        loss = 4.3 - 0.02 * np.arange(n) + rng.normal(0, 0.02, n)
        fisher = rng.uniform(1, 3, n) + 0.3 * r
        frames.append(pd.DataFrame({"model": f"run{r}", "llc": llc, "loss": loss, "fisher": fisher,
                                    "y": critical(llc, loss, fisher) + rng.normal(0, 0.01, n)}))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("beta", [0.05, -0.05])
def test_the_tournament_names_the_winner_and_whether_llc_adds_to_it(beta):
    rows = tournament_rows(np.random.default_rng(4), lambda llc, loss, fisher: 2 * fisher + beta * llc)
    found, figures = compare(rows, ["llc", "loss", "fisher"], [np.ones(len(rows))], rows.model.to_numpy(),
                             rows.y.to_numpy(), "loss", "llc", 1, "loro")
    fisher = {f["predictor"]: f for f in figures}["fisher"]
    assert found["best_other"] == "fisher" and found["llc_adds"]
    assert fisher["llc_coef_beside"] == pytest.approx(beta, abs=0.005)
    assert found["llc_direction_beside"] == ("as theory" if beta > 0 else "against theory")
    assert fisher["coef"] > 0 and fisher["p_llc_beside"] < 1e-6
    assert fisher["rmse_loro_with_llc"] < fisher["rmse_loro"] and math.isfinite(fisher["rmse_loro_beside_loss"])
    alone, figures = compare(rows, ["llc", "fisher"], [np.ones(len(rows))], rows.model.to_numpy(),
                             (2 * rows.fisher).to_numpy(), None, "llc", 1, "loro")
    fisher = {f["predictor"]: f for f in figures}["fisher"]
    assert alone["best"] == "fisher" and fisher["rmse_loro"] < 1e-9 and alone["llc_adds"] is False
