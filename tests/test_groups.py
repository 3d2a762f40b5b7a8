"""Weight groups: the reader, the refined LLC of one group against known answers, every compressor
restricted to one group, and the keys of the layer study's tasks."""


import pytest
import torch

import compressors
from compressors.groups import select_groups, weight_groups
from mdl_slt.errors import UserError
from mdl_slt.llc.batches import mse_loss
from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.ground_truth import refined_deep_linear
from mdl_slt.llc.sampling import estimate_llc
from tests.test_compressors import CASES, check_conformance, knob_values


def test_groups_of_a_checkpoint_are_named_sized_and_disjoint(tiny_checkpoint):
    model = tiny_checkpoint.model
    found = weight_groups(model)
    assert [g.name for g in found] == ["embed", "block0.attn.in", "block0.attn.out", "block0.mlp.in", "block0.mlp.out",
                                       "unembed"]
    named = dict(model.named_parameters())
    assert all(named[n] is p and p.ndim == 2 for g in found for n, p in g.params)
    ids = [id(p) for g in found for _, p in g.params]
    assert len(ids) == len(set(ids))  # no parameter in two groups
    assert sum(g.size for g in found) == sum(p.numel() for p in model.parameters() if p.ndim == 2)
    hidden = model.config.hidden_size
    sizes = {g.name: g.size for g in found}
    assert sizes["block0.attn.in"] == 3 * hidden * hidden and sizes["block0.mlp.in"] == 4 * hidden * hidden
    with pytest.raises(UserError, match="no weight group 'block9.mlp.in'.*its groups are embed, block0.attn.in"):
        select_groups(model, ["block9.mlp.in"])


def test_the_command_lists_the_groups_without_loading_weights(tiny_suite):
    from tests.conftest import run_cli

    home, _ = tiny_suite
    done = run_cli("layers", "mdl-slt/tiny-b@step24", "--list", home=home)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "mdl-slt/tiny-b@step24: 6 weight groups"
    assert "block0.mlp.in" in done.stdout and "gpt_neox.layers.0.mlp.dense_h_to_4h.weight" in done.stdout


def deep_linear(shapes, ranks, n=10_000, seed=0):
    """A deep linear network whose layer k is (out × in) = shapes[k] of rank ranks[k] (singular
    values 1–1.5), with Gaussian inputs and its own noiseless outputs."""
    g = torch.Generator().manual_seed(seed)
    layers = [torch.nn.Linear(i, o, bias=False) for o, i in shapes]
    with torch.no_grad():
        for layer, r in zip(layers, ranks):
            o, i = layer.weight.shape
            u = torch.linalg.qr(torch.randn(o, o, generator=g))[0][:, :r]
            v = torch.linalg.qr(torch.randn(i, i, generator=g))[0][:, :r]
            layer.weight.copy_(u @ torch.diag(torch.linspace(1.0, 1.5, r)) @ v.T if r else torch.zeros(o, i))
    model = torch.nn.Sequential(*layers)
    x = torch.randn(n, shapes[0][1], generator=g)
    with torch.no_grad():
        return model, (x, model(x))


SAMPLER = LLCConfig(step_size="auto", n_beta=10_000.0, localization=1.0, num_chains=4, num_draws=1000,
                    num_burnin=300, batch_size=500, seed=0)
TOLERANCE = 0.10  # the deep-linear-network tolerance of the whole-model checks (tests/test_sgld.py)


def test_the_refined_llc_of_each_layer_of_a_deep_linear_network_is_its_rank_product():
    """Layers of ranks 4, 4, 2: with the others held, layer g enters as A·W_g·B, so λ_g =
    rank(A)·rank(B·Σ^½)/2 = 6, 4 and 6 (of d_g = 24, 20 and 15), each within the tolerance."""
    model, data = deep_linear([(4, 6), (5, 4), (3, 5)], [4, 4, 2])
    weights = [layer.weight for layer in model]
    truths = [refined_deep_linear(weights, g) for g in range(3)]
    assert truths == [6.0, 4.0, 6.0]
    for g, truth in enumerate(truths):
        found = estimate_llc(model, data, SAMPLER.model_copy(update={"parameters": [f"{g}.weight"]}), mse_loss)
        assert found.num_params == weights[g].numel()
        assert abs(found.llc_mean / truth - 1) < TOLERANCE, (g, found.llc_mean, truth)


def test_a_full_rank_layer_is_regular_and_a_layer_whose_output_is_zeroed_has_none():
    """[3 → 4 → 5]: the first layer is full rank and its image is kept, so λ = d_g/2 = 6; with the
    last layer zero, the first one's output never reaches the loss, so λ = 0."""
    model, data = deep_linear([(4, 3), (5, 4)], [3, 4])
    assert refined_deep_linear([layer.weight for layer in model], 0) == model[0].weight.numel() / 2 == 6.0
    regular = estimate_llc(model, data, SAMPLER.model_copy(update={"parameters": ["0.weight"]}), mse_loss)
    assert abs(regular.llc_mean / 6.0 - 1) < TOLERANCE
    silenced, data = deep_linear([(4, 3), (5, 4)], [3, 0])
    assert refined_deep_linear([layer.weight for layer in silenced], 0) == 0.0
    config = SAMPLER.model_copy(update={"parameters": ["0.weight"], "step_size": 1e-4})
    zero = estimate_llc(silenced, data, config, mse_loss)
    assert abs(zero.llc_mean) < max(3 * zero.llc_std_error, 0.05)


def acting_group(method, model) -> str:
    """The first group, MLP first, a compressor acts on."""
    names = [g.name for g in weight_groups(model)]
    order = ["block0.mlp.in", "block0.attn.in", "block0.attn.out", "unembed", "embed"]
    return next(g for g in order if g in names and method.acts_on(g))


@pytest.mark.parametrize("case", CASES)
def test_every_compressor_restricted_to_a_group_leaves_the_others_exact_and_counts_only_what_changed(case, tiny_checkpoint,
                                                                                                    tiny_tokens):
    name, options = CASES[case]
    model = tiny_checkpoint.model
    group = acting_group(compressors.get(name, **options), model)
    options = {**options, "groups": [group]}
    check_conformance(name, model, tiny_tokens.eval, tiny_tokens.train, options)
    method = compressors.get(name, **options)
    prepared = method.prepare(model, tiny_tokens.train)
    block = group.split(".")[0]
    inside = {id(p) for _, p in select_groups(model, [group])[0].params}
    if name == "heads":  # a block's heads: its attention's rows and columns
        inside = {id(p) for n, p in model.named_parameters() if f"layers.{block[5:]}.attention." in n}
    assert prepared.targets and all(id(t.param) in inside for t in prepared.targets)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    most = knob_values(method, prepared)[-1]
    with method.applied(model, prepared, most):
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    targets = {t.name for t in prepared.targets}
    assert changed and changed <= targets  # nothing outside the group moved
    total = sum(p.numel() for p in model.parameters())
    length = method.description_length(prepared, most)
    assert length.untouched_bits == 32 * (total - sum(t.original.numel() for t in prepared.targets))


def test_a_compressor_restricted_to_groups_it_cannot_touch_says_so(tiny_checkpoint):
    model = tiny_checkpoint.model
    with pytest.raises(UserError, match="no parameters in targets .* and groups"):
        compressors.get("tucker", groups=["block0.mlp.in"]).prepare(model)
    with pytest.raises(UserError, match="heads prunes attention heads, but groups"):
        compressors.get("heads", groups=["block0.mlp.in"]).prepare(model)
    assert not compressors.get("heads").acts_on("block0.attn.in") and compressors.get("heads").acts_on("block0.attn.out")
    assert not compressors.get("gptq").acts_on("embed") and compressors.get("rtn").acts_on("embed")


def test_layer_tasks_have_keys_of_their_own(tiny_suite):
    """Adding a group, or restricting one more entry, adds only its own tasks; the whole-model tasks
    are those of the experiment without a layer study."""
    from mdl_slt.plan.experiment import validated
    from mdl_slt.plan.tasks import Tasks
    from mdl_slt.plan.units import plan

    home, _ = tiny_suite
    base = {"name": "x", "store": "x.sqlite", "device": "cpu", "models": [{"id": "mdl-slt/tiny-a", "revisions": ["step24"]}],
            "critical": {"compressors": [{"name": "rtn"}, {"name": "svd"}]}}

    def keys(**layers):
        experiment = validated({**base, **({"layers": layers} if layers else {})}, "x")
        (unit,) = plan(experiment, home)
        return {t.name: t.key for t in Tasks(experiment).for_unit(unit)}

    plain = keys()
    two = keys(groups=["block0.mlp.in", "block0.mlp.out"], compressors=["rtn"])
    three = keys(groups=["block0.mlp.in", "block0.mlp.out", "embed"], compressors=["rtn"])
    both = keys(groups=["block0.mlp.in", "block0.mlp.out"])
    assert {k: v for k, v in two.items() if k in plain} == plain and set(plain) < set(two)
    assert set(three) - set(two) == {"llc@embed", "critical:rtn@embed"}
    assert {k: three[k] for k in two} == two
    assert set(both) - set(two) == {"critical:svd@block0.mlp.in", "critical:svd@block0.mlp.out"}
    assert {k: both[k] for k in two} == two
    every = keys(groups="all", compressors=["rtn"])
    assert {t.split("@")[1] for t in every if "@" in t} == {"embed", "block0.attn.in", "block0.attn.out",
                                                            "block0.mlp.in", "block0.mlp.out", "unembed"}
    with pytest.raises(UserError, match="layers.groups names 'block3.mlp.in', which mdl-slt/tiny-a does not have"):
        keys(groups=["block3.mlp.in"])
