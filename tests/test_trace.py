"""The LLC you can trust: intervals that cover the truth at their nominal rate, a stored trace that
re-estimates exactly, a burn-in read from the trace, sampling until converged, and a divergence
check that fires on a destroyed language model and stays quiet on healthy chains."""

import json
import math

import numpy as np
import pytest
import torch

from mdl_slt.errors import UserError
from mdl_slt.llc.batches import mse_loss
from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.ground_truth import crossing_expectation
from mdl_slt.llc.health import CHECK_EVERY
from mdl_slt.llc.samplers import relaxation_steps
from mdl_slt.llc.sampling import estimate_llc, sample
from mdl_slt.llc.trace import Trace, detect_burnin, estimate
from tests.conftest import regression, run_cli


def groups(trace: Trace, size: int) -> list[Trace]:
    """Independent estimates from one run of many chains: consecutive groups of `size` chains."""
    return [Trace(trace.losses[s:s + size], trace.init_loss, trace.init_se, trace.n_beta, trace.num_params,
                  trace.uniform_loss, {}, trace.config) for s in range(0, len(trace.losses), size)]


def assert_nominal_coverage(results, truth):
    """The ±1.96 se and ±1 se intervals cover the truth at 95% and 68.3%, each within 3 binomial
    standard errors of its rate over these estimates: errors stated 2× too large cover 95.4% at
    ±1 se, too small 38%, and fail."""
    for z, rate in ((1.96, 0.95), (1.0, 0.6827)):
        covered = np.mean([abs(r.llc_mean - truth) <= z * r.llc_std_error for r in results])
        assert abs(covered - rate) <= 3 * math.sqrt(rate * (1 - rate) / len(results)), (z, covered)


def test_intervals_cover_a_regular_models_llc_at_their_nominal_rate():
    """100 estimates of 4 chains each; the truth at finite nβ is ½·Σ nβh/(nβh + γ) exactly."""
    model, data, _ = regression(n=200)
    n_beta, gamma = 1000.0, 1.0
    eig = torch.linalg.eigvalsh(data[0].T @ data[0] / len(data[0]))
    truth = 0.5 * float(sum(n_beta * h / (n_beta * h + gamma) for h in eig))
    trace = sample(model, data, LLCConfig(step_size=2e-5, n_beta=n_beta, localization=gamma, num_chains=400,
                                          num_draws=2000, num_burnin=500, batch_size=200, seed=5), mse_loss)
    results = [estimate(t) for t in groups(trace, 4)]
    assert_nominal_coverage(results, truth)
    spread = np.std([r.llc_mean for r in results])  # the stated errors are the real ones
    assert 0.8 < np.mean([r.llc_std_error for r in results]) / spread < 1.25


def test_intervals_cover_the_normal_crossing_expectation_at_their_nominal_rate():
    """K = w₁²w₂⁴ (λ = 1/4): at nβ = 10³, γ = 10 the estimator's target is E_p[nβK] = 0.124, by
    quadrature; 100 estimates of 4 chains each."""
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.zeros(2))
    potential = lambda m, batch: m.w[0] ** 2 * m.w[1] ** 4  # noqa: E731
    truth = crossing_expectation(1e3, 10.0)
    trace = sample(model, torch.zeros(1, 1), LLCConfig(step_size=2e-4, n_beta=1e3, localization=10.0, num_chains=400,
                                                       num_draws=8000, num_burnin=1000, batch_size=1, seed=1), potential)
    results = [estimate(t) for t in groups(trace, 4)]
    assert_nominal_coverage(results, truth)


def test_a_stored_trace_re_estimates_exactly_and_with_another_burnin():
    model, data, _ = regression(n=200)
    result = estimate_llc(model, data, LLCConfig(step_size=1e-4, n_beta=100.0, num_draws=300, batch_size=50), mse_loss)
    trace = Trace.from_bytes(result.trace)
    assert trace.losses.shape == (4, result.steps) and result.burnin_detected  # burn-in included in the trace
    again = estimate(trace, burnin=result.burnin)
    assert (again.llc_mean, again.llc_std_error, again.r_hat) == (result.llc_mean, result.llc_std_error, result.r_hat)
    assert estimate(trace).llc_mean == result.llc_mean  # its own burn-in is found again
    later = estimate(trace, burnin=result.burnin + 50, thinning=2)
    assert later.burnin == result.burnin + 50 and later.num_draws == (result.steps - later.burnin + 1) // 2
    with pytest.raises(UserError, match="leaves no draws"):
        estimate(trace, burnin=result.steps)


def test_the_burnin_ends_where_the_transient_does():
    rng = np.random.default_rng(0)
    steps = np.arange(1000)
    levels = 40 * (1 - np.exp(-steps / 30)) + rng.normal(0, 2, 1000)  # rises for ~100 steps, then stationary
    assert 60 <= detect_burnin(levels) <= 200
    assert detect_burnin(rng.normal(0, 1, 1000)) <= 100  # no transient: little or nothing cut
    assert detect_burnin(np.concatenate([np.zeros(400), np.ones(600)])) <= 500  # never past the first half


def test_sampling_stops_when_converged_and_says_when_it_did_not():
    model, data, _ = regression(n=200)
    easy = estimate_llc(model, data, LLCConfig(step_size=1e-4, n_beta=100.0, batch_size=50, target_ess=100), mse_loss)
    assert easy.converged and easy.steps < easy.config["max_steps"] and easy.r_hat <= 1.05 and easy.ess >= 100
    capped = estimate_llc(model, data, LLCConfig(step_size=1e-4, n_beta=100.0, batch_size=50, target_ess=1e6,
                                                 max_steps=300), mse_loss)
    assert not capped.converged and capped.steps == 300


def test_relaxation_times_of_the_samplers():
    """The variance of a direction of curvature γ relaxes at rate ε·γ per step under SGLD (ε·γ/eps
    with RMSProp's preconditioner at 1/eps), at 2r per unit time under BAOAB (r the slower root
    of s² − ζs + γ, or ζ/2 underdamped), h = √ε per step."""
    sgld = {"sampler": "sgld", "step_size": 1e-4, "localization": 300.0}
    assert relaxation_steps(sgld) == pytest.approx(1 / 0.03)
    assert relaxation_steps({**sgld, "sampler": "rmsprop", "rmsprop_eps": 0.1}) == pytest.approx(0.1 / 0.03)
    assert relaxation_steps({**sgld, "localization": 0.0}) == 0
    baoab = {"sampler": "baoab", "step_size": 1e-4, "localization": 100.0}
    assert relaxation_steps({**baoab, "friction": 20.0}) == pytest.approx(1 / (2 * 10 * 0.01))  # critical
    assert relaxation_steps({**baoab, "friction": 4.0}) == pytest.approx(1 / (2 * 2 * 0.01))  # underdamped
    r = 50 - math.sqrt(50**2 - 100)
    assert relaxation_steps({**baoab, "friction": 100.0}) == pytest.approx(1 / (2 * r * 0.01))


def test_agreeing_chains_are_not_converged_before_the_slowest_direction_relaxed():
    """R̂ and ESS met within 2,000 steps, but at γ = 1 the directions γ holds relax over
    1/(ε·γ) = 3,333 steps: not converged within the budget; at γ = 300 (11 steps) it is."""
    model, data, _ = regression(n=200)
    config = LLCConfig(step_size=3e-4, n_beta=100.0, localization=1.0, batch_size=50, max_steps=2000)
    weak = estimate_llc(model, data, config, mse_loss)
    assert weak.extra["relaxation_steps"] == pytest.approx(1 / 3e-4)
    assert weak.r_hat <= 1.05 and weak.ess >= 100 and not weak.converged and weak.steps == 2000
    strong = estimate_llc(model, data, config.model_copy(update={"localization": 300.0}), mse_loss)
    assert strong.converged and strong.steps < 2000


def test_fixed_draws_follow_a_detected_burnin():
    model, data, _ = regression(n=200)
    result = estimate_llc(model, data, LLCConfig(step_size=1e-4, n_beta=100.0, batch_size=50, num_draws=200), mse_loss)
    assert result.num_draws >= 200 and result.steps - result.burnin >= 200 and result.burnin_detected


def test_a_destroyed_language_model_is_flagged(tiny_checkpoint, tiny_tokens):
    """Chains free to wander (nβ = 1, no localization) at step size 1e-2 leave w* so far that their
    loss, still finite, exceeds a uniform prediction's (ln 256 = 5.55): every chain is stopped,
    vmapped or not, and the answer is one error naming why and a smaller step, not a λ̂."""
    config = LLCConfig(step_size=1e-2, n_beta=1.0, localization=0.0, num_chains=4, num_draws=100, num_burnin=0,
                       batch_size=8)
    with pytest.raises(UserError, match=r"all 4 chains diverged at step size 0.01 \(its loss \(\d+.\d+ nats\) "
                                        r"rose above a uniform prediction's \(5.55\).*try a smaller step size, e.g. 0.001"):
        estimate_llc(tiny_checkpoint.model, tiny_tokens.train, config)
    vectorised = sample(tiny_checkpoint.model, tiny_tokens.train, config.model_copy(update={"vectorize": "always"}))
    assert sorted(vectorised.diverged) == [0, 1, 2, 3] and vectorised.vectorized
    for chain in vectorised.losses:  # each stopped at a check: finite up to it, nothing recorded after
        stop = int(np.isfinite(chain).sum())
        assert 0 < stop < chain.size and stop % CHECK_EVERY == 0 and np.isnan(chain[stop:]).all()


def test_a_chain_that_jumps_away_from_the_others_is_excluded_and_named():
    """On a regression (no uniform prediction to judge by) one chain is pushed far off after 100
    steps: it is stopped by the other chains' level, the rest give the estimate."""
    from mdl_slt.llc.health import Health

    config = LLCConfig(num_chains=4)
    health = Health(config, n_beta=100.0, init_loss=1.0, uniform=None, d=1000)
    healthy = 1.0 + 0.03 + 0.002 * torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    for upto in range(25, 101, 25):
        assert health.check(healthy, upto, range(4)) == []
    away = torch.cat([healthy, healthy[:, :25]], dim=1)
    away[2, 100:] += 0.5  # nβ·(L − L*) from 3 to 53: past 10× the others' level, far below runaway (4000)
    assert health.check(away, 125, range(4)) == [2] and "jumped past 10×" in health.stopped[2][1]


def test_a_chain_warming_up_at_large_n_beta_is_not_a_jump_but_a_runaway_still_is():
    """At nβ = 3·10⁴ a chain climbs from w* (level 0, give or take nβ·σ_B/√25 = 780 of minibatch
    noise) to its level of 6,000 over a few hundred steps: judged against that noise, not a floor of
    1, no chain is stopped (with σ_B unknown, spread 0, the noisy first windows look like jumps from
    nothing). A chain that then leaves for 3 nats above w* is still stopped."""
    from mdl_slt.llc.health import Health

    n_beta, spread, steps = 3e4, 0.13, 600
    rise = 4.0 + 0.2 * (1 - torch.exp(-torch.arange(steps) / 150.0))
    noisy = rise + spread * torch.randn(4, steps, generator=torch.Generator().manual_seed(0))
    health = Health(LLCConfig(num_chains=4), n_beta, init_loss=4.0, uniform=None, d=10**6, spread=spread)
    assert not any(health.check(noisy, upto, range(4)) for upto in range(25, steps + 1, 25))
    blind = Health(LLCConfig(num_chains=4), n_beta, init_loss=4.0, uniform=None, d=10**6)
    assert any([blind.check(noisy, upto, range(4)) for upto in range(25, steps + 1, 25)])
    away = torch.cat([noisy, noisy[:, -25:]], dim=1)
    away[1, steps:] += 3.0  # level 9·10⁴, 15× the others' 6,000
    assert health.check(away, steps + 25, range(4)) == [1] and "jumped past 10×" in health.stopped[1][1]


def test_each_chain_is_judged_by_the_median_of_the_others_levels_as_numpy_gives_it():
    """The others' median comes from one sort of the levels, each chain's own left out: equal, bit
    for bit, to numpy's median of the others, odd and even counts, ties, and no one left."""
    from mdl_slt.llc.health import _median_without

    rng = np.random.default_rng(0)
    for n in range(1, 12):
        values = sorted(rng.choice([0.5, 1.0, 2.0, 3.7], n) + rng.normal(0, 1, n) * (n % 3 > 0))
        assert _median_without(values, None) == np.median(values)
        for position in range(n):
            others = values[:position] + values[position + 1:]
            assert _median_without(values, position) == (np.median(others) if others else None)


def test_traces_in_a_store_re_estimate_from_the_command_line_without_the_models(tiny_suite, tmp_path):
    home, _ = tiny_suite
    experiment = tmp_path / "t.yaml"
    experiment.write_text(f"""
name: traces
store: {tmp_path}/t.sqlite
models: [{{id: mdl-slt/tiny-a, revisions: [step8, step24]}}]
data: {{context_length: 32, eval_sequences: 16, llc_sequences: 64}}
llc: {{step_size: 1.0e-4, num_chains: 2, num_draws: 60, batch_size: 8}}
critical: {{compressors: [{{name: rtn, precision: 0.5}}], epsilons: [0.1]}}
""")
    assert run_cli("run", experiment, home=home).returncode == 0
    status = run_cli("status", tmp_path / "t.sqlite", home=home).stdout  # 2 chains × 60 draws: ESS short of 100
    assert "LLC not converged (R̂ " in status, status
    empty = tmp_path / "empty-home"  # no suite, no corpus: re-estimating must not sample
    same = run_cli("llc", "reestimate", tmp_path / "t.sqlite", "--json", home=empty)
    assert same.returncode == 0, same.stderr
    rows = json.loads(same.stdout)["checkpoints"]
    assert len(rows) == 2 and all(r["llc_mean"] == r["stored_llc_mean"] for r in rows)
    other = json.loads(run_cli("llc", "reestimate", tmp_path / "t.sqlite", "--num-burnin", "30", "--thinning", "2",
                               "--json", home=empty).stdout)["checkpoints"]
    assert all(r["burnin"] == 30 and r["thinning"] == 2 and r["llc_mean"] != r["stored_llc_mean"] for r in other)
    assert all(math.isfinite(r["llc_std_error"]) and r["r_hat"] > 0 for r in other)
