"""λ(ε), the LLC at the scale of a tolerance: λ̂ sampled at the nβ whose posterior sits ε above w*,
against models whose λ(ε) is known."""

import math

import pytest
import torch

from mdl_slt.errors import UserError
from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.ground_truth import at_tolerance, quadratic_quartic
from mdl_slt.llc.regime import volume_code_bits
from mdl_slt.llc.scale import llc_at_scale
from tests.conftest import regression


@pytest.mark.parametrize("epsilon", [0.1, 0.01, 0.001])
def test_a_regular_model_has_d_over_2_at_every_tolerance(epsilon):
    """Linear regression in 6 weights, localization negligible (γ = 10⁻³ against curvatures near 1):
    λ(ε) = d/2 = 3 at every ε within 5%, found at the nβ where E[ΔL] = λ̂/nβ is within 5% of ε.
    BAOAB samples the Gaussian posterior exactly at any stable step; its step keeps η·nβ up the ladder."""
    model, data, loss = regression(d=6, n=1000)
    config = LLCConfig(sampler="baoab", step_size=0.01, n_beta=30.0, localization=1e-3, friction=3.0,
                       batch_size=1000, num_chains=16, num_draws=1000, seed=1)
    found = llc_at_scale(model, data, config, epsilon, loss)
    assert found.found and abs(found.excess_loss / epsilon - 1) <= 0.05
    assert found.rungs[-1]["r_hat"] < 1.05  # (not `converged`: its relaxation rule waits 4/(ηγ) steps at γ = 10⁻³)
    assert found.llc_mean == pytest.approx(3, rel=0.05) and found.llc_std_error < 0.1
    assert len(found.rungs) <= 3  # a regular model's slope is 0: the first step lands


class _TwoScale(torch.nn.Module):
    """L = Σ x_i² + y_i⁴ over four pairs at w* = 0."""

    def __init__(self):
        super().__init__()
        self.x, self.y = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))

    def loss(self, batch):
        return (self.x**2).sum() + (self.y**4).sum()


def test_a_two_scale_model_follows_its_closed_form_across_the_scales():
    """Four pairs a·x² + b·y⁴ under localization γ = 1: λ(ε) rises from near 0 where γ holds every
    direction (ε = 10) to ¾ a pair, 3 in all, as ε → 0; sampled (BAOAB, its step divided by the
    factor up the ladder) within 6% of the quadrature's λ(ε) at each ε."""
    model = _TwoScale()
    found = {}
    for epsilon in (10.0, 1.0, 0.01):
        config = LLCConfig(sampler="baoab", step_size=0.03, n_beta=1.0, localization=1.0, batch_size=1,
                           num_chains=16, max_steps=6000, seed=1)
        found[epsilon] = llc_at_scale(model, torch.zeros(1, 1), config, epsilon, lambda m, batch: m.loss(batch))
        truth, _ = at_tolerance(lambda n_beta: quadratic_quartic(n_beta, 1.0, pairs=4), epsilon)
        assert found[epsilon].found and found[epsilon].converged
        assert found[epsilon].llc_mean == pytest.approx(truth, rel=0.06), (epsilon, truth)
    assert found[10.0].llc_mean < 0.2 * found[0.01].llc_mean and found[0.01].llc_mean == pytest.approx(3, rel=0.03)


def test_the_closed_form_two_scale_llc_has_its_limits():
    assert quadratic_quartic(1e8, 1.0) == pytest.approx(0.75, rel=1e-3)  # ½ + ¼ a pair
    assert quadratic_quartic(1e-6, 1.0) < 1e-5
    llc, n_beta = at_tolerance(lambda n: quadratic_quartic(n, 1.0, pairs=4), 0.01)
    assert llc / n_beta == pytest.approx(0.01)


def test_a_tolerance_must_be_positive_and_a_negative_llc_is_refused():
    model, data, loss = regression(d=2, n=50)
    with pytest.raises(UserError, match="needs a tolerance ε > 0"):
        llc_at_scale(model, data, LLCConfig(), 0.0, loss)
    with torch.no_grad():
        model.weight.add_(1.0)  # far from the minimum: the chains fall, λ̂ < 0
    with pytest.raises(UserError, match="w\\* is not a minimum"):
        llc_at_scale(model, data, LLCConfig(step_size=1e-4, n_beta=100.0, num_draws=50, batch_size=50), 0.1, loss)


def test_a_tolerance_above_what_localization_allows_is_refused_with_the_cap():
    """In the trace limit (nβ·h ≪ γ) the posterior's height is tr(H)/(2γ) = 0.002 whatever nβ: ε = 0.01
    is out of reach, and the search stops at its second rung, saying so, instead of running nβ down."""
    from tests.test_sgld import _Quadratic

    model = _Quadratic(torch.ones(4), torch.eye(4))
    config = LLCConfig(sampler="baoab", step_size=1e-4, n_beta=1.0, localization=1.0e3, batch_size=1, num_chains=8,
                       num_draws=500, seed=1)
    found = llc_at_scale(model, torch.zeros(1, 1), config, 0.01, lambda m, batch: m.loss(batch))
    assert not found.found and len(found.rungs) == 2 and "localization caps it there" in found.why
    assert found.excess_loss == pytest.approx(4 / (2 * 1e3), rel=0.2)


def test_a_steep_slope_between_rungs_short_of_converged_is_not_taken_for_the_cap(monkeypatch):
    """Rungs whose chains did not converge can read a slope near 1 while λ̂ still climbs: the search
    goes on (the slope taken as MAX_SLOPE) instead of concluding the trace limit; with every rung
    converged the same readings stop it."""
    from types import SimpleNamespace

    import mdl_slt.llc.sampling

    def climbing(converged):  # λ̂ ∝ nβ^0.99 up to 2,000, then flat: E[ΔL] reaches 0.1 at nβ = 20,000
        def estimate(model, data, config, loss_fn=None):
            llc = min(2000.0, 0.3 * config.n_beta ** 0.99)
            return SimpleNamespace(n_beta=config.n_beta, config={"step_size": config.step_size}, llc_mean=llc,
                                   llc_std_error=1.0, r_hat=1.0, converged=converged)
        return estimate

    config = LLCConfig(n_beta=1000.0, step_size=1e-4)
    monkeypatch.setattr(mdl_slt.llc.sampling, "estimate_llc", climbing(False))
    found = llc_at_scale(None, torch.zeros(1, 1), config, 0.1, lambda m, b: 0.0)
    assert found.found and found.n_beta == pytest.approx(20_000, rel=0.05) and len(found.rungs) > 2
    monkeypatch.setattr(mdl_slt.llc.sampling, "estimate_llc", climbing(True))
    capped = llc_at_scale(None, torch.zeros(1, 1), config, 0.1, lambda m, b: 0.0)
    assert not capped.found and len(capped.rungs) == 2 and "localization caps it" in capped.why


def test_the_divergence_from_w_star_is_zero_there_with_zero_gradient_and_grows_as_a_quadratic(tiny_checkpoint,
                                                                                               tiny_tokens):
    """D(w) = KL(p_w* ‖ p_w) per token: 0 with zero gradient at w* (its minimum at every nβ, where the
    cross-entropy of a checkpoint has a gradient), positive off it, and quadratic near it: D(2tδ) =
    4·D(tδ). The copy at w* is frozen: moving the model does not move it."""
    import copy

    from mdl_slt.compute.loss import divergence_from

    model, tokens = copy.deepcopy(tiny_checkpoint.model), tiny_tokens.train[:8]
    loss = divergence_from(model)
    at = loss(model, tokens)
    grads = torch.autograd.grad(at, [p for p in model.parameters() if p.requires_grad])
    assert abs(at.item()) < 1e-6 and max(float(g.abs().max()) for g in grads) < 1e-6
    seeded = torch.Generator().manual_seed(0)
    direction = [torch.randn(p.shape, generator=seeded) for p in model.parameters()]
    found = []
    for t in (1e-3, 2e-3):
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for p, u in zip(moved.parameters(), direction):
                p.add_(t * u)
        found.append(loss(moved, tokens).item())
    assert found[0] > 0 and found[1] / found[0] == pytest.approx(4, rel=0.05)
    assert abs(loss(model, tokens).item()) < 1e-6


def test_the_volume_code_length_integrates_lambda_over_log_tolerance():
    """DL_λ(ε) = ∫ λ d log₂(1/s) from the widest ε: a constant λ = d/2 gives d/2·log₂(ε_max/ε); λ
    linear in log ε is integrated exactly; the tolerances may come in any order; bad input is refused."""
    assert volume_code_bits([0.1, 0.05, 0.025], [3.0, 3.0, 3.0]) == pytest.approx([0.0, 3.0, 6.0])
    assert volume_code_bits([0.02, 0.1, 0.05], [3.0, 3.0, 3.0]) == pytest.approx([3 * math.log2(5), 0.0, 3.0])
    linear = [1.0 + math.log2(0.1 / e) for e in (0.1, 0.05, 0.025)]  # λ = 1 + log₂(0.1/s): ∫ = x + x²/2
    assert volume_code_bits([0.1, 0.05, 0.025], linear) == pytest.approx([0.0, 1.5, 4.0])
    assert volume_code_bits([0.1], [7.0]) == [0.0]
    with pytest.raises(UserError, match=r"one λ\(ε\) per tolerance"):
        volume_code_bits([0.1, 0.0], [1.0, 1.0])
    with pytest.raises(UserError, match=r"one λ\(ε\) per tolerance"):
        volume_code_bits([0.1, 0.05], [1.0])


def test_on_a_language_model_the_scale_of_a_tolerance_is_sampled_on_the_divergence(tiny_checkpoint, tiny_tokens):
    """At nβ = 3,000 the chains on the cross-entropy fall below L(w*) (λ̂ ≈ −900: the checkpoint is not
    a minimum of its sampling text there); on the divergence from w* they settle above it (λ̂ ≈ 79)."""
    from mdl_slt.compute.loss import divergence_from
    from mdl_slt.llc.sampling import estimate_llc

    config = LLCConfig(n_beta=3000.0, step_size=3e-5, num_chains=2, batch_size=8, max_steps=1000)
    model, data = tiny_checkpoint.model, tiny_tokens.train
    assert estimate_llc(model, data, config).llc_mean < 0
    assert estimate_llc(model, data, config, divergence_from(model)).llc_mean > 0


def test_a_deep_linear_network_approaches_its_rank_formula_as_the_tolerance_shrinks():
    """Three matrices 4→5→4→3 whose product has rank 1 (λ = 5.5 by Aoyagi's formula, d/2 = 26), n = 10⁶
    exact inputs, γ = 10: λ(ε) climbs towards 5.5 as ε falls (3.5, 4.8, 5.4 at ε = 0.1, 0.01, 0.001;
    at ε = 0.1 localization still holds part of it) and lies within 10% of it at the smallest ε."""
    from mdl_slt.llc.ground_truth import deep_linear, deep_linear_task

    model, data, loss = deep_linear_task([4, 5, 4, 3], 1, 10**6, seed=1, exact=True)
    truth = deep_linear([4, 5, 4, 3], 1)
    config = LLCConfig(sampler="baoab", step_size="auto", localization=10.0, batch_size=len(data[0]), block=500,
                       max_steps=20_000, n_beta=100.0)
    found = []
    for epsilon in (0.1, 0.01, 0.001):
        found.append(llc_at_scale(model, data, config, epsilon, loss))
        config = config.model_copy(update={"n_beta": found[-1].n_beta})
    assert truth == 5.5 and all(f.found and f.converged for f in found)
    for wider, narrower in zip(found, found[1:]):
        assert narrower.llc_mean - wider.llc_mean > 2 * math.hypot(wider.llc_std_error, narrower.llc_std_error)
    assert found[0].llc_mean < 0.9 * truth and found[-1].llc_mean == pytest.approx(truth, rel=0.1)


def test_a_scale_section_measures_lambda_at_each_tolerance_as_a_task_of_its_own(tiny_suite, tmp_path):
    """`scale: {epsilons: [...]}` adds an `llc_scale:<ε>` task per tolerance on the checkpoints it
    takes (`every`), keyed by the first rung's settings and ε: its row holds λ(ε) and its rungs; the
    analysis's scale table gives E[D], DL_λ(ε) from the widest ε found and λ(ε)/λ̂; costs give its
    seconds per checkpoint, beside each critical search's. A rerun measures nothing; the other tasks' keys are those of a run without it."""
    import os

    from rich.console import Console

    from mdl_slt.analysis import analyse
    from mdl_slt.plan.experiment import load_experiment
    from mdl_slt.plan.tasks import Tasks
    from mdl_slt.run.runner import run_experiment

    home, _ = tiny_suite
    plain = f"""
name: scaled
store: {tmp_path}/s.sqlite
models: [{{id: mdl-slt/tiny-a, revisions: [step8, step24]}}]
data: {{context_length: 32, eval_sequences: 16, llc_sequences: 64}}
llc: {{step_size: 1.0e-4, num_chains: 2, num_draws: 40, num_burnin: 10, batch_size: 8}}
critical: {{compressors: [{{name: rtn, precision: 0.5}}], epsilons: [0.05, 0.2]}}
"""
    path = tmp_path / "s.yaml"
    path.write_text(plain + "scale: {epsilons: [0.05, 0.02], every: 2, llc: {n_beta: 1000, step_size: 3.0e-5, "
                            "localization: 30, num_draws: auto, num_burnin: auto, max_steps: 400}}\n")
    experiment = load_experiment(path).on("cpu")
    without = Tasks(experiment.model_copy(update={"scale": experiment.scale.model_copy(update={"epsilons": []})}))
    summary = run_experiment(experiment, home, Console(file=open(os.devnull, "w")))
    assert summary.failures == []
    a = analyse(tmp_path / "s.sqlite")
    rows = a.records[a.records.task == "llc_scale"]
    assert sorted(zip(rows.revision, rows.epsilon)) == [("step8", 0.02), ("step8", 0.05)]  # every 2nd revision
    table = a.scale
    assert list(table.epsilon) == [0.05, 0.02] and (table.rungs >= 1).all() and table.found.astype(bool).all()
    assert (table.excess_loss == table.llc_at_scale / table.n_beta).all()
    assert (table.over_llc == table.llc_at_scale / table.llc_mean).all()
    assert list(table.dl_lambda_bits) == volume_code_bits(list(table.epsilon), list(table.llc_at_scale))
    assert table.dl_lambda_bits.iloc[1] > 0
    assert "llc_scale" in set(a.costs.measure)
    searches = a.records[a.records.task == "critical"].drop_duplicates("task_key")
    assert a.costs.set_index("measure").seconds["critical:rtn"] == searches.elapsed_s.median()  # every ε at once
    assert run_experiment(experiment, home, Console(file=open(os.devnull, "w"))).tasks_done == 0
    scaled = Tasks(experiment)
    assert without.all_hashes < scaled.all_hashes
    assert scaled.all_hashes - without.all_hashes == {h for own in scaled.scale.values() for _, h in own.values()}
