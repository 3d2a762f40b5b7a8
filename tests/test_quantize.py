import math

import pytest
import torch

import compressors
from compressors.grid import as_groups, fit_grid
from compressors.quantize import levels_for
from compressors.targets import parameter_roles
from mdl_slt.compute.loss import evaluate_loss
from mdl_slt.errors import UserError


def quantize(w, levels, candidates, symmetric=True):
    """w on the grid whose clip ratio, from {1/c, …, 1}, errs least."""
    groups = w.reshape(1, -1)
    grid = fit_grid(groups, levels, symmetric, candidates)
    codes = grid.encode(groups)
    return grid.decode(codes).reshape(w.shape), codes, grid


def test_symmetric_grid_is_symmetric_with_at_most_n_levels():
    w = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    for levels in (2, 3, 5, 16):
        deq, codes, grid = quantize(w, levels, 4)
        assert len(torch.unique(deq)) <= levels
        points = grid.decode(torch.arange(levels, dtype=torch.float32)[None, :])[0]
        assert torch.allclose(points, -points.flip(0), atol=1e-6)  # symmetric about zero


def test_asymmetric_grid_represents_zero_and_spans_the_range():
    w = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 3 - 0.5  # in [-0.5, 2.5]
    deq, codes, grid = quantize(w, 8, 1, symmetric=False)
    assert float(grid.decode(grid.zero)) == 0.0  # zero is exactly a level
    half_step = float(grid.scale) / 2  # rounding the zero point shifts the range by at most this
    assert deq.min() >= -0.5 - half_step and deq.max() <= 2.5 + half_step and len(torch.unique(codes)) == 8


def test_error_falls_with_levels_and_clip_search_helps():
    w = torch.randn(5000, generator=torch.Generator().manual_seed(1))
    errors = [torch.sum((quantize(w, n, 50)[0] - w) ** 2) for n in (2, 4, 8, 16, 64)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    no_clip = torch.sum((quantize(w, 4, 1)[0] - w) ** 2)
    assert errors[1] < no_clip


def test_the_fast_range_fit_reaches_the_last_weight_of_a_long_tensor():
    """Past 2²⁴ weights float32 positions round beyond the end (Pythia-70m's embedding is 25.8M)."""
    from compressors.grid import _samples

    groups = torch.zeros(1, 2**24 + 7)
    groups[0, -1] = 1.0  # the evenly spaced sample ends at the last weight
    tail, spaced = _samples(groups)
    assert spaced[0][0, -1] == 1.0 and spaced[0].shape[1] < groups.shape[1]
    grid = fit_grid(groups, 16, True)
    assert torch.isfinite(grid.decode(grid.encode(groups))).all()


def test_finer_scales_fit_better():
    torch.manual_seed(0)
    w = torch.randn(16, 64) * torch.logspace(-2, 0, 16)[:, None]  # rows of very different scale
    error = {}
    for granularity in ("tensor", "channel", "group"):
        (groups,) = as_groups(w, granularity, 16)
        grid = fit_grid(groups, 8, True, 50)
        error[granularity] = float(((grid.decode(grid.encode(groups)) - groups) ** 2).sum())
    assert error["tensor"] > error["channel"] > error["group"]


def test_fractional_bits_go_through_the_level_count():
    assert levels_for(1.0) == 2 and levels_for(0.3) == 2 and levels_for(2.0) == 4
    assert levels_for(math.log2(6)) == 6 and levels_for(3.3) == 10
    assert levels_for(math.log2(13)) == 14  # symmetric grids use even counts
    assert levels_for(math.log2(13), symmetric=False) == 13
    rtn = compressors.get("rtn")
    assert rtn.snap(3.3) == pytest.approx(math.log2(10))
    assert compressors.get("rtn", symmetric=False).snap(math.log2(13)) == pytest.approx(math.log2(13))


def test_loss_range_is_no_worse_than_weight_error_range(tiny_checkpoint, tiny_tokens):
    """The paper-faithful range choice minimises calibration loss, so it cannot do worse there."""
    model = tiny_checkpoint.model
    calibration = tiny_tokens.train[:16]
    losses = {}
    for range_by in ("mse", "loss"):
        rtn = compressors.get("rtn", range_by=range_by, clip_candidates=1)  # mse with one candidate: α = 1
        prepared = rtn.prepare(model, tiny_tokens.train)
        with rtn.applied(model, prepared, 3.0):
            losses[range_by] = evaluate_loss(model, calibration)
    assert losses["loss"] <= losses["mse"]


def test_description_length_by_hand():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0, 1.0, -1.0]] * 3))
        model[1].weight.copy_(torch.tensor([[0.5, 0.5, -0.5], [-0.5, 0.5, 0.5]]))
    rtn = compressors.get("rtn", targets=["mlp"])
    prepared = rtn.prepare(model)
    length = rtn.description_length(prepared, 2.0)  # 4 levels
    # 12 + 6 quantized weights at 2 bits; one fp32 scale per tensor; the 3 biases stay fp32
    assert length.payload_bits == 18 * 2
    assert length.side_bits == 2 * 32
    assert length.untouched_bits == 3 * 32
    assert length.total_bits == 36 + 64 + 96
    # each tensor takes two of its four codes: ±1 in halves (6/6), ±0.5 split 2/4; coded with its histogram,
    # C(12 + 3, 3) = 455 histograms × 12!/(6!6!) = 924 orders, and C(6 + 3, 3) = 84 × 6!/(2!4!) = 15,
    # each shorter than fixed rate (24 and 12 bits), plus a bit per tensor saying so
    assert length.entropy_payload_bits == pytest.approx(math.log2(455 * 924) + math.log2(84 * 15) + 2)
    assert rtn.description_length(prepared, 32.0).total_bits == (18 + 3) * 32


def test_conformance_on_a_checkpoint(tiny_checkpoint, tiny_tokens):
    """No compression changes nothing; restore is exact; bits fall; deterministic; finite."""
    model, tokens = tiny_checkpoint.model, tiny_tokens.eval
    rtn = compressors.get("rtn")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    base = evaluate_loss(model, tokens)
    prepared = rtn.prepare(model)
    with rtn.applied(model, prepared, rtn.knob.identity):
        assert evaluate_loss(model, tokens) == base
    losses = {}
    for bits in (8.0, 4.0, 2.0, 1.0):
        with rtn.applied(model, prepared, bits):
            losses[bits] = evaluate_loss(model, tokens)
            assert math.isfinite(losses[bits])
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with rtn.applied(model, prepared, 2.0):
        assert evaluate_loss(model, tokens) == losses[2.0]
    lengths = [rtn.description_length(prepared, b).total_bits for b in (32.0, 8.0, 4.0, 2.0, 1.0)]
    assert all(a > b for a, b in zip(lengths, lengths[1:]))
    assert losses[1.0] > losses[8.0]


def test_registry_errors_are_clear(tiny_checkpoint):
    with pytest.raises(UserError, match="did you mean rtn"):
        compressors.get("rnt")
    with pytest.raises(UserError, match="no option 'bitz'"):
        compressors.get("rtn", bitz=3)
    rtn = compressors.get("rtn")
    prepared = rtn.prepare(tiny_checkpoint.model)
    with pytest.raises(UserError, match="outside its range"):
        with rtn.applied(tiny_checkpoint.model, prepared, 40.0):
            pass
    with pytest.raises(UserError, match="no parameters in targets"):
        compressors.get("rtn", targets=["attention"]).prepare(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_default_targets_are_the_weight_matrices(tiny_checkpoint):
    roles = {role for _, p, role in parameter_roles(tiny_checkpoint.model) if p.ndim == 2}
    assert roles == {"attention", "mlp", "embedding", "unembedding"}
    rtn = compressors.get("rtn")
    prepared = rtn.prepare(tiny_checkpoint.model)
    assert all(t.param.ndim == 2 for t in prepared.targets)
    assert prepared.untouched_params == sum(p.numel() for p in tiny_checkpoint.model.parameters() if p.ndim == 1)
