"""The sensitivity measures against known answers, the Pareto choice against brute force, allocations
judged on the measured loss, and the tournament with a known winner."""

import itertools
import math

import numpy as np
import pytest
import torch

from compressors.groups import WeightGroup
from mdl_slt.measures.sensitivity import SensitivityConfig, measure


def mlp(seed=0, n=64):
    """A small tanh network away from any minimum, with (x, y) data: two weight groups."""
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(n, 4, generator=g)
    y = torch.randn(n, 2, generator=g)
    groups = [WeightGroup("first", [("0.weight", model[0].weight)]), WeightGroup("second", [("2.weight", model[2].weight)])]
    return model, (x, y), groups


def exact_traces(model, data, groups) -> dict:
    """The Hessian's block traces of ½·mean‖f(x) − y‖², by autograd on the flattened weights."""
    from torch.func import functional_call

    from mdl_slt.llc.batches import mse_loss

    names = [n for g in groups for n, _ in g.params]
    shapes = [p.shape for g in groups for _, p in g.params]
    flat = torch.cat([p.detach().reshape(-1) for g in groups for _, p in g.params])

    def loss(vector):
        parts, start = {}, 0
        for name, shape in zip(names, shapes):
            parts[name] = vector[start:start + shape.numel()].reshape(shape)
            start += shape.numel()
        return mse_loss(lambda x: functional_call(model, parts, (x,)), data)

    diagonal = torch.autograd.functional.hessian(loss, flat).diagonal()
    found, start = {}, 0
    for g in groups:
        found[g.name] = float(diagonal[start:start + g.size].sum())
        start += g.size
    return {**found, None: float(diagonal.sum())}


def test_hutchinson_meets_the_exact_trace_within_three_standard_errors():
    model, data, groups = mlp()
    exact = exact_traces(model, data, groups)
    settings = SensitivityConfig(min_probes=200, max_probes=200, batch_sequences=64, target=1e-9)
    rows, _ = measure("hessian_trace", model, data, groups, settings)
    assert {r.group for r in rows} == {"first", "second", None} and all(r.detail["probes"] == 200 for r in rows)
    for r in rows:
        assert abs(r.value - exact[r.group]) <= 3 * r.se, (r.group, r.value, exact[r.group], r.se)
        assert r.se < 0.2 * abs(exact[r.group])  # an informative estimate, not a wide one that cannot miss


def test_hutchinson_error_falls_as_one_over_root_probes():
    """Over 60 seeds, the RMS error with 16 probes is half that with 4 (1/√probes): the RMS of 60
    errors is known to about ±1/√120 ≈ 9%, so the ratio lies within 2 ± 0.5 with room to spare."""
    model, data, groups = mlp()
    exact = exact_traces(model, data, groups)[None]
    errors = {}
    for probes in (4, 16):
        found = []
        for seed in range(60):
            settings = SensitivityConfig(min_probes=probes, max_probes=probes, batch_sequences=64, seed=seed)
            rows, _ = measure("hessian_trace", model, data, groups, settings)
            found.append(next(r.value for r in rows if r.group is None) - exact)
        errors[probes] = math.sqrt(np.mean(np.square(found)))
    assert 1.5 < errors[4] / errors[16] < 2.5


def test_the_fisher_trace_of_a_logistic_regression_is_its_closed_form():
    """Per example ∇ℓ_i = (σ(wᵀx_i) − y_i)·x_i, so the empirical Fisher trace is the mean of
    (σ(wᵀx_i) − y_i)²·‖x_i‖²."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 3, generator=g)
    y = (torch.rand(50, generator=g) < 0.5).float()
    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, 3, generator=g))

    def loss(m, batch):
        return torch.nn.functional.binary_cross_entropy_with_logits(m(batch[0]).squeeze(-1), batch[1])

    groups = [WeightGroup("w", [("weight", model.weight)])]
    rows, _ = measure("fisher", model, (x, y), groups, SensitivityConfig(), loss_fn=loss)
    sigma = torch.sigmoid(x @ model.weight.detach().T).squeeze(-1)
    truth = float(((sigma - y) ** 2 * (x ** 2).sum(-1)).mean())
    for r in rows:
        assert r.value == pytest.approx(truth, rel=1e-5)
    assert rows[0].se == pytest.approx(float(((sigma - y) ** 2 * (x ** 2).sum(-1)).std() / math.sqrt(50)), rel=1e-4)


def test_omega_is_the_loss_increase_of_quantizing_a_layer_of_a_quadratic_model():
    """L(W) = ½·mean‖(W − W*)x‖² with inputs whose second moment is σ²·I: the layer's Hessian is σ²·I,
    Hutchinson reads its trace exactly (vᵀHv = σ²·d for every Rademacher v), and HAWQ's
    Ω(b) = ½·(tr(H)/d)·‖Q_b(W) − W‖² is the measured loss increase at every width b."""
    from mdl_slt.llc.batches import mse_loss
    from mdl_slt.measures.critical import CompressorEntry

    g = torch.Generator().manual_seed(2)
    sigma2, n = 2.0, 64
    x = torch.linalg.qr(torch.randn(n, 8, generator=g, dtype=torch.float64))[0] * math.sqrt(sigma2 * n)  # XᵀX/n = σ²·I
    model = torch.nn.Sequential(torch.nn.Linear(8, 5, bias=False)).double()  # float64: the loss of 16 bits is ~1e-8
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(5, 8, generator=g, dtype=torch.float64))
        y = model(x)
    groups = [WeightGroup("layer", [("0.weight", model[0].weight)])]
    settings = SensitivityConfig(min_probes=3, max_probes=3, batch_sequences=n, grid=6)
    (trace, _), _ = measure("hessian_trace", model, (x, y), groups, settings)
    assert trace.value == pytest.approx(sigma2 * 40, rel=1e-4) and trace.se == pytest.approx(0, abs=1e-3)
    entry = CompressorEntry(name="rtn", options={"targets": ["mlp"]})
    curve, _ = measure("hawq", model, (x, y), groups, settings, entry)
    method = entry.build()
    prepared = method.prepare(model)
    for row in curve:
        with torch.no_grad(), method.applied(model, prepared, row.knob):
            measured = float(mse_loss(model, (x, y)))
        omega = 0.5 * trace.value / 40 * row.value
        assert omega == pytest.approx(measured, rel=1e-4), row.knob
    assert len(curve) >= 4


def test_outliers_of_a_known_weight():
    w = torch.tensor([[1.0, -1.0, 1.0, -1.0], [1.0, -1.0, 1.0, 3.0]])
    model = torch.nn.Sequential(torch.nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(w)
    rows, _ = measure("outliers", model, None, [WeightGroup("w", [("0.weight", model[0].weight)])], SensitivityConfig())
    values = {(r.quantity, r.group): r.value for r in rows}
    flat = w.reshape(-1)
    centred = flat - flat.mean()
    assert values[("max_over_rms", "w")] == pytest.approx(3 / math.sqrt(float((flat ** 2).mean())))
    assert values[("kurtosis", "w")] == pytest.approx(float((centred ** 4).mean() / (centred ** 2).mean() ** 2 - 3))
    assert values[("kurtosis", None)] == values[("kurtosis", "w")]  # one group: the weighted mean is itself


def test_the_pareto_frontier_is_the_fewest_bits_for_its_cost_by_brute_force():
    from mdl_slt.measures.allocation import frontier

    rng = np.random.default_rng(3)
    for _ in range(20):
        bits = [np.sort(rng.uniform(10, 100, 4))[::-1] for _ in range(3)]  # fewer bits as the knob compresses
        costs = [np.sort(rng.uniform(0, 1, 4)) * rng.uniform(0.1, 10) for _ in range(3)]
        for b, c in zip(bits, costs):
            c[0] = 0.0  # no compression, no cost
        found = frontier(bits, costs)
        totals = [(sum(c[k] for c, k in zip(costs, a)), sum(b[k] for b, k in zip(bits, a))) for a in found]
        assert all(t2[1] < t1[1] and t2[0] > t1[0] for t1, t2 in zip(totals, totals[1:]))  # a path, each step a trade
        every = [(sum(c[k] for c, k in zip(costs, a)), sum(b[k] for b, k in zip(bits, a)))
                 for a in itertools.product(range(4), repeat=3)]
        for cost, total in totals:
            assert total == pytest.approx(min(b for c, b in every if c <= cost + 1e-12))


def test_allocations_stay_within_epsilon_on_the_measured_loss(tiny_checkpoint, tiny_tokens):
    """Uniform and the oracle on the tiny checkpoint: every passing allocation's measured loss
    increase is within ε, and its bits are what its groups' lengths add up to."""
    from mdl_slt.compute.loss import sequence_losses
    from mdl_slt.measures import allocation
    from mdl_slt.measures.critical import CompressorEntry

    model = tiny_checkpoint.model
    entry = CompressorEntry(name="rtn")
    grid = [8.0, 6.0, 4.0, 3.0, 2.0, 1.0]
    groups = allocation.groups_for(model, entry, tiny_tokens.train, grid)
    base = sequence_losses(model, tiny_tokens.eval)
    other = sum(p.numel() for p in model.parameters()) - sum(g.prepared.targets[0].original.numel() for g in groups)
    costs = []
    for g in groups:
        curve = []
        for value in g.values:
            with g.method.applied(model, g.prepared, value):
                curve.append(float((sequence_losses(model, tiny_tokens.eval) - base).mean()))
        costs.append(curve)
    for name, options in (("uniform", allocation.uniform(groups, grid)),
                          ("oracle", allocation.frontier([g.bits for g in groups], costs))):
        for result in allocation.judge(model, tiny_tokens.eval, base, groups, options, [0.05, 0.2], other, name):
            assert result.bits is not None and result.delta_loss <= result.epsilon
            chosen = tuple(g.values.index(result.allocation[g.name]) for g in groups)
            assert result.bits == pytest.approx(allocation.total_bits(groups, chosen, other))
            with allocation.applied(model, groups, chosen):
                assert float((sequence_losses(model, tiny_tokens.eval) - base).mean()) == pytest.approx(result.delta_loss)


def test_adding_a_measure_measures_only_it(tiny_suite):
    """Each measure is a task keyed by its own settings: adding one, or changing another's settings,
    leaves every other task's key as it was."""
    from mdl_slt.plan.experiment import validated
    from mdl_slt.plan.tasks import Tasks
    from mdl_slt.plan.units import plan

    home, _ = tiny_suite
    base = {"name": "x", "store": "x.sqlite", "device": "cpu", "models": [{"id": "mdl-slt/tiny-a", "revisions": ["step24"]}],
            "critical": {"compressors": [{"name": "rtn"}, {"name": "svd"}]}}

    def keys(**sensitivity):
        experiment = validated({**base, "sensitivity": sensitivity}, "x")
        (unit,) = plan(experiment, home)
        return {t.name: t.key for t in Tasks(experiment).for_unit(unit)}

    plain = keys()
    one = keys(measures=["fisher"])
    two = keys(measures=["fisher", "outliers"])
    probes = keys(measures=["fisher", "outliers"], max_probes=50)
    hawq = keys(measures=["fisher", "outliers", "hessian_trace", "hawq"], compressors=["rtn"])
    assert set(one) - set(plain) == {"measure:fisher"} and {k: one[k] for k in plain} == plain
    assert set(two) - set(one) == {"measure:outliers"} and {k: two[k] for k in one} == one
    assert probes == two  # the Hessian's probe settings key only the Hessian trace
    assert set(hawq) - set(two) == {"measure:hessian_trace", "measure:hawq:rtn"} and {k: hawq[k] for k in two} == two
    alone = keys(measures=["hessian_trace", "fisher"])  # no layer study, allocation or HAWQ: the whole model only
    assert alone["measure:fisher"] == one["measure:fisher"] and alone["measure:hessian_trace"] != hawq["measure:hessian_trace"]
    layered = validated({**base, "sensitivity": {"measures": ["fisher"]}, "layers": {"groups": "all"}}, "x")
    assert layered.measured_per_group("fisher") and not validated({**base, "sensitivity": {"measures": ["fisher"]}},
                                                                  "x").measured_per_group("fisher")


def test_without_groups_the_hessian_trace_is_the_whole_models_and_stops_at_its_own_error():
    model, data, groups = mlp()
    groups = [*groups, WeightGroup("bias", [("0.bias", model[0].bias)])]  # a small block trace, hard to pin
    settings = SensitivityConfig(min_probes=4, max_probes=1000, batch_sequences=64, target=0.1)
    every, _ = measure("hessian_trace", model, data, groups, settings)
    whole, _ = measure("hessian_trace", model, data, groups, settings, per_group=False)
    (row,) = whole
    assert row.group is None and row.se <= 0.1 * abs(row.value) and row.detail["probes"] < settings.max_probes
    assert row.detail["probes"] < every[0].detail["probes"]  # the groups' errors asked for more probes
    assert [r.group for r in measure("fisher", model, data, groups, settings, per_group=False)[0]] == [None]
