import math

import pytest
import torch

from mdl_slt.errors import UserError
from mdl_slt.llc.batches import mse_loss
from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.ground_truth import crossing_expectation, deep_linear_cases, normal_crossing
from mdl_slt.llc.sampling import estimate_llc
from tests.conftest import regression


def exact_llc(x, n_beta, gamma):
    """For a quadratic L_n the localized posterior is Gaussian and λ̂ = ½ Σ nβh/(nβh + γ) exactly."""
    eig = torch.linalg.eigvalsh(x.T @ x / len(x))
    return 0.5 * float(sum(n_beta * h / (n_beta * h + gamma) for h in eig))


def test_regular_model_recovers_d_over_2():
    model, data, loss = regression()
    config = LLCConfig(step_size=1e-4, n_beta=1000.0, localization=1.0, num_chains=4, num_draws=1500,
                       num_burnin=200, batch_size=1000, seed=1)
    result = estimate_llc(model, data, config, loss)
    truth = exact_llc(data[0], 1000.0, 1.0)
    assert truth == pytest.approx(3.0, rel=0.01)  # d/2
    assert abs(result.llc_mean - truth) < max(3 * result.llc_std_error, 0.1 * truth)
    assert result.llc_std_error > 0 and len(result.llc_per_chain) == 4


def test_localization_shrinks_the_estimate_as_predicted():
    model, data, loss = regression(seed=2)
    config = LLCConfig(step_size=2e-4, n_beta=100.0, localization=200.0, num_chains=4, num_draws=1500,
                       num_burnin=200, batch_size=1000, seed=3)
    result = estimate_llc(model, data, config, loss)
    truth = exact_llc(data[0], 100.0, 200.0)
    assert truth < 1.5  # far below d/2 = 3: γ dominates
    assert abs(result.llc_mean - truth) < max(3 * result.llc_std_error, 0.1 * truth)


def test_reproducible_and_restores_w_star():
    model, data, loss = regression()
    before = model.weight.detach().clone()
    config = LLCConfig(step_size=1e-4, n_beta=100.0, num_chains=2, num_draws=50, num_burnin=10, batch_size=50)
    a = estimate_llc(model, data, config, loss)
    assert torch.equal(model.weight, before)
    b = estimate_llc(model, data, config, loss)
    assert a.llc_per_chain == b.llc_per_chain and a.init_loss == b.init_loss
    assert a.llc_per_chain[0] != a.llc_per_chain[1]  # chains have their own streams
    c = estimate_llc(model, data, config.model_copy(update={"seed": 7}), loss)
    assert c.llc_per_chain != a.llc_per_chain
    assert len(a.loss_trace) == 2 and len(a.loss_trace[0]) == 50


def test_burnin_and_thinning_shape_the_trace():
    model, data, loss = regression()
    config = LLCConfig(step_size=1e-4, n_beta=100.0, num_chains=1, num_draws=20, num_burnin=7, thinning=3,
                       batch_size=50)
    result = estimate_llc(model, data, config, loss)
    assert config.fixed_steps == 7 + 60 and result.steps == 67 and len(result.loss_trace[0]) == 20


def test_all_chains_diverging_is_a_clear_error():
    model, data, loss = regression()
    config = LLCConfig(step_size=10.0, n_beta=1000.0, num_chains=2, num_draws=60, num_burnin=0, batch_size=100)
    with pytest.raises(UserError, match="diverged.*smaller step size"):
        estimate_llc(model, data, config, loss)
    assert torch.isfinite(model.weight).all()


def test_language_model_estimate(tiny_checkpoint, tiny_tokens):
    tokens = tiny_tokens.train
    config = LLCConfig(step_size=1e-4, num_chains=2, num_draws=30, num_burnin=10, batch_size=8)
    result = estimate_llc(tiny_checkpoint.model, tokens, config)
    assert all(math.isfinite(v) for v in result.llc_per_chain) and math.isfinite(result.llc_std_error)
    assert result.diverged_chains == [] and result.steps_per_second > 0
    assert not result.vectorized  # auto: transformers models run chain by chain
    forced = estimate_llc(tiny_checkpoint.model, tokens, config.model_copy(update={"vectorize": "always"}))
    assert forced.vectorized and forced.llc_per_chain == pytest.approx(result.llc_per_chain, rel=1e-4)
    saved = estimate_llc(tiny_checkpoint.model, tokens, config.model_copy(update={"gradient_checkpointing": True}))
    assert saved.llc_per_chain == pytest.approx(result.llc_per_chain, rel=1e-4)  # same chains, recomputed activations
    assert not tiny_checkpoint.model.training and not tiny_checkpoint.model.is_activation_checkpointing
    assert not tiny_checkpoint.model.get_input_embeddings()._forward_hooks  # transformers' input-grad hook removed


def test_bf16_autocast_changes_the_loss_only_at_bf16_precision(tiny_checkpoint, tiny_tokens):
    """The autocast path CUDA takes, exercised on CPU: the loss stays fp32-reduced and close."""
    from mdl_slt.compute.loss import token_nll

    batch = tiny_tokens.eval[:8]
    with torch.no_grad():
        exact = float(token_nll(tiny_checkpoint.model, batch))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = token_nll(tiny_checkpoint.model, batch)
    assert mixed.dtype == torch.float32 and float(mixed) == pytest.approx(exact, rel=2e-2) and float(mixed) != exact


def test_float_data_needs_a_loss_function():
    with pytest.raises(UserError, match="loss_fn"):
        estimate_llc(torch.nn.Linear(2, 1), torch.randn(4, 2))
    model, data, _ = regression()
    config = LLCConfig(step_size=1e-4, n_beta=100.0, num_chains=2, num_draws=20, num_burnin=5, batch_size=50)
    assert estimate_llc(model, data, config).llc_per_chain == estimate_llc(model, data, config, mse_loss).llc_per_chain


STATED = [186.5, 252.6, 489.4, 729.5, 2003.7, 3040.9, 7004.9, 4707.4]  # the README's λ̂ of the first eight networks


@pytest.mark.science
@pytest.mark.parametrize("case", range(8))
def test_deep_linear_networks_at_the_recommended_settings(case):
    """The accuracy bench's first eight networks (0.9k–108k parameters, 2–5 layers) at the
    recommended settings (bench/llc_accuracy.py: BAOAB, exact gradients, n = 10⁶, γ = 100) give the
    README's table: converged by the code's own rule (R̂ ≤ 1.05, ESS, relaxation), and λ̂ within 3
    of its standard errors (plus the table's rounding) of the λ̂ the table states, so the stated
    errors against Aoyagi's λ (mean 2.5%, worst 6.0%) hold as written."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent.parent / "bench"))
    from llc_accuracy import run_case

    widths, rank = deep_linear_cases(11)[case]
    result, truth = run_case(widths, rank)
    assert result.converged and result.r_hat <= result.config["target_r_hat"] == 1.05, result.r_hat
    assert abs(result.llc_mean - STATED[case]) <= 3 * result.llc_std_error + 0.05, (result.llc_mean, truth)


def test_normal_crossing_potential():
    """K(w) = w₁²·w₂⁴: λ = min(1/2, 1/4) = 1/4 (multiplicity 1). At finite nβ the estimator's
    target is E_p[nβK], computed exactly by quadrature; it tends to λ as nβ grows."""
    assert normal_crossing([1, 2]) == (0.25, 1) and normal_crossing([1, 1]) == (0.5, 2)
    assert crossing_expectation(1e12, 1.0) == pytest.approx(0.25, abs=0.002)
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.zeros(2))
    potential = lambda m, batch: m.w[0] ** 2 * m.w[1] ** 4  # noqa: E731
    config = LLCConfig(step_size=5e-5, n_beta=1e4, localization=10.0, num_chains=8, num_draws=10000,
                       num_burnin=2000, batch_size=1, seed=0)
    result = estimate_llc(model, torch.zeros(1, 1), config, potential)
    exact = crossing_expectation(1e4, 10.0)  # 0.173
    assert result.llc_std_error < 0.04
    assert abs(result.llc_mean - exact) < 3 * result.llc_std_error, (result.llc_mean, exact)


@pytest.mark.parametrize("sampler", ["sgld", "rmsprop", "baoab"])
def test_vectorized_and_sequential_chains_agree(sampler):
    """Also across blocks: one after another, each chain's state (RMSProp's V, BAOAB's momentum)
    is put aside between blocks and taken up again."""
    model, data, loss = regression()
    config = LLCConfig(sampler=sampler, step_size=1e-4, n_beta=100.0, num_chains=3, num_draws="auto", block=25,
                       max_steps=100, target_ess=1e9, batch_size=50)
    together = estimate_llc(model, data, config, loss)
    apart = estimate_llc(model, data, config.model_copy(update={"vectorize": "never"}), loss)
    assert together.vectorized and not apart.vectorized and together.steps == apart.steps == 100
    assert together.llc_per_chain == pytest.approx(apart.llc_per_chain, rel=1e-4)


def test_a_batch_as_large_as_the_data_uses_every_row():
    """Exact gradients: every chain's first loss (at w*) is L_n(w*) itself; a smaller batch is a
    random subset, different per chain."""
    model, data, loss = regression()
    config = LLCConfig(step_size=1e-4, n_beta=100.0, num_chains=2, num_draws=5, num_burnin=0, batch_size=len(data[0]))
    whole = estimate_llc(model, data, config, loss)
    assert [chain[0] for chain in whole.loss_trace] == pytest.approx([whole.init_loss] * 2, rel=1e-6)
    part = estimate_llc(model, data, config.model_copy(update={"batch_size": 50}), loss)
    assert part.loss_trace[0][0] != part.loss_trace[1][0]


def test_baoab_samples_a_quadratic_exactly_where_sgld_is_biased():
    """At ε·(nβ·h + γ) ≈ 1 SGLD's Euler step inflates each direction's variance by 1/(1 − ε·a/4)
    (λ̂ about a third high); BAOAB samples a Gaussian posterior exactly at any stable step."""
    model, data, loss = regression()
    truth = exact_llc(data[0], 1000.0, 10.0)
    config = LLCConfig(sampler="baoab", step_size=1e-3, n_beta=1000.0, localization=10.0, num_chains=4,
                       num_draws=4000, num_burnin=200, batch_size=len(data[0]), seed=1)
    baoab = estimate_llc(model, data, config, loss)
    assert abs(baoab.llc_mean - truth) < max(3 * baoab.llc_std_error, 0.03 * truth), (baoab.llc_mean, truth)
    sgld = estimate_llc(model, data, config.model_copy(update={"sampler": "sgld"}), loss)
    assert sgld.llc_mean > 1.2 * truth
    assert baoab.config["friction"] == pytest.approx(10 * math.sqrt(10.0))


class _Quadratic(torch.nn.Module):
    """U/nβ = ½·wᵀHw with H = Q·diag(h)·Qᵀ: λ at (nβ, γ) is Σᵢ ½·nβhᵢ/(nβhᵢ + γ), exactly."""

    def __init__(self, h, rotation):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(len(h)))
        self.hessian = rotation @ torch.diag(h) @ rotation.T

    def loss(self, batch):
        return 0.5 * self.w @ self.hessian @ self.w


def _fisher_llc(h, rotation, n_beta: float, gamma: float, max_steps: int = 1000):
    model = _Quadratic(h, rotation)
    result = estimate_llc(model, torch.zeros(1, 1), LLCConfig(sampler="fisher", step_size="auto", n_beta=n_beta,
                                                              localization=gamma, batch_size=1, max_steps=max_steps,
                                                              seed=1), lambda m, batch: m.loss(batch))
    return result, float((0.5 * n_beta * h / (n_beta * h + gamma)).sum())


@pytest.mark.parametrize("n_beta,gamma", [(100.0, 10.0), (1e4, 1.0), (1e5, 1e-3)])
def test_fisher_sampler_gives_a_quadratics_llc_at_every_scale(n_beta, gamma):
    """Curvatures over five decades (h from 10⁻³ to 10²), from nβ·h ≪ γ to nβ·h ≫ γ: preconditioned
    by the Hessian's estimated diagonal, every direction relaxes in about 1/η steps, so `num_draws:
    auto` converges within 1000 steps at each scale (plain SGLD's slowest direction would need
    nβ·h_max/(nβ·h_min + γ), up to 10⁵, times its fastest's), and λ̂ is within 5% of the truth."""
    result, truth = _fisher_llc(torch.logspace(-3, 2, 40), torch.eye(40), n_beta, gamma)
    assert result.converged and not result.diverged_chains
    assert abs(result.llc_mean / truth - 1) < 0.05, (result.llc_mean, truth, result.llc_std_error)


def test_fisher_sampler_is_exact_with_a_rough_preconditioner():
    """Rotated by a random orthogonal Q, the Hessian is far from its diagonal, which is then only a
    rough preconditioner, so chains relax more slowly: λ̂ is still the quadratic's λ (the sampler is
    exact for any positive M)."""
    rotation = torch.linalg.qr(torch.randn(40, 40, generator=torch.Generator().manual_seed(3)))[0]
    result, truth = _fisher_llc(torch.logspace(0, 1, 40), rotation, 100.0, 10.0, max_steps=5000)
    assert result.converged and abs(result.llc_mean / truth - 1) < 0.05, (result.llc_mean, truth)


def test_baoab_friction_needs_a_localization_or_a_value():
    model, data, loss = regression()
    config = LLCConfig(sampler="baoab", step_size=1e-4, n_beta=100.0, localization=0.0, num_draws=5, num_burnin=0)
    with pytest.raises(UserError, match="needs localization > 0"):
        estimate_llc(model, data, config, loss)
    assert math.isfinite(estimate_llc(model, data, config.model_copy(update={"friction": 5.0}), loss).llc_mean)
    with pytest.raises(ValueError, match="friction must be positive"):
        LLCConfig(friction=0.0)


def test_exact_deep_linear_inputs_give_the_n_sample_loss():
    """`deep_linear_task(exact=True)`: H_1 rows whose loss is that of the n Gaussian inputs they
    stand for, at any parameters (here a random perturbation of w*)."""
    from mdl_slt.llc.ground_truth import _second_moment_rows

    n, width = 3000, 7
    rows = _second_moment_rows(n, width, torch.Generator().manual_seed(5), chunk=1000)
    g = torch.Generator().manual_seed(5)
    x = torch.cat([torch.randn(1000, width, generator=g, dtype=torch.float64) for _ in range(3)]).float()
    assert rows.shape == (width, width)
    true, moved = torch.randn(4, width), torch.randn(4, width)
    on_rows = 0.5 * ((rows @ (moved - true).T) ** 2).sum(-1).mean()
    on_samples = 0.5 * ((x @ (moved - true).T) ** 2).sum(-1).mean()
    assert float(on_rows) == pytest.approx(float(on_samples), rel=1e-5)


def test_compiled_chains_agree_with_eager_ones_and_compile_once_per_model():
    model, data, loss = regression()
    config = LLCConfig(step_size=1e-4, n_beta=100.0, num_chains=3, num_draws=40, num_burnin=10, batch_size=50)
    eager = estimate_llc(model, data, config, loss)
    compiled = estimate_llc(model, data, config.model_copy(update={"compile": True}), loss)
    assert compiled.vectorized and compiled.llc_per_chain == pytest.approx(eager.llc_per_chain, rel=1e-4)
    (first,) = model._mdl_slt_compiled.values()
    estimate_llc(model, data, config.model_copy(update={"compile": True, "seed": 1}), loss)
    assert list(model._mdl_slt_compiled.values()) == [first]  # another seed reuses the compiled gradient


def test_compiled_chain_by_chain_gradient_gives_the_eager_chains_and_serves_every_checkpoint(tiny_suite, tiny_tokens):
    """`compile: true` on a transformers model on a CPU: the chain-by-chain runner's compiled
    gradient gives the eager runner's chains, and one compilation serves every checkpoint of the
    architecture (their tensors are passed in, not baked in)."""
    from mdl_slt.llc import chains
    from mdl_slt.models.checkpoints import load_checkpoint

    home, _ = tiny_suite
    config = LLCConfig(step_size=1e-4, num_chains=2, num_draws=30, num_burnin=10, batch_size=8)
    late, early = (load_checkpoint(f"mdl-slt/tiny-b@{r}", home).model for r in ("step24", "step8"))
    compiled = {**config.model_dump(), "compile": True}
    for model in (late, early):
        eager = estimate_llc(model, tiny_tokens.train, config)
        found = estimate_llc(model, tiny_tokens.train, LLCConfig(**compiled))
        assert not found.vectorized and found.llc_per_chain == pytest.approx(eager.llc_per_chain, rel=1e-3)
    assert len([key for key in chains._COMPILED if key[0] == type(late).__qualname__]) == 1


def test_rmsprop_sampler_recovers_d_over_2():
    model, data, loss = regression()
    config = LLCConfig(sampler="rmsprop", step_size=2e-5, n_beta=1000.0, localization=1.0, num_chains=4,
                       num_draws=1500, num_burnin=300, batch_size=1000, seed=2)
    result = estimate_llc(model, data, config, loss)
    truth = exact_llc(data[0], 1000.0, 1.0)
    assert abs(result.llc_mean - truth) < max(3 * result.llc_std_error, 0.1 * truth)


def test_component_llc_of_a_subset():
    """Two independent regressions in one model (d₁ = 2, d₂ = 6): sampling only the first gives
    λ = d₁/2 = 1, sampling everything (d₁ + d₂)/2 = 4; the frozen part stays at w*."""
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(1000, 2, generator=g), torch.randn(1000, 6, generator=g)
    y1, y2 = x1 @ torch.randn(2, 1, generator=g), x2 @ torch.randn(6, 1, generator=g)
    model = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 1, bias=False), "b": torch.nn.Linear(6, 1, bias=False)})
    with torch.no_grad():
        model["a"].weight.copy_(torch.linalg.lstsq(x1, y1).solution.T)
        model["b"].weight.copy_(torch.linalg.lstsq(x2, y2).solution.T)
    loss = lambda m, b: 0.5 * (((m["a"](b[0]) - b[1]) ** 2).mean() + ((m["b"](b[2]) - b[3]) ** 2).mean())  # noqa: E731
    config = LLCConfig(step_size=1e-4, n_beta=1000.0, localization=1.0, num_chains=4, num_draws=1500,
                       num_burnin=200, batch_size=1000, seed=1)
    data = (x1, y1, x2, y2)
    full = estimate_llc(model, data, config, loss)
    part = estimate_llc(model, data, config.model_copy(update={"parameters": ["a.*"]}), loss)
    assert part.num_params == 2 and full.num_params == 8
    assert part.llc_mean == pytest.approx(1.0, rel=0.15) and full.llc_mean == pytest.approx(4.0, rel=0.1)
    with pytest.raises(UserError, match="no parameter matches"):
        estimate_llc(model, data, config.model_copy(update={"parameters": ["nothing.*"]}), loss)


def test_diverging_chains_are_excluded_with_a_suggestion():
    """At the edge of stability (ε·nβ·h_max ≈ 3.5, unstable at 4; minibatches of half the data
    push some steps past it) some of 16 chains run away: they are excluded and named, and the
    estimate comes from the others."""
    model, data, loss = regression()
    config = LLCConfig(step_size=3.1e-3, n_beta=1000.0, localization=1.0, num_chains=16, num_draws=100,
                       num_burnin=0, batch_size=500, seed=0)
    result = estimate_llc(model, data, config, loss)
    assert 0 < len(result.diverged_chains) < 16 and math.isfinite(result.llc_mean)
    assert all("runaway" in result.diverged_reasons[c] for c in result.diverged_chains)
    assert result.suggested_step_size == pytest.approx(3.1e-4)
    assert all(math.isnan(result.llc_per_chain[c]) for c in result.diverged_chains)


def test_top_hessian_eigenvalue_of_a_regression():
    """For ½·mean‖Wx − y‖² the Hessian is XᵀX/n: power iteration must find its top eigenvalue."""
    from mdl_slt.llc.curvature import top_hessian_eigenvalue

    model, (x, y), loss = regression(d=6, n=1000)
    x = x * torch.tensor([3.0, 1, 1, 1, 1, 0.5])  # a clear top direction
    exact = float(torch.linalg.eigvalsh(x.T @ x / len(x)).max())
    assert top_hessian_eigenvalue(model, (x, y), loss, batch_size=1000) == pytest.approx(exact, rel=1e-3)
