"""The conformance test every registered compressor passes, and the registry's behaviour."""

import math

import pytest
import torch

import compressors
from compressors.registry import Compressor, register
from mdl_slt.lm_loss import evaluate_loss


def knob_values(method, prepared, count=5):
    """Distinct realisable knob values from least to most compressing."""
    k = method.knob
    raw = [k.least + (k.most - k.least) * i / (count - 1) for i in range(count)]
    values = []
    for v in raw:
        v = method.snap(v, prepared)
        if v not in values:
            values.append(v)
    return values


@pytest.mark.parametrize("name", compressors.names())
def test_conformance(name, tiny_checkpoint, tiny_tokens):
    model, tokens = tiny_checkpoint.model, tiny_tokens.eval
    method = compressors.get(name)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    base = evaluate_loss(model, tokens)
    prepared = method.prepare(model, tiny_tokens.train)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())

    with method.applied(model, prepared, method.knob.identity):
        assert evaluate_loss(model, tokens) == base
    values = knob_values(method, prepared)
    assert len(values) >= 2
    losses, lengths = [], []
    for value in values:
        with method.applied(model, prepared, value):
            losses.append(evaluate_loss(model, tokens))
            with torch.no_grad():
                assert torch.isfinite(model(input_ids=tokens[:2]).logits).all()
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()), f"{name} did not restore"
        lengths.append(method.description_length(prepared, value))
    assert all(math.isfinite(l) for l in losses)
    totals = [l.total_bits for l in lengths]
    assert all(a >= b for a, b in zip(totals, totals[1:])), totals
    assert totals[-1] < method.description_length(prepared, method.knob.identity).total_bits
    assert all(l.entropy_total_bits <= l.total_bits + 1e-6 for l in lengths)

    again = compressors.get(name).prepare(model, tiny_tokens.train)
    middle = values[len(values) // 2]
    with method.applied(model, again, middle):
        assert evaluate_loss(model, tokens) == losses[len(values) // 2]


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="registered twice"):
        @register
        class Again(Compressor):
            name = "rtn"


def test_options_are_checked():
    from mdl_slt.errors import UserError

    with pytest.raises(UserError, match="granularity"):
        compressors.get("rtn", granularity="row")
    with pytest.raises(UserError, match="ordered from more to fewer bits"):
        compressors.get("bnb", formats=["nf4", "int8"])
    with pytest.raises(UserError, match="embedding"):
        compressors.get("gptq", targets=["embedding", "mlp"])
    with pytest.raises(UserError, match="did you mean 'scope'"):
        compressors.get("magnitude", scop="global")


def test_heads_needs_gpt_neox():
    from mdl_slt.errors import UserError

    with pytest.raises(UserError, match="GPT-NeoX"):
        compressors.get("heads").prepare(torch.nn.Sequential(torch.nn.Linear(2, 2)))


@pytest.mark.parametrize("bits", [3.0, 4.0])
def test_gptq_beats_round_to_nearest(bits, tiny_checkpoint, tiny_tokens):
    """Same grid (symmetric, per channel) and targets; GPTQ's error feedback must lower the loss."""
    model, tokens = tiny_checkpoint.model, tiny_tokens.eval
    gptq = compressors.get("gptq")
    rtn = compressors.get("rtn", granularity="channel", targets=list(gptq.targets))
    losses = {}
    for method in (gptq, rtn):
        prepared = method.prepare(model, tiny_tokens.train)
        with method.applied(model, prepared, bits):
            losses[method.name] = evaluate_loss(model, tokens)
    assert losses["gptq"] < losses["rtn"]


def test_head_pruning_with_retraining(tiny_checkpoint, tiny_tokens):
    model = tiny_checkpoint.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    calibration = tiny_tokens.train
    plain = compressors.get("heads", selection="importance")
    retrained = compressors.get("heads", selection="importance", retrain_steps=20, retrain_lr=1e-3)
    losses = {}
    for method in (plain, retrained):
        prepared = method.prepare(model, calibration)
        with method.applied(model, prepared, 0.5):
            attention = model.gpt_neox.layers[0].attention
            head = method.removed(prepared, 0.5)[0][1]
            d = attention.dense.in_features // model.config.num_attention_heads
            assert torch.count_nonzero(attention.dense.weight[:, head * d:(head + 1) * d]) == 0  # held at zero
            losses[method.retrain_steps] = evaluate_loss(model, calibration)
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert losses[20] < losses[0]  # brief retraining recovers loss on its own data
    whole = retrained.description_length(retrained.prepare(model, calibration), 0.5)
    assert whole.untouched_bits == 0  # retraining moves every weight, so every weight is counted as stored


def mapped_from(tensor, directory) -> bool:
    """Whether `tensor`'s memory is a mapping of a file in `directory` (Linux /proc/self/maps)."""
    address = tensor.data_ptr()
    for line in open("/proc/self/maps"):
        fields = line.split()
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= address < high:
            return len(fields) >= 6 and fields[5].startswith(str(directory))
    return False


@pytest.mark.parametrize("name", compressors.names())
def test_spilled_state_gives_identical_results_and_is_removed(name, tiny_checkpoint, tiny_tokens, monkeypatch):
    """Above the spill threshold (0 here) originals and per-layer caches are memory-mapped files:
    every compressor must give exactly the losses and lengths it gives in memory."""
    import gc

    model, tokens = tiny_checkpoint.model, tiny_tokens.eval
    method = compressors.get(name)
    in_memory = method.prepare(model, tiny_tokens.train)
    values = knob_values(method, in_memory, count=3)

    def measured(prepared):
        out = []
        for value in values:
            with method.applied(model, prepared, value):
                out.append(evaluate_loss(model, tokens))
            out.append(method.description_length(prepared, value).total_bits)
        return out

    expected = measured(in_memory)
    monkeypatch.setenv("MDL_SLT_SPILL_BYTES", "0")
    spilled = method.prepare(model, tiny_tokens.train)
    directory = spilled.spill.dir
    assert all(mapped_from(t.original, directory) for t in spilled.targets)  # file-backed pages, not RAM
    assert measured(spilled) == expected
    del spilled
    gc.collect()
    assert not directory.exists()
