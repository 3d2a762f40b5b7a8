"""Where a λ̂ lies: the localized Gaussian's λ̂ and slope in closed form, the trace limit it
approaches, a sampled ladder that reads the slope, Hutchinson's trace, and the regime table."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mdl_slt.errors import UserError
from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.regime import LADDER, gaussian_llc, gaussian_slope, regime, rung, slope, trace_limit
from mdl_slt.llc.sampling import estimate_llc
from tests.test_sgld import _Quadratic

CURVATURES = torch.logspace(-3, 2, 40)


def test_the_gaussian_llc_runs_from_the_trace_limit_to_d_over_2_with_its_slope():
    h = CURVATURES.tolist()
    for n_beta, gamma in [(1.0, 1e4), (100.0, 10.0), (1e7, 1e-3)]:
        step = 1e-4  # the closed-form slope is the derivative of log λ̂ in log nβ
        numeric = (math.log(gaussian_llc(h, n_beta * math.exp(step), gamma))
                   - math.log(gaussian_llc(h, n_beta * math.exp(-step), gamma))) / (2 * step)
        assert gaussian_slope(h, n_beta, gamma) == pytest.approx(numeric, rel=1e-5, abs=1e-8)
        assert gaussian_llc(h, n_beta, gamma) <= trace_limit(sum(h), n_beta, gamma)  # always below the trace limit
    assert gaussian_llc(h, 1.0, 1e4) == pytest.approx(trace_limit(sum(h), 1.0, 1e4), rel=0.01)  # nβ·h ≪ γ
    assert gaussian_slope(h, 1.0, 1e4) == pytest.approx(1, abs=0.01) and regime(1.0, 0.99) == "trace limit"
    assert gaussian_llc(h, 1e7, 1e-3) == pytest.approx(len(h) / 2, rel=1e-6)  # nβ·h ≫ γ: d/2
    assert gaussian_slope(h, 1e7, 1e-3) == pytest.approx(0, abs=1e-6) and regime(0.0, 0.0) == "volume law"
    assert regime(0.5, 0.5) == "crossover" and regime(1.1) == "trace limit" and regime(0.5) == "not the trace limit"
    assert regime(math.nan) == "unknown" and math.isnan(slope(0.0, 3.0))


@pytest.mark.parametrize("n_beta,gamma", [(1.0, 100.0), (100.0, 10.0), (1e5, 1e-3)])
def test_a_ladder_of_n_beta_on_a_quadratic_reads_its_slope(n_beta, gamma):
    """λ̂ sampled at nβ/3 and 3·nβ: their slope is the Gaussian's over the same ladder within 0.05,
    from the trace limit (slope 1) to the volume law (slope 0)."""
    model = _Quadratic(CURVATURES, torch.eye(40))
    config = LLCConfig(sampler="fisher", step_size=0.1, n_beta=n_beta, localization=gamma, batch_size=1,
                       max_steps=1000, seed=1)
    found = [estimate_llc(model, torch.zeros(1, 1), rung(config, factor), lambda m, batch: m.loss(batch))
             for factor in (1 / LADDER, LADDER)]
    assert all(f.converged and not f.diverged_chains for f in found)
    h = CURVATURES.tolist()
    truth = slope(gaussian_llc(h, n_beta / LADDER, gamma), gaussian_llc(h, n_beta * LADDER, gamma))
    assert slope(found[0].llc_mean, found[1].llc_mean) == pytest.approx(truth, abs=0.05)
    assert found[1].config["step_size"] == 0.1  # the preconditioned step is scale-free
    plain = config.model_copy(update={"sampler": "sgld"})  # η·nβ fixed up the ladder, η kept down it
    assert (rung(plain, LADDER).step_size, rung(plain, 1 / LADDER).step_size) == pytest.approx((0.1 / LADDER, 0.1))


def test_a_ladder_needs_a_number_for_n_beta_and_keeps_an_auto_step():
    with pytest.raises(UserError, match="a ladder of nβ needs a number for n_beta"):
        rung(LLCConfig(n_beta="auto"), LADDER)
    assert rung(LLCConfig(step_size="auto", n_beta=30.0), LADDER).step_size == "auto"


def test_hutchinsons_trace_of_a_rotated_quadratic_is_its_trace_within_its_error():
    from mdl_slt.llc.curvature import hessian_trace

    rotation = torch.linalg.qr(torch.randn(40, 40, generator=torch.Generator().manual_seed(3)))[0]
    model = _Quadratic(CURVATURES, rotation)
    mean, se = hessian_trace(model, [model.w], torch.zeros(1, 1), lambda m, batch: m.loss(batch), probes=64)
    assert se > 0 and abs(mean - float(CURVATURES.sum())) < 3 * se


def test_the_regime_table_reads_each_llc_against_the_tolerances_and_its_trace():
    """E[ΔL] = λ̂/nβ over the largest and smallest ε; T = nβ·tr(H)/(2γ) from the whole model's
    hessian_trace row (none for a checkpoint that has none); the slope from the robustness ladder."""
    from types import SimpleNamespace

    from mdl_slt.analysis.regime import regime_summary, regime_table

    experiment = SimpleNamespace(critical=SimpleNamespace(epsilons=[0.02, 0.1]), llc=SimpleNamespace(localization=300))
    detail = {"n_beta": 30.0, "num_params": 1000}
    llc = {"task": "llc", "model": "m", "num_params": 1000, "detail": detail}
    records = pd.DataFrame([
        {**llc, "revision": "a", "step": 1, "llc_mean": 45.0}, {**llc, "revision": "b", "step": 2, "llc_mean": 15.0},
        {"task": "sensitivity", "measure": "hessian_trace", "weight_group": None, "model": "m", "revision": "a",
         "value": 1000.0, "detail": {}},
        {"task": "sensitivity", "measure": "hessian_trace", "weight_group": "layer0", "model": "m", "revision": "b",
         "value": 7.0, "detail": {}},
        *[{"task": "llc_robust", "model": "m", "revision": "a", "llc_mean": v, "llc_std_error": 1.0,
           "detail": {"variation": {"parameter": "n_beta", "multiplier": m}}}
          for m, v in ((0.33, 20.0), (3.0, 80.0), (10.0, 99.0))]])
    table = regime_table(records, experiment)
    a, b = table.iloc[0], table.iloc[1]
    assert a.excess_loss == 1.5 and a.excess_over_eps_min == pytest.approx(75) and a.excess_over_eps_max == 15
    assert a.trace_limit == 50.0 and a.trace_ratio == 0.9 and a.half_d == 500
    assert a.slope == pytest.approx(math.log(4) / math.log(3 / 0.33)) and a.regime == "crossover"  # nearest 1
    assert np.isnan(b.trace_limit) and np.isnan(b.slope) and b.regime == "unknown"  # a group's trace is not the model's
    assert "0.50–1.50 nats/token" in regime_summary(table) and "within 1.25× of it for 1 of 1" in regime_summary(table)


def test_the_scale_table_integrates_only_the_tolerances_found_and_sets_each_beside_the_main_llc():
    """DL_λ(ε) runs over the tolerances found on a checkpoint, from the widest of them; a tolerance
    not found has none; λ(ε)/λ̂ against the checkpoint's main λ̂."""
    from mdl_slt.analysis.regime import scale_table

    def row(eps, llc, found):
        return {"task": "llc_scale", "model": "m", "revision": "a", "step": 1, "epsilon": eps, "llc_mean": llc,
                "llc_std_error": 1.0, "detail": {"n_beta": llc / eps, "excess_loss": eps, "found": found,
                                                 "converged": True, "rungs": [{}, {}], "why": "" if found else "x"}}

    records = pd.DataFrame([{"task": "llc", "model": "m", "revision": "a", "step": 1, "llc_mean": 10.0, "detail": {}},
                            row(0.2, 50.0, False), row(0.1, 100.0, True), row(0.05, 120.0, True)])
    table = scale_table(records)
    assert list(table.epsilon) == [0.2, 0.1, 0.05] and list(table.rungs) == [2, 2, 2]
    assert np.isnan(table.dl_lambda_bits[0]) and list(table.dl_lambda_bits[1:]) == [0.0, 110.0]  # ½(100 + 120)·1 bit
    assert list(table.over_llc) == [5.0, 10.0, 12.0] and table.why[0] == "x"
