"""GPTQ's tensor math alone, and its block-by-block Hessians against a plain forward pass."""

import pytest
import torch

from compressors.calibration import collect_statistics, inverse_hessian_factor
from compressors.gptq import gptq_quantize
from compressors.grid import fit_grid
from mdl_slt.errors import UserError


def per_channel(weight, levels=8):
    return [fit_grid(weight, levels, True, 50)], [0] * weight.shape[1]


def test_with_an_isotropic_hessian_it_is_round_to_nearest():
    """H ∝ I makes U diagonal: no error feedback, so GPTQ is round-to-nearest on the same grid."""
    weight = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    factor, dead = inverse_hessian_factor(2.0 * torch.eye(16), damp=0.01)
    grids, columns = per_channel(weight)
    q, codes = gptq_quantize(weight, factor, dead, grids, columns)
    assert torch.equal(q, grids[0].decode(grids[0].encode(weight)))
    assert torch.equal(codes, grids[0].encode(weight))


def test_on_correlated_inputs_it_lowers_the_output_error_of_round_to_nearest():
    gen = torch.Generator().manual_seed(1)
    mixing = torch.randn(16, 16, generator=gen)
    x = torch.randn(512, 16, generator=gen) @ mixing  # correlated input columns
    weight = torch.randn(8, 16, generator=gen)
    factor, dead = inverse_hessian_factor(2 * x.T @ x / len(x), damp=0.01)
    for levels in (4, 8):
        grids, columns = per_channel(weight, levels)
        q, _ = gptq_quantize(weight, factor, dead, grids, columns)
        rtn = grids[0].decode(grids[0].encode(weight))
        assert torch.linalg.norm((weight - q) @ x.T) < 0.9 * torch.linalg.norm((weight - rtn) @ x.T)


def test_dead_inputs_are_zeroed_and_the_rest_is_finite():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(256, 12, generator=gen)
    x[:, [3, 7]] = 0  # two inputs that never fire
    weight = torch.randn(6, 12, generator=gen)
    factor, dead = inverse_hessian_factor(2 * x.T @ x / len(x), damp=0.01)
    assert dead.tolist() == [i in (3, 7) for i in range(12)]
    grids, columns = per_channel(weight)
    q, codes = gptq_quantize(weight, factor, dead, grids, columns)
    assert torch.isfinite(q).all() and torch.all(q[:, [3, 7]] == grids[0].decode(grids[0].encode(torch.zeros(6, 1))))


def test_an_indefinite_hessian_is_one_clear_line():
    with pytest.raises(UserError, match="not positive definite with damp=0.01: raise `damp`"):
        inverse_hessian_factor(-torch.eye(4), damp=0.01)


def test_block_by_block_hessians_equal_those_of_full_forward_passes(tiny_checkpoint, tiny_tokens):
    """Running each decoder block once on its cached inputs gives every layer's 2XᵀX/N, as hooks on
    a whole-model forward pass do (the quadratic-in-depth way)."""
    import compressors

    model, calibration = tiny_checkpoint.model, tiny_tokens.train[:48]
    prepared = compressors.get("gptq").prepare(model, calibration)
    got = {}
    collect_statistics(model, prepared.targets, calibration, got.update)
    expected, hooks = {}, []
    for t in prepared.targets:
        def add(module, args, name=t.name):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            total, absolute, count = expected.get(name, (0, 0, 0))
            expected[name] = (total + x.T @ x, absolute + x.abs().sum(0), count + x.shape[0])
        hooks.append(t.module.register_forward_pre_hook(add))
    with torch.inference_mode():
        for batch in calibration.split(16):
            model(input_ids=batch)
    for hook in hooks:
        hook.remove()
    assert set(got) == set(expected) == {t.name for t in prepared.targets}
    for name, (total, absolute, count) in expected.items():
        assert torch.allclose(got[name].hessian, 2 * total / count, rtol=1e-6, atol=1e-9), name
        assert torch.allclose(got[name].abs_mean, absolute / count, rtol=1e-6, atol=1e-9), name
        assert torch.allclose(got[name].column_norms, total.diagonal().sqrt(), rtol=1e-6), name
