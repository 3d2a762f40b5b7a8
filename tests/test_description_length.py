"""Description-length accounting of every family against hand-computed examples: one row per
format of the accounting table in docs/description-lengths.md."""

import math

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

import compressors
from compressors.coding import coded_bits, enumerative_bits


def test_the_entropy_code_pays_for_its_histogram():
    # 4 symbols over an alphabet of 4 with counts (2, 1, 1, 0): C(7, 3) = 35 histograms, 4!/2! = 12 orders
    assert enumerative_bits([2, 1, 1, 0]) == pytest.approx(math.log2(35 * 12))
    assert coded_bits([2, 1, 1, 0]) == pytest.approx(1 + min(math.log2(420), 4 * 2))  # fixed rate: 8 bits, shorter
    # a 48 × 48 matrix at 16 bits: every code distinct, so coding with its own histogram cannot beat
    # fixed rate (the old figure, the histogram's entropy alone, claimed log2(2304) ≈ 11.2 bits per weight)
    distinct = [1] * 2304 + [0] * (65536 - 2304)
    assert coded_bits(distinct) == pytest.approx(1 + 2304 * 16)
    skewed = [2000, 300, 4] + [0] * 13
    assert coded_bits(skewed) < 2304 * 4 * 0.4  # a skewed histogram codes far below fixed rate, histogram included


def linear(out_features, in_features, bias=False, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(in_features, out_features, bias=bias))


def neox(hidden=8, heads=2, layers=1, vocab=16):
    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=layers,
                           intermediate_size=2 * hidden, rotary_pct=0.25, max_position_embeddings=16)
    return GPTNeoXForCausalLM(config)


def test_rtn_asymmetric_groups():
    model = linear(2, 8)
    rtn = compressors.get("rtn", symmetric=False, granularity="group", group_size=4, targets=["mlp"])
    prepared = rtn.prepare(model)
    length = rtn.description_length(prepared, 3.0)  # 8 levels
    assert length.payload_bits == 16 * 3
    assert length.side_bits == 4 * (32 + 3)  # 4 groups: fp32 scale + a 3-bit zero point each
    assert length.untouched_bits == 0
    (counts,) = prepared.cache[("counts", 8)]  # the codes of the one tensor, coded with their histogram
    assert sum(counts) == 16 and length.entropy_payload_bits == pytest.approx(coded_bits(counts, 8))


def test_a_row_that_the_group_size_does_not_divide_ends_in_a_shorter_group():
    """Rows of 10 in groups of 4: two whole groups and one of 2 per row, each with its own scale,
    counted in the length; the short group is quantized on its own grid, exactly."""
    from compressors.grid import as_groups, fit_grid, from_groups

    model = linear(3, 10)
    weight = model[0].weight.detach()
    parts = as_groups(weight, "group", 4)
    assert [tuple(p.shape) for p in parts] == [(6, 4), (3, 2)]
    assert torch.equal(from_groups(parts, weight), weight)  # the groups put back are the weight
    for symmetric, side in ((True, 32), (False, 32 + 3)):
        rtn = compressors.get("rtn", symmetric=symmetric, granularity="group", group_size=4, targets=["mlp"])
        prepared = rtn.prepare(model)
        length = rtn.description_length(prepared, 3.0)  # 8 levels
        assert length.payload_bits == 30 * 3 and length.side_bits == 9 * side  # 6 + 3 groups
        with rtn.applied(model, prepared, 3.0):
            tail = model[0].weight[:, 8:].detach().clone()
        grid = fit_grid(weight[:, 8:].float(), 8, symmetric)
        assert torch.equal(tail, grid.decode(grid.encode(weight[:, 8:].float())))
    hqq = compressors.get("hqq", group_size=4, targets=["mlp"])
    length = hqq.description_length(hqq.prepare(model), 3.0)  # 30 weights: 7 groups of 4 and one of 2
    assert (length.payload_bits, length.side_bits) == (30 * 3, 8 * (32 + 32))


def test_rtn_per_channel():
    model = linear(3, 4, bias=True)
    rtn = compressors.get("rtn", granularity="channel", targets=["mlp"])
    length = rtn.description_length(rtn.prepare(model), 2.0)
    assert (length.payload_bits, length.side_bits, length.untouched_bits) == (12 * 2, 3 * 32, 3 * 32)


def test_gptq_matches_rtn_accounting(tiny_checkpoint, tiny_tokens):
    gptq = compressors.get("gptq")
    prepared = gptq.prepare(tiny_checkpoint.model, tiny_tokens.train)
    length = gptq.description_length(prepared, 4.0)
    count = sum(t.original.numel() for t in prepared.targets)
    rows = sum(t.original.shape[0] for t in prepared.targets)
    assert length.payload_bits == 4 * count and length.side_bits == 32 * rows
    grouped = compressors.get("gptq", granularity="group", group_size=16)
    g = grouped.description_length(grouped.prepare(tiny_checkpoint.model, tiny_tokens.train), 4.0)
    groups = sum(t.original.shape[0] * (t.original.shape[1] // min(16, t.original.shape[1])) for t in prepared.targets)
    assert g.side_bits == 32 * groups


def test_bitsandbytes_formats():
    model = linear(4, 128)  # 512 weights
    bnb = compressors.get("bnb", targets=["mlp"])
    prepared = bnb.prepare(model)
    int8 = bnb.description_length(prepared, 1)
    assert int8.payload_bits == 512 * 8 and int8.side_bits == 2 * 32  # absmax per 256; the standard code table is free
    nf4 = bnb.description_length(prepared, 2)
    assert nf4.payload_bits == 512 * 4 and nf4.side_bits == 8 * 32  # absmax per 64
    assert nf4.entropy_payload_bits <= 512 * 4


def test_svd_factors_or_dense():
    model = linear(4, 6)  # rank 4
    svd = compressors.get("svd", targets=["mlp"])
    prepared = svd.prepare(model)
    half = svd.description_length(prepared, 0.5)  # k = 2: 2·(4 + 6) = 20 < 24 numbers
    assert (half.payload_bits, half.side_bits) == (20 * 32, 32)
    # k = 3: 30 ≥ 24 numbers, kept dense, and a code no shorter than the uncompressed one is no compression
    assert svd.snap(0.75, prepared) == 1.0 and svd.description_length(prepared, 0.75) == svd.uncompressed_bits(prepared)
    assert svd.levels(prepared) == [1.0, 0.5, 0.25] and svd.snap(0.3, prepared) == 0.5


def test_svd_energy_ranks_globally():
    a, b = torch.tensor([3.0, 1, 0.2, 0.1, 0.05, 0.01]), torch.tensor([2.0, 0.5, 0.2, 0.1, 0.05, 0.01])
    model = torch.nn.Sequential(torch.nn.Linear(6, 6, bias=False), torch.nn.Linear(6, 6, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.diag(a))  # energies 9, 1, …
        model[1].weight.copy_(torch.diag(b))  # energies 4, 0.25, …
    svd = compressors.get("svd-energy", targets=["mlp"])
    prepared = svd.prepare(model)
    total = float((a**2).sum() + (b**2).sum())
    assert svd.ranks(prepared, 9 / total) == {"0.weight": 1, "1.weight": 1}  # at least one each
    assert svd.snap(9 / total, prepared) == pytest.approx(13 / total)  # B's first σ is kept anyway
    assert svd.ranks(prepared, 13.5 / total) == {"0.weight": 2, "1.weight": 1}
    with svd.applied(model, prepared, 13.5 / total):
        assert torch.allclose(model[0].weight, torch.diag(torch.tensor([3.0, 1, 0, 0, 0, 0])), atol=1e-6)
        assert torch.allclose(model[1].weight, torch.diag(torch.tensor([2.0, 0, 0, 0, 0, 0])), atol=1e-6)


def test_tucker_core_and_factors():
    model = neox()  # query_key_value (24 × 8) → (6, 4, 8); dense (8 × 8) → (2, 4, 8)
    tucker = compressors.get("tucker")
    prepared = tucker.prepare(model)
    length = tucker.description_length(prepared, 0.5)
    qkv = (3 * 2 * 4) + (6 * 3 + 4 * 2 + 8 * 4)  # ranks (3, 2, 4)
    dense = (1 * 2 * 4) + (2 * 1 + 4 * 2 + 8 * 4)  # the output projection by its 2 input heads: (2, 4, 8), ranks (1, 2, 4)
    assert length.payload_bits == 32 * (qkv + dense) and length.side_bits == 2 * 3 * 32


def test_cp_factors():
    model = neox()
    cp = compressors.get("cp")
    prepared = cp.prepare(model)
    # R_max = ⌈192/18⌉ = 11 and ⌈64/14⌉ = 5; at 0.5: R = ⌈5.5⌉ = 6 and ⌈2.5⌉ = 3; one 32-bit rank each
    length = cp.description_length(prepared, 0.5)
    assert length.payload_bits == 32 * (6 * 18 + 3 * 14) and length.side_bits == 2 * 32
    assert cp.snap(0.5, prepared) == pytest.approx(6 / 11)  # the top of the fractions giving ranks (6, 3)


def test_magnitude_values_and_positions():
    model = linear(4, 4)
    mag = compressors.get("magnitude", targets=["mlp"])
    prepared = mag.prepare(model)
    length = mag.description_length(prepared, 0.5)  # 8 of 16 kept; bitmap 16 bits < 8 indices × 4 bits
    assert (length.payload_bits, length.side_bits) == (8 * 32 + 16, 32)
    # coded, the mask costs log2 17 + log2 C(16, 8) = 17.7 bits > the 16-bit bitmap, so the bitmap, plus the flag bit
    assert length.entropy_payload_bits == pytest.approx(8 * 32 + 16 + 1)
    sparse = mag.description_length(prepared, 0.875)  # 2 kept: 2 indices × 4 bits < 16-bit bitmap
    assert sparse.payload_bits == 2 * 32 + 8
    with mag.applied(model, prepared, 0.5):
        assert int((model[0].weight == 0).sum()) == 8


def test_magnitude_global_ranks_across_tensors():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, 0.2], [0.3, 0.4]]))
        model[1].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    mag = compressors.get("magnitude", scope="global", targets=["mlp"])
    with mag.applied(model, mag.prepare(model), 0.5):
        assert torch.count_nonzero(model[0].weight) == 0 and torch.count_nonzero(model[1].weight) == 4


def test_heads_removed_parameters():
    model = neox()  # 2 heads of 4 dims: a head owns 12 qkv rows (96 weights + 12 biases) and 4 dense columns (32)
    heads = compressors.get("heads")
    prepared = heads.prepare(model)
    length = heads.description_length(prepared, 0.5)
    assert length.payload_bits == 32 * (24 * 8 + 24 + 64 - (96 + 12 + 32)) and length.side_bits == 2
    with heads.applied(model, prepared, 0.5):
        attention = model.gpt_neox.layers[0].attention
        removed = heads.removed(prepared, 0.5)[0][1]
        # a removed head's slice of the output projection's input is zero, so its output is exactly zero
        assert torch.count_nonzero(attention.dense.weight[:, removed * 4:(removed + 1) * 4]) == 0
        assert torch.count_nonzero(attention.dense.weight) == 8 * 4


def test_noise_rate():
    model = linear(4, 4)
    noise = compressors.get("noise", targets=["mlp"])
    length = noise.description_length(noise.prepare(model), 1.0)
    assert length.payload_bits == pytest.approx(16 * 0.5 * math.log2(2)) and length.side_bits == 32


@pytest.mark.parametrize("family", ["llama", "olmo2"])
def test_heads_under_grouped_query_attention(family):
    """4 query heads of 2 dims sharing 2 key/value heads: a query head owns 2 query rows and 2 output
    columns; a key/value head goes (its 2 key and 2 value rows) when both its query heads are gone.
    OLMo-2 normalises queries and keys across all heads, so there only value rows can go."""
    from transformers import LlamaConfig, LlamaForCausalLM, Olmo2Config, Olmo2ForCausalLM

    torch.manual_seed(0)
    config = dict(vocab_size=16, hidden_size=8, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=1,
                  intermediate_size=16)
    model = (LlamaForCausalLM(LlamaConfig(**config)) if family == "llama" else Olmo2ForCausalLM(Olmo2Config(**config)))
    heads = compressors.get("heads", seed=3)
    prepared = heads.prepare(model)
    stored = 64 + 32 + 32 + 64  # q, k, v, o
    for fraction in (0.25, 0.5, 0.75):
        removed = {h for _, h in heads.removed(prepared, fraction)}
        groups_gone = sum({2 * g, 2 * g + 1} <= removed for g in range(2))
        per_query = 16 + (16 if family == "llama" else 0)  # output columns (+ query rows)
        per_kv = 16 + (16 if family == "llama" else 0)  # value rows (+ key rows)
        length = heads.description_length(prepared, fraction)
        assert length.payload_bits == 32 * (stored - len(removed) * per_query - groups_gone * per_kv)
        assert length.side_bits == 4


def test_magnitude_n_of_m_index_code():
    model = linear(2, 8)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -4, 3, 2, 0.5, 8, -7, 6], [5, 1, -2, 3, 4, 3.5, -1, 2]]))
    mag = compressors.get("magnitude", pattern="n:4", targets=["mlp"])
    prepared = mag.prepare(model)
    assert mag.levels(prepared) == [0.0, 0.25, 0.5, 0.75] and mag.snap(0.6, prepared) == 0.5
    length = mag.description_length(prepared, 0.5)  # 2:4: 4 groups keep 2 of 4, one of C(4, 2) = 6 choices each
    assert (length.payload_bits, length.side_bits) == (8 * 32 + 4 * math.log2(6), 0)
    # choices (1, 2), (1, 2), (0, 3), (0, 1): coded with their own histogram, log2 C(9, 5) + log2 (4!/2!)
    # = 10.6 bits, above the fixed rate's 4·log2 6 = 10.3, so the fixed rate and the flag bit
    assert length.entropy_payload_bits == pytest.approx(8 * 32 + 1 + 4 * math.log2(6))
    with mag.applied(model, prepared, 0.5):  # the two largest |w| of every four stay
        assert model[0].weight.tolist() == [[0, -4, 3, 0, 0, 8, -7, 0], [5, 0, 0, 3, 4, 3.5, 0, 0]]
    one = mag.description_length(prepared, 0.75)  # 1:4: one of 4 kept, log2 4 = 2 bits per group
    assert one.payload_bits == 4 * 32 + 4 * 2


def calibrated_neox():
    """The tiny GPT-NeoX of `neox()` with 8 calibration sequences of 12 tokens."""
    return neox(), torch.randint(16, (8, 12), generator=torch.Generator().manual_seed(0))


LINEAR_SHAPES = [(24, 8), (8, 8), (16, 8), (8, 16), (16, 8)]  # qkv, dense, h→4h, 4h→h, unembedding (out × in)


def test_wanda_and_sparsegpt_at_half_and_at_two_of_four():
    model, calibration = calibrated_neox()
    untouched = sum(p.numel() for p in model.parameters()) - sum(o * i for o, i in LINEAR_SHAPES)
    for name in ("wanda", "sparsegpt"):
        method = compressors.get(name)
        prepared = method.prepare(model, calibration)
        length = method.description_length(prepared, 0.5)  # half of each row (wanda) or block (sparsegpt)
        # per tensor of n: n/2 values, positions as a bitmap (n bits, under n/2 indices of ⌈log₂ n⌉ bits), a count
        assert length.payload_bits == sum(32 * o * i // 2 + o * i for o, i in LINEAR_SHAPES)
        assert (length.side_bits, length.untouched_bits) == (5 * 32, 32 * untouched)
        with method.applied(model, prepared, 0.5):
            assert all(int((t.param == 0).sum()) == t.param.numel() // 2 for t in prepared.targets)
        nm = compressors.get(name, pattern="n:4")
        two = nm.description_length(nm.prepare(model, calibration), 0.5)
        assert two.payload_bits == pytest.approx(sum(32 * o * i / 2 + o * i / 4 * math.log2(6) for o, i in LINEAR_SHAPES))
        assert two.side_bits == 0


def test_awq_is_rtn_accounting_plus_its_scales():
    model, calibration = calibrated_neox()
    awq = compressors.get("awq", group_size=4)
    length = awq.description_length(awq.prepare(model, calibration), 3.0)  # 8 levels
    count = sum(o * i for o, i in LINEAR_SHAPES)
    assert length.payload_bits == 3 * count
    assert length.side_bits == 32 * count / 4 + 32 * sum(i for _, i in LINEAR_SHAPES)  # a scale per group, s per input


def test_hqq_scale_and_zero_per_group():
    model = linear(2, 8)
    hqq = compressors.get("hqq", group_size=4, targets=["mlp"])
    prepared = hqq.prepare(model)
    assert hqq.levels(prepared) == [8, 6, 5, 4, 3, 2, 1] and hqq.snap(3.7, prepared) == 3 and hqq.snap(16, prepared) == 8
    length = hqq.description_length(prepared, 3.0)
    assert (length.payload_bits, length.side_bits) == (16 * 3, 4 * (32 + 32))  # fp32 scale and zero per group of 4
    (counts,) = prepared.cache[3]
    assert sum(counts) == 16 and length.entropy_payload_bits == pytest.approx(coded_bits(counts, 8))


def test_microscaling_formats():
    model = linear(2, 64)  # 128 weights: 4 blocks of 32, or 8 blocks of 16
    mx = compressors.get("mx", targets=["mlp"])
    prepared = mx.prepare(model)
    expected = {1: (8 * 128, 4 * 8), 2: (6 * 128, 4 * 8), 3: (4 * 128, 8 * 8 + 32), 4: (4 * 128, 4 * 8)}
    for position, (payload, side) in expected.items():  # mxfp8, mxfp6, nvfp4 (E4M3 per 16 + fp32 per tensor), mxfp4
        length = mx.description_length(prepared, position)
        assert (length.payload_bits, length.side_bits) == (payload, side), mx.formats[position - 1]


def test_microscaling_round_trips_its_own_values():
    """Values on a block's grid come back exactly: E2M1 × a power of two (MXFP4), and E8M0's
    exponent is ⌊log₂ max⌋ − 2; a value between two grid points rounds to the even code."""
    from compressors.microscaling import mx_roundtrip, round_to

    grid = torch.tensor([6.0, -3, 1.5, 0.5, -0.5, 0, 4, 2] * 4) * 2.0**-5
    dequantized, codes = mx_roundtrip(grid[None, :], "mxfp4")
    assert torch.equal(dequantized[0], grid) and int(codes[0, 0]) == 7 and int(codes[0, 1]) == 8 + 5
    values, _ = round_to(torch.tensor([2.5, 5.0, 0.75, 100.0]), "e2m1")
    assert values.tolist() == [2.0, 4.0, 1.0, 6.0]  # ties to even, saturated at 6
    e4m3 = torch.randn(4096) * 30
    assert torch.equal(round_to(e4m3, "e4m3")[0], e4m3.clamp(-448, 448).to(torch.float8_e4m3fn).float())
