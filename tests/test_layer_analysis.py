"""The within-checkpoint analysis on synthetic weight groups with a known answer. Needs no torch."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mdl_slt.analysis.layers import group_table, within_checkpoints

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
                         "llc_std_error": 0.1, "group_params": d, "llc_per_param": lam / d, "size": math.log(d)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("beta", [50.0, -50.0])
def test_a_known_per_parameter_relation_is_found_with_its_sign_on_unseen_groups(beta):
    table = groups(np.random.default_rng(0), lambda per_param, d: 3 + beta * per_param)
    found = within_checkpoints(table, {"rtn": 1}).set_index("scope")
    assert list(found.index) == ["step500", "step1000", "pooled"]
    for scope, row in found.iterrows():
        se = (row.coef_high_llc_per_param - row.coef_low_llc_per_param) / (2 * stats.t.ppf(0.975, row.n - 2 - (scope == "pooled")))
        assert abs(row.coef_llc_per_param - beta) < 4 * se, scope  # within 4 standard errors
        assert row.best_on_unseen_groups == "llc_per_param" and row.r2_llc_per_param > 0.95
        assert row.logo_llc_per_param < min(row.logo_llc, row.logo_size)
        assert row.p_beyond_size_llc_per_param < 1e-4
        assert row.llc_direction == ("as theory" if beta > 0 else "against theory")
    pooled = found.loc["pooled"]
    assert pooled.checkpoints == 2 and pooled.n == 2 * len(GROUPS) and pooled.groups == len(GROUPS)


def test_size_alone_wins_when_the_critical_value_follows_the_size():
    table = groups(np.random.default_rng(1), lambda per_param, d: 1 + 0.5 * np.log(d))
    row = within_checkpoints(table, {"rtn": 1}).set_index("scope").loc["pooled"]
    assert row.best_on_unseen_groups == "size" and row.coef_size == pytest.approx(0.5, abs=0.05)
    assert row.p_beyond_size_llc_per_param > 0.001 and row.llc_direction == "unclear"


def test_too_few_groups_give_no_fit():
    table = groups(np.random.default_rng(2), lambda per_param, d: 3 + 50 * per_param)
    few = table[table.weight_group.isin(GROUPS[:3])]
    row = within_checkpoints(few, {"rtn": 1}).iloc[0]
    assert row.groups == 3 and math.isnan(row.coef_llc_per_param) and row.best_on_unseen_groups is None


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
    assert found["llc_per_param"] == pytest.approx(0.02) and found["size"] == pytest.approx(math.log(400))
    assert found["tolerance"] == 0.005 and found["epsilon"] == 0.05
