"""The variational code: its posterior against the closed form, its length against KL(q‖p), the
decoder against the encoder, its samples against q, and a weight the loss ignores."""

import math

import pytest
import torch

import compressors
from compressors import rec
from mdl_slt.errors import UserError


def flat(plan, values):
    """A plan's block-ordered values in the matrix's own order."""
    out = torch.zeros(int((plan.order >= 0).sum()), dtype=values.dtype)
    out[plan.order[plan.order >= 0]] = values[plan.order >= 0]
    return out


def orthogonal_regression(d=64, n=4096, noise=0.5, seed=0):
    """y = Xw + noise with orthogonal columns of unequal norms (so the Hessian is diagonal): the
    least-squares w* and the per-sample Hessian diagonal h = diag(XᵀX)/(n·noise²)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
    x = q * math.sqrt(n) * torch.logspace(-2, 0.5, d, dtype=torch.float64)
    y = x @ torch.randn(d, dtype=torch.float64, generator=g) + noise * torch.randn(n, dtype=torch.float64, generator=g)
    w = torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1)
    return x, y, w, (x * x).sum(0) / (n * noise**2)


@pytest.mark.parametrize("tau", [1e-4, 1e-2])
def test_the_posterior_is_the_tempered_bayes_posterior_of_a_linear_gaussian_regression(tau):
    """Per-sample loss ½(y − xᵀv)²/noise²: the posterior ∝ exp(−n·L(v)/(n·τ))·N(v; 0, s²) is Gaussian,
    precision XᵀX/(n·noise²·τ) + I/s² and mean Σ·Xᵀy/(n·noise²·τ), which the family must give."""
    x, y, w, h = orthogonal_regression()
    n, noise = len(y), 0.5
    family = rec.with_prior(w, h, tau, shrinks=True)
    precision = x.T @ x / (n * noise**2 * tau) + torch.eye(len(w), dtype=torch.float64) / family.scale**2
    covariance = torch.linalg.inv(precision)
    mean = covariance @ (x.T @ y) / (n * noise**2 * tau)
    mu, sigma = family.at(tau)
    assert torch.allclose(mu, mean, rtol=1e-6, atol=1e-9)
    assert torch.allclose(sigma, covariance.diagonal().sqrt(), rtol=1e-6)
    assert torch.allclose(covariance, torch.diag(covariance.diagonal()), atol=1e-9)  # mean-field is exact here


@pytest.mark.parametrize("bits, overhead", [(12, 4), (10, 2)])
def test_the_length_lies_between_the_kl_and_the_kl_plus_the_overhead_per_block(bits, overhead):
    x, y, w, h = orthogonal_regression(d=512)
    tau = 1e-3
    plan = rec.plan_matrix(rec.with_prior(w, h, tau, shrinks=True), tau, bits - overhead, seed=0, index=0)
    payload = bits * plan.blocks
    assert plan.blocks > 10
    assert plan.kl_bits <= payload <= plan.kl_bits + overhead * plan.blocks + 1e-6
    assert plan.kl_bits == pytest.approx((bits - overhead) * plan.blocks, rel=1e-6)  # every block at its budget
    data, _ = rec.encode([plan], bits, seed=0)
    header = len(rec.MAGIC) * 8 + 32 + 8 + 32 + 64  # magic, seed, bits, matrix count, s and blocks
    assert 8 * len(data) == header + payload + (-payload % 8)


def test_a_weight_holds_at_most_one_block():
    """Where KL(q‖p) exceeds the budget on every weight, each weight is a block of its own at the
    budget: no block is empty, and the length stops growing."""
    x, y, w, h = orthogonal_regression(d=64)
    fine = rec.with_prior(w, h, 1e-9, shrinks=True)
    assert float(fine.kl(1e-9).sum()) / math.log(2) > 64 * 8
    plan = rec.plan_matrix(fine, 1e-9, 8, seed=0, index=0)
    assert plan.blocks == 64 and plan.width == 1 and bool((plan.order >= 0).all())
    assert plan.kl_bits == pytest.approx(64 * 8)


def test_the_decoder_rebuilds_the_encoded_weights_bit_for_bit_from_the_bytes_alone():
    g = torch.Generator().manual_seed(3)
    sizes = [300, 1, 77]
    plans = []
    for j, size in enumerate(sizes):
        w = torch.randn(size, generator=g, dtype=torch.float64)
        h = torch.rand(size, generator=g, dtype=torch.float64) * 50
        plans.append(rec.plan_matrix(rec.with_prior(w, h, 1e-2, shrinks=j != 1), 1e-2, 6, seed=11, index=j))
    data, chosen = rec.encode(plans, 9, seed=11)
    decoded = rec.decode(data, sizes)
    for mine, theirs, size in zip(chosen, decoded, sizes):
        assert theirs.dtype == torch.float32 and theirs.shape == (size,)
        assert torch.equal(mine, theirs)
    with pytest.raises(UserError, match="holds 3 matrices but the model has 2"):
        rec.decode(data, sizes[:2])
    with pytest.raises(UserError, match="not a relative-entropy code"):
        rec.decode(b"garbage" + data, sizes)


def standardized_draws(overhead, seeds=100, d=400, budget=4):
    """(x − μ)/σ of the decoded weights over `seeds` codes of one posterior: N(0, 1) when the
    sampler's law is q."""
    g = torch.Generator().manual_seed(0)
    w = 0.1 * torch.randn(d, generator=g, dtype=torch.float64)
    h = 10 * torch.rand(d, generator=g, dtype=torch.float64)
    family = rec.with_prior(w, h, 1e-3, shrinks=True)
    found = []
    for seed in range(seeds):
        plan = rec.plan_matrix(family, 1e-3, budget, seed=seed, index=0)
        x = rec.decode(rec.encode([plan], budget + overhead, seed)[0], [d])[0].double()
        found.append((x - flat(plan, plan.mean)) / flat(plan, plan.sigma))
    return torch.stack(found)


def test_decoded_samples_have_the_posteriors_mean_and_variance():
    """At six bits of overhead a block the decoded weights' mean and spread about q's are within
    their errors; at one bit the sampler's excess spread shows (it is what `overhead_bits` buys)."""
    z = standardized_draws(overhead=6)
    se_mean, se_var = 1 / math.sqrt(z.numel()), math.sqrt(2 / z.numel())
    assert abs(float(z.mean())) < 3 * se_mean
    assert abs(float(z.var()) - 1) < 3 * se_var
    assert float(standardized_draws(overhead=1, seeds=30).var()) > 1.1


def test_a_weight_the_loss_ignores_costs_under_a_tenth_of_a_bit():
    """Weights with zero curvature (multiplied by zero downstream) get q = p under the fitted mean:
    adding 2,000 of them to a matrix adds under 200 bits to its code."""
    g = torch.Generator().manual_seed(5)
    w = 0.1 * torch.randn(500, generator=g, dtype=torch.float64)
    h = 10 * torch.rand(500, generator=g, dtype=torch.float64)
    ignored = 0.1 * torch.randn(2000, generator=g, dtype=torch.float64)
    tau, bits = 1e-3, 12
    alone = rec.plan_matrix(rec.with_prior(w, h, tau, shrinks=True), tau, bits - 4, 0, 0)
    both = rec.with_prior(torch.cat([w, ignored]), torch.cat([h, torch.zeros(2000, dtype=torch.float64)]), tau,
                          shrinks=True)
    mu, sigma = both.at(tau)
    assert float(rec.kl_nats(mu, sigma, both.scale)[500:].max()) == 0.0
    together = rec.plan_matrix(both, tau, bits - 4, 0, 0)
    assert (together.blocks - alone.blocks) * bits / 2000 < 0.1


@pytest.mark.parametrize("mean", ["laplace", "learned"])
def test_an_lm_weight_multiplied_by_zero_downstream_costs_nothing(mean, tiny_checkpoint, tiny_tokens):
    """Zeroing MLP output columns makes the input-projection rows feeding them irrelevant: their
    Fisher is exactly zero, and a mean free to move (shrunk by the curvature, or learned) puts their
    posterior on the prior. (At the checkpoint's mean each still pays w*²/(2s²).)"""
    import copy

    model = copy.deepcopy(tiny_checkpoint.model)
    mlp = model.gpt_neox.layers[0].mlp
    with torch.no_grad():
        mlp.dense_4h_to_h.weight[:, :8] = 0
    method = compressors.get("variational", mean=mean, groups=("block0.mlp.in",), fisher_sequences=16,
                             fisher_labels=1, fit_steps=100)  # the zeroed columns stay exact
    prepared = method.prepare(model, tiny_tokens.train)
    [index] = [i for i, t in enumerate(prepared.targets) if t.param is mlp.dense_h_to_4h.weight]
    fisher = prepared.cache["fisher"][index].view(mlp.dense_h_to_4h.weight.shape)
    assert float(fisher[:8].abs().max()) == 0.0 and float(fisher[8:].min()) > 0
    plan = method.plans(prepared, -6.0)[index]
    kl = flat(plan, rec.kl_nats(plan.mean, plan.sigma, plan.scale)).view(fisher.shape) / math.log(2)
    assert float(kl[:8].max()) < 0.1 < float(kl[8:].mean())  # bits a weight, ignored and not


def test_the_model_evaluated_is_the_one_its_bytes_decode_to(tiny_checkpoint, tiny_tokens):
    model = tiny_checkpoint.model
    method = compressors.get("variational", block_bits=8, overhead_bits=2, fisher_sequences=16, fit_steps=20)
    prepared = method.prepare(model, tiny_tokens.train)
    data = method.code(prepared, -5.0)
    sizes = [t.original.numel() for t in prepared.targets]
    with method.applied(model, prepared, -5.0):
        applied = [t.param.detach().reshape(-1).clone() for t in prepared.targets]
    assert all(torch.equal(a, b) for a, b in zip(applied, rec.decode(data, sizes)))
    length = method.description_length(prepared, -5.0)
    padding = 8 * len(data) - 8 * (len(rec.MAGIC) + 4) - (length.payload_bits + length.side_bits)
    assert 0 <= padding < 8  # the bytes are the counted bits (less the magic and matrix count) and padding


def test_bad_settings_are_one_line():
    with pytest.raises(UserError, match="overhead_bits \\(8\\) must be below block_bits \\(8\\)"):
        compressors.get("variational", block_bits=8, overhead_bits=8)
    with pytest.raises(UserError, match="calibration tokens"):
        compressors.get("variational").prepare(torch.nn.Linear(2, 2))


def test_critical_save_writes_the_code_and_the_model_it_decodes_to(tiny_suite, tmp_path):
    import json

    from transformers import AutoModelForCausalLM

    from compressors.targets import DEFAULT_TARGETS, select_targets
    from tests.conftest import run_cli

    home, _ = tiny_suite
    done = run_cli("critical", "mdl-slt/tiny-a@step24", "--compressor", "variational", "--option", "block_bits=8",
                   "--option", "overhead_bits=2", "--option", "fit_steps=20", "--epsilon", "0.2", "--json",
                   "--save", tmp_path / "saved", home=home)
    assert done.returncode == 0, done.stderr
    point = json.loads(done.stdout)["critical"][0]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    chosen = select_targets(model, DEFAULT_TARGETS)
    data = (tmp_path / "saved" / "mdl_slt-code.bin").read_bytes()
    for (name, param), flat in zip(chosen, rec.decode(data, [p.numel() for _, p in chosen])):
        assert torch.equal(param.detach().reshape(-1), flat), name
    untouched = 32 * (sum(p.numel() for p in model.parameters()) - sum(p.numel() for _, p in chosen))
    assert 8 * len(data) - 8 * (len(rec.MAGIC) + 4) - (point["dl_bits"] - untouched) in range(8)  # padding
