"""The contract every registered compressor keeps, and the registry's behaviour.

Conformance (no-op at the identity, model restored, length falling as the knob compresses,
deterministic, finite), pure lengths (computing a length never touches the model), snapping
(each distinct compressed model is evaluated once), real entropy codes, checked options.
"""

import hashlib
import math

import pytest
import torch

import compressors
from compressors.registry import Compressor, register
from mdl_slt.compute.loss import evaluate_loss
from mdl_slt.errors import UserError


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


def fingerprint(model) -> str:
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def check_conformance(name, model, eval_tokens, calibration, options=None):
    """The shared conformance checks, for any model: see the module docstring."""
    method = compressors.get(name, **(options or {}))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    base = evaluate_loss(model, eval_tokens)
    prepared = method.prepare(model, calibration)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())

    with method.applied(model, prepared, method.knob.identity):
        assert evaluate_loss(model, eval_tokens) == base
    values = knob_values(method, prepared)
    assert len(values) >= 2
    losses, lengths = [], []
    for value in values:
        with method.applied(model, prepared, value):
            losses.append(evaluate_loss(model, eval_tokens))
            with torch.no_grad():
                assert torch.isfinite(model(input_ids=eval_tokens[:2]).logits).all()
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()), f"{name} did not restore"
        lengths.append(method.description_length(prepared, value))
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] != base  # the most compressing value changes the model
    totals = [length.total_bits for length in lengths]
    assert all(a >= b for a, b in zip(totals, totals[1:])), totals
    assert totals[-1] < method.description_length(prepared, method.knob.identity).total_bits
    tensors = len(prepared.targets)
    assert all(length.entropy_total_bits <= length.total_bits + tensors for length in lengths)

    again = compressors.get(name, **(options or {})).prepare(model, calibration)
    middle = values[len(values) // 2]
    with method.applied(model, again, middle):
        assert evaluate_loss(model, eval_tokens) == losses[len(values) // 2]


QUICK = {"variational": {"block_bits": 8, "fit_steps": 20, "fisher_sequences": 32}}  # the contract, not its quality
CASES = {**{name: (name, QUICK.get(name, {})) for name in compressors.names()},  # every compressor, the N:M patterns
         "magnitude n:4": ("magnitude", {"pattern": "n:4"}), "wanda n:8": ("wanda", {"pattern": "n:8"}),
         "sparsegpt n:4": ("sparsegpt", {"pattern": "n:4"})}


@pytest.mark.parametrize("case", CASES)
def test_conformance(case, tiny_checkpoint, tiny_tokens):
    name, options = CASES[case]
    check_conformance(name, tiny_checkpoint.model, tiny_tokens.eval, tiny_tokens.train, options)


@pytest.mark.parametrize("name", compressors.names())
def test_a_length_never_touches_the_model(name, tiny_checkpoint, tiny_tokens):
    """A length asked for inside an `applied` block, at another knob value never applied before,
    leaves the compressed weights exactly as they are."""
    model = tiny_checkpoint.model
    method = compressors.get(name, **QUICK.get(name, {}))
    prepared = method.prepare(model, tiny_tokens.train)
    values = knob_values(method, prepared)
    with method.applied(model, prepared, values[-1]):
        compressed = fingerprint(model)
        for value in values[1:-1]:
            method.description_length(prepared, value)
        assert fingerprint(model) == compressed


@pytest.mark.parametrize("case", CASES)
def test_each_distinct_compressed_model_is_evaluated_once(case, tiny_checkpoint, tiny_tokens):
    """A real critical search: no two of its evaluations compress the model identically, and
    snapping is canonical (a snapped value snaps to itself and gives the same model)."""
    from mdl_slt.measures.critical import find_critical

    model = tiny_checkpoint.model
    name, options = CASES[case]
    method = compressors.get(name, **options)
    prepared = method.prepare(model, tiny_tokens.train)
    base = evaluate_loss(model, tiny_tokens.eval)
    seen = {}

    def loss_at(value):
        with method.applied(model, prepared, value):
            seen.setdefault(fingerprint(model), []).append(value)
            return evaluate_loss(model, tiny_tokens.eval)

    found = find_critical(loss_at, base, [0.01, 0.05, 0.2, 1.0], method.knob, method.knob.precision,
                          lambda v: method.snap(v, prepared), method.levels(prepared))
    twice = {key: values for key, values in seen.items() if len(values) > 1 and name != "noise"}
    assert not twice, f"{name} evaluated one model at {twice}"
    for value in found.evaluations:
        assert method.snap(value, prepared) == value
    levels = method.levels(prepared)
    if levels is not None:
        assert levels[0] == method.snap(method.knob.least, prepared) and all(method.snap(v, prepared) == v for v in levels)


@pytest.mark.parametrize("name", compressors.names())
def test_entropy_coded_lengths_pay_for_their_code(name, tiny_checkpoint, tiny_tokens):
    """Never more than a bit per tensor above the nominal size; at 16 bits, never far below it."""
    method = compressors.get(name, **QUICK.get(name, {}))
    prepared = method.prepare(tiny_checkpoint.model, tiny_tokens.train)
    for value in knob_values(method, prepared, count=4):
        length = method.description_length(prepared, value)
        assert length.entropy_total_bits <= length.total_bits + len(prepared.targets)
    if method.knob.name == "bits" and method.knob.high >= 16:  # hqq's widths stop at 8
        at16 = method.description_length(prepared, 16.0)
        assert at16.entropy_payload_bits >= 0.95 * at16.payload_bits


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="registered twice"):
        @register
        class Again(Compressor):
            name = "rtn"


BAD_OPTIONS = {  # one bad value per compressor (and the three a user met): one line each
    "rtn": ({"group_size": "x"}, "option group_size='x' is not allowed: input should be a valid integer"),
    "gptq": ({"damp": -1}, "option damp=-1 is not allowed: input should be greater than 0"),
    "noise": ({"draws": 0}, "option draws=0 is not allowed: input should be greater than or equal to 1"),
    "bnb": ({"formats": ["int4"]}, "option formats=['int4'] is not allowed: input should be 'int8', 'nf4' or 'fp4'"),
    "svd": ({"targets": ["heads"]}, "option targets=['heads'] is not allowed: input should be 'attention'"),
    "svd-energy": ({"targets": "mlp"}, "option targets='mlp' is not allowed: input should be a valid tuple"),
    "tucker": ({"targets": ["mlp"]}, "tucker decomposes attention weights stacked by head"),
    "cp": ({"iterations": 0}, "option iterations=0 is not allowed: input should be greater than or equal to 1"),
    "magnitude": ({"scope": "row"}, "option scope='row' is not allowed: input should be 'layer' or 'global'"),
    "heads": ({"retrain_steps": -3}, "option retrain_steps=-3 is not allowed: input should be greater than or equal to 0"),
    "wanda": ({"pattern": "2:3"}, "option pattern='2:3' is not allowed: input should be 'unstructured', 'n:4' or 'n:8'"),
    "sparsegpt": ({"block_size": 4}, "option block_size=4 is not allowed: input should be greater than or equal to 8"),
    "awq": ({"calibration_sequences": 0}, "option calibration_sequences=0 is not allowed: input should be greater "
            "than or equal to 1"),
    "hqq": ({"group_size": 0}, "option group_size=0 is not allowed: input should be greater than or equal to 1"),
    "mx": ({"formats": ["mxfp2"]}, "option formats=['mxfp2'] is not allowed: input should be 'mxfp8', 'mxfp6', "
           "'nvfp4' or 'mxfp4'"),
    "variational": ({"block_bits": 30}, "option block_bits=30 is not allowed: input should be less than or equal "
                    "to 20"),
}


def test_every_compressor_has_a_checked_option():
    assert set(BAD_OPTIONS) == set(compressors.names())


@pytest.mark.parametrize("name", sorted(BAD_OPTIONS))
def test_bad_option_values_are_one_line(name):
    options, message = BAD_OPTIONS[name]
    with pytest.raises(UserError) as caught:
        compressors.get(name, **options)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_option_names_and_combinations_are_checked():
    with pytest.raises(UserError, match="ordered from more to fewer bits"):
        compressors.get("bnb", formats=["nf4", "int8"])
    with pytest.raises(UserError, match="embedding"):
        compressors.get("gptq", targets=["embedding", "mlp"])
    with pytest.raises(UserError, match="did you mean 'scope'"):
        compressors.get("magnitude", scop="global")
    with pytest.raises(UserError, match="mx: formats must be a non-empty list ordered from more to fewer bits"):
        compressors.get("mx", formats=["mxfp4", "nvfp4"])
    with pytest.raises(UserError, match="use scope 'layer'"):
        compressors.get("magnitude", scope="global", pattern="n:4")
    for name in ("wanda", "sparsegpt", "awq"):
        with pytest.raises(UserError, match=f"{name} needs each layer's inputs"):
            compressors.get(name, targets=["embedding"])
    with pytest.raises(UserError, match="block_size 12 must be a multiple of 8"):
        compressors.get("sparsegpt", pattern="n:8", block_size=12)


def test_heads_needs_a_readable_attention():
    with pytest.raises(UserError, match="cannot find the decoder blocks"):
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


def test_the_fast_range_fit_stays_within_a_percent_of_the_exhaustive_one():
    """The clip ratio found from ≤ 69,632 weights per group, coarse then fine, against all 50 ratios
    on every weight: the squared error of the chosen grid is within 1%."""
    from compressors.grid import as_groups, fit_grid

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # the Student-t draws
    weights = {"tensor": torch.randn(256, 512, generator=gen) * torch.rand(256, 1, generator=gen),
               "heavy tails": torch.distributions.StudentT(3.0).sample((64, 2048)),
               "long heavy tails": torch.distributions.StudentT(2.5).sample((512, 1024)),  # sampled
               "channel": torch.randn(128, 96, generator=gen) * torch.logspace(-2, 0, 128)[:, None]}
    for label, w in weights.items():
        granularity = "channel" if label == "channel" else "tensor"
        (groups,) = as_groups(w, granularity, 128)
        for levels in (2, 6, 16, 256):
            errors = {}
            for search in ("fast", "exhaustive"):
                grid = fit_grid(groups, levels, True, 50, search)
                errors[search] = float(((grid.decode(grid.encode(groups)) - groups) ** 2).sum())
            assert errors["fast"] <= 1.01 * errors["exhaustive"], (label, levels, errors)


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
    method = compressors.get(name, **QUICK.get(name, {}))
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
