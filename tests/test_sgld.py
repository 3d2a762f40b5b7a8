import math

import pytest
import torch

from mdl_slt.errors import UserError
from mdl_slt.sgld import LLCConfig, estimate_llc


def regression(d=6, n=1000, seed=0):
    """A full-rank linear regression at its least-squares optimum w*, with Gaussian NLL loss."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, 1, generator=g) + 0.5 * torch.randn(n, 1, generator=g)
    model = torch.nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    loss = lambda m, batch: 0.5 * ((m(batch[0]) - batch[1]) ** 2).sum(-1).mean()  # noqa: E731
    return model, (x, y), loss


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
    assert config.steps_per_chain == 7 + 60 and len(result.loss_trace[0]) == 20


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


def test_float_data_needs_a_loss_function():
    with pytest.raises(UserError, match="loss_fn"):
        estimate_llc(torch.nn.Linear(2, 1), torch.randn(4, 2))
