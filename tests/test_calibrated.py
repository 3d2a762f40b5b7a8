"""The data-aware compressors' tensor math, and the one collection of layer inputs they share."""

import weakref

import torch

import compressors
from compressors import calibration
from compressors.calibration import inverse_hessian_factor
from compressors.sparsegpt import sparsegpt_prune


def correlated(rows=8, columns=16, tokens=512, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, columns, generator=gen) @ torch.randn(columns, columns, generator=gen)
    return x, torch.randn(rows, columns, generator=gen)


def output_error(weight, pruned, x):
    return float(torch.linalg.norm((weight - pruned) @ x.T))


def test_sparsegpt_with_an_isotropic_hessian_prunes_by_magnitude_without_updates():
    """H ∝ I makes U diagonal and equal: the score is w², no error is spread, so each block loses
    its smallest weights and keeps the rest unchanged."""
    weight = torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
    factor, dead = inverse_hessian_factor(2.0 * torch.eye(16), damp=0.01)
    pruned, kept = sparsegpt_prune(weight, factor, dead, 0.5, None, block=8)
    for block in (slice(0, 8), slice(8, 16)):
        values = weight[:, block].abs().reshape(-1)
        expected = values >= values.sort().values[24]
        assert torch.equal(kept[:, block].reshape(-1), expected)
    assert torch.equal(pruned, weight * kept)
    two_four, kept = sparsegpt_prune(weight, factor, dead, 0.5, 4)
    assert torch.equal(kept.reshape(-1, 4).sum(1), torch.full((24,), 2))
    assert torch.equal(two_four, weight * kept)


def test_sparsegpt_updates_lower_the_output_error_of_its_own_mask_and_beat_magnitude_at_two_of_four():
    """On correlated inputs: the error feedback reconstructs what the mask removes (lower ‖ΔW X‖
    than the same mask without updates, every seed), and at 2:4 it beats magnitude pruning."""
    for seed in range(5):
        x, weight = correlated(seed=seed)
        factor, dead = inverse_hessian_factor(2 * x.T @ x / len(x), damp=0.01)
        for m in (None, 4):
            pruned, kept = sparsegpt_prune(weight, factor, dead, 0.5, m)
            assert int((pruned == 0).sum()) == weight.numel() // 2
            assert output_error(weight, pruned, x) < output_error(weight, weight * kept, x)
        groups = weight.abs().reshape(-1, 4)
        magnitude = (groups >= groups.sort(dim=1).values[:, 2:3]).reshape(weight.shape)
        assert output_error(weight, pruned, x) < 0.99 * output_error(weight, weight * magnitude, x)


def test_one_collection_of_layer_inputs_serves_every_data_aware_method(tiny_checkpoint, tiny_tokens, monkeypatch):
    calls = []
    monkeypatch.setattr(calibration, "_KEPT", weakref.WeakKeyDictionary())  # none kept by earlier tests
    collect = calibration.collect_statistics
    monkeypatch.setattr(calibration, "collect_statistics", lambda *args: calls.append(1) or collect(*args))
    model, tokens = tiny_checkpoint.model, tiny_tokens.train
    for name in ("gptq", "sparsegpt", "wanda", "awq"):
        compressors.get(name).prepare(model, tokens)
    assert len(calls) == 1
    compressors.get("gptq").prepare(model, tokens[:16])  # other calibration tokens: collected again
    assert len(calls) == 2
    method = compressors.get("wanda")
    prepared = method.prepare(model, tokens[:16])
    with method.applied(model, prepared, 0.5):  # other weights: never the statistics of the original ones
        compressors.get("wanda").prepare(model, tokens[:16])
    assert len(calls) == 3


def test_wanda_scores_weight_times_input_norm(tiny_checkpoint, tiny_tokens):
    model = tiny_checkpoint.model
    wanda = compressors.get("wanda")
    prepared = wanda.prepare(model, tiny_tokens.train)
    statistics = calibration.input_statistics(model, prepared.targets, tiny_tokens.train[:256])
    with wanda.applied(model, prepared, 0.25):
        for t in prepared.targets:
            score = t.original.abs() * statistics[t.name].column_norms.float()
            kept = t.param != 0
            # per output row, every kept weight scores at least as high as every removed one
            lowest_kept = torch.where(kept, score, torch.inf).amin(dim=1)
            highest_removed = torch.where(kept, -torch.inf, score).amax(dim=1)
            assert torch.all(lowest_kept >= highest_removed) and int((~kept).sum()) == t.param.shape[0] * (t.param.shape[1] // 4)


def test_awq_never_raises_the_calibration_output_error_of_round_to_nearest(tiny_checkpoint, tiny_tokens):
    """α = 0 in its search is round-to-nearest on the same grid, so per layer its output error on the
    calibration tokens, ½·tr(ΔW H ΔWᵀ), is at most rtn's."""
    model = tiny_checkpoint.model
    awq = compressors.get("awq", group_size=16)
    rtn = compressors.get("rtn", granularity="group", group_size=16, targets=["attention", "mlp", "unembedding"])
    prepared, plain = awq.prepare(model, tiny_tokens.train), rtn.prepare(model)
    for bits, levels in ((3.0, 8), (4.0, 16)):
        for t, u in zip(prepared.targets, plain.targets):
            hessian = prepared.cache[t.name].hessian.float()
            ours = awq._quantize(prepared, t, levels)[0] - t.original
            with rtn.applied(model, plain, bits):
                theirs = u.param.detach() - u.original
            error = lambda delta: float(((delta @ hessian) * delta).sum())  # noqa: E731
            assert error(ours) <= error(theirs) * (1 + 1e-5), t.name
