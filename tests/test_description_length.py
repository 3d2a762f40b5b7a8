"""Description-length accounting of every family against hand-computed examples."""

import math

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

import compressors


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
    length = rtn.description_length(rtn.prepare(model), 3.0)  # 8 levels
    assert length.payload_bits == 16 * 3
    assert length.side_bits == 4 * (32 + 3)  # 4 groups: fp32 scale + a 3-bit zero point each
    assert length.untouched_bits == 0


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
    assert int8.payload_bits == 512 * 8 and int8.side_bits == 2 * 32 + 256 * 32  # absmax per 256 + code table
    nf4 = bnb.description_length(prepared, 2)
    assert nf4.payload_bits == 512 * 4 and nf4.side_bits == 8 * 32  # absmax per 64
    assert nf4.entropy_payload_bits <= 512 * 4


def test_svd_factors_or_dense():
    model = linear(4, 6)  # rank 4
    svd = compressors.get("svd", targets=["mlp"])
    prepared = svd.prepare(model)
    half = svd.description_length(prepared, 0.5)  # k = 2: 2·(4 + 6) = 20 < 24 numbers
    assert (half.payload_bits, half.side_bits) == (20 * 32, 32)
    most = svd.description_length(prepared, 0.75)  # k = 3: 30 ≥ 24, stored dense
    assert (most.payload_bits, most.side_bits) == (24 * 32, 0)


def test_svd_energy_ranks_globally():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.diag(torch.tensor([3.0, 1.0])))  # energies 9, 1
        model[1].weight.copy_(torch.diag(torch.tensor([2.0, 0.5])))  # energies 4, 0.25
    svd = compressors.get("svd-energy", targets=["mlp"])
    prepared = svd.prepare(model)
    total = 9 + 1 + 4 + 0.25
    assert svd.ranks(prepared, 9 / total) == {"0.weight": 1, "1.weight": 1}  # at least one each
    assert svd.ranks(prepared, 13.5 / total) == {"0.weight": 2, "1.weight": 1}
    with svd.applied(model, prepared, 13.5 / total):
        assert torch.allclose(model[1].weight, torch.diag(torch.tensor([2.0, 0.0])), atol=1e-6)


def test_tucker_core_and_factors():
    model = neox()  # query_key_value (24 × 8) → (6, 4, 8); dense (8 × 8) → (2, 4, 8)
    tucker = compressors.get("tucker")
    prepared = tucker.prepare(model)
    length = tucker.description_length(prepared, 0.5)
    qkv = (3 * 2 * 4) + (6 * 3 + 4 * 2 + 8 * 4)  # ranks (3, 2, 4)
    dense = (1 * 2 * 4) + (2 * 1 + 4 * 2 + 8 * 4)  # ranks (1, 2, 4)
    assert length.payload_bits == 32 * (qkv + dense) and length.side_bits == 2 * 3 * 32


def test_cp_factors():
    model = neox()
    cp = compressors.get("cp")
    prepared = cp.prepare(model)
    # R_max = ⌈192/18⌉ = 11 and ⌈64/14⌉ = 5; at 0.5: R = round(5.5) = 6 and round(2.5) = 2
    length = cp.description_length(prepared, 0.5)
    assert length.payload_bits == 32 * (6 * (18 + 1) + 2 * (14 + 1)) and length.side_bits == 2 * 3 * 32


def test_magnitude_values_and_positions():
    model = linear(4, 4)
    mag = compressors.get("magnitude", targets=["mlp"])
    prepared = mag.prepare(model)
    length = mag.description_length(prepared, 0.5)  # 8 of 16 kept; bitmap 16 bits < 8 indices × 4 bits
    assert (length.payload_bits, length.side_bits) == (8 * 32 + 16, 32)
    assert length.entropy_payload_bits == pytest.approx(8 * 32 + 16)  # H(1/2) = 1 bit per position
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
        assert torch.count_nonzero(attention.query_key_value.weight[removed * 12:(removed + 1) * 12]) == 0


def test_noise_rate():
    model = linear(4, 4)
    noise = compressors.get("noise", targets=["mlp"])
    length = noise.description_length(noise.prepare(model), 1.0)
    assert length.payload_bits == pytest.approx(16 * 0.5 * math.log2(2)) and length.side_bits == 32
