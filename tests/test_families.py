"""Every compressor and the LLC on the common decoder families, and checkpoint suites named by revision.

Tiny randomly initialised models of each family, built here, briefly trained on the tiny suite's
text (so compression changes their loss), saved with `save_pretrained` beside the suite's
tokenizer and loaded back through the one checkpoint loader.
"""

import json
import math
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

import compressors
from mdl_slt.compute.loss import token_nll
from mdl_slt.models.checkpoints import load_checkpoint
from tests.conftest import run_cli
from tests.test_compressors import check_conformance

SIZE = dict(vocab_size=256, num_hidden_layers=2, max_position_embeddings=128)
FAMILIES = {  # GPT-NeoX, GPT-2 (Conv1D, fused QKV, tied), Llama (GQA), Qwen2 (GQA, tied), OPT, OLMo-2 (GQA, shared q/k norm)
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM",
                 dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, rotary_pct=0.25,
                      tie_word_embeddings=False, hidden_dropout=0.0, attention_dropout=0.0)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             dict(vocab_size=256, n_embd=32, n_layer=2, n_head=4, n_positions=128, resid_pdrop=0.0, embd_pdrop=0.0,
                  attn_pdrop=0.0)),
    "llama": ("LlamaConfig", "LlamaForCausalLM",
              dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                   tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM",
              dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                   tie_word_embeddings=True)),
    "opt": ("OPTConfig", "OPTForCausalLM",
            dict(hidden_size=32, num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32, dropout=0.0)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM",
              dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64)),
}


def build(family: str, tokens):
    """A tiny model of `family`, trained for 40 Adam steps on `tokens`."""
    import transformers

    config_name, model_name, options = FAMILIES[family]
    sizes = {} if family == "gpt2" else SIZE
    config = getattr(transformers, config_name)(**sizes, **options, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(40):
        batch = tokens[torch.randint(len(tokens), (8,), generator=generator)]
        optimizer.zero_grad()
        token_nll(model, batch).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def families(tiny_suite, tiny_tokens, tmp_path_factory):
    """family → its checkpoint directory (weights, config and the tiny suite's tokenizer)."""
    home, _ = tiny_suite
    root = tmp_path_factory.mktemp("families")
    dirs = {}
    for family in FAMILIES:
        directory = root / family
        build(family, tiny_tokens.train).save_pretrained(directory)
        for item in (home / "suite-tokenizer").iterdir():
            shutil.copy(item, directory / item.name)
        dirs[family] = directory
    return home, dirs


@pytest.fixture(scope="session")
def loaded(families):
    home, dirs = families
    return {family: load_checkpoint(str(directory), home) for family, directory in dirs.items()}


@pytest.mark.parametrize("name", compressors.names())
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_compressor_on_every_family(family, name, loaded, tiny_tokens):
    check_conformance(name, loaded[family].model, tiny_tokens.eval, tiny_tokens.train)


@pytest.mark.parametrize("name, options", [("rtn", {"granularity": "group"}), ("gptq", {"granularity": "group"}),
                                           ("awq", {}), ("hqq", {})])
def test_group_wise_methods_run_on_their_defaults_where_the_group_does_not_divide_a_row(name, options, tiny_suite,
                                                                                       tiny_tokens):
    """GPT-NeoX of hidden 48 and MLP width 192 (SmolLM2-135M's hidden is 576): the default group of
    128 inputs divides neither 192 nor its rows' flattening, and each method still runs and passes
    conformance, its length counting the last, shorter group's scale."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=256, hidden_size=48, num_attention_heads=4, num_hidden_layers=1,
                           intermediate_size=192, rotary_pct=0.25, max_position_embeddings=128,
                           tie_word_embeddings=False)
    model = GPTNeoXForCausalLM(config).eval()
    check_conformance(name, model, tiny_tokens.eval, tiny_tokens.train, options)
    method = compressors.get(name, **options)
    prepared = method.prepare(model, tiny_tokens.train)
    if name in ("rtn", "gptq", "awq"):  # a group per 128 inputs of each row, the remainder a group of its own
        expected = sum(t.shape[0] * math.ceil(t.shape[1] / min(128, t.shape[1])) for t in prepared.targets)
        assert method._group_count(prepared) == expected
        assert any(t.shape[1] % 128 for t in prepared.targets)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_llc_on_every_family(family, loaded, tiny_tokens):
    from mdl_slt.llc.config import LLCConfig
    from mdl_slt.llc.sampling import estimate_llc

    model = loaded[family].model
    before = [p.detach().clone() for p in model.parameters()]
    result = estimate_llc(model, tiny_tokens.train, LLCConfig(step_size=1e-4, num_chains=2, num_draws=20,
                                                               num_burnin=5, batch_size=8))
    # a briefly trained model is not at a minimum, so λ̂ may sit near zero, but never far below it; and no
    # learning coefficient exceeds a regular model's d/2 (every parameter sampled here)
    assert result.num_params == sum(p.numel() for p in model.parameters())
    assert -3 * result.llc_std_error < result.llc_mean < result.num_params / 2 + 3 * result.llc_std_error
    assert not result.diverged_chains
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize("family", ["llama", "qwen2", "olmo2", "gpt2"])
def test_the_layout_is_read_from_the_modules(family, loaded):
    from compressors import layout

    attentions = layout.attentions(loaded[family].model)
    assert len(attentions) == 2 and all(a.heads == 4 and a.head_dim == 8 for a in attentions)
    assert all(a.kv_heads == (4 if family == "gpt2" else 2) for a in attentions)
    assert all(a.shared_norm == (family == "olmo2") for a in attentions)
    roles = {role for _, _, role in compressors.targets.parameter_roles(loaded[family].model)}
    assert {"attention", "mlp", "embedding", "norm"} <= roles
    assert ("unembedding" in roles) == (family not in ("gpt2", "qwen2"))  # tied: one matrix, listed as embedding


def as_linear(model):
    """A copy of a GPT-2 model with every Conv1D replaced by the nn.Linear computing the same."""
    import copy

    twin = copy.deepcopy(model)
    for name, module in list(twin.named_modules()):
        if type(module).__name__ == "Conv1D":
            linear = torch.nn.Linear(module.weight.shape[0], module.weight.shape[1])
            with torch.no_grad():
                linear.weight.copy_(module.weight.T)
                linear.bias.copy_(module.bias)
            parent, _, child = name.rpartition(".")
            setattr(twin.get_submodule(parent), child, linear)
    return twin


def test_gpt2_conv1d_gives_the_results_of_the_same_weights_in_linear_layout(families, tiny_tokens):
    """Per-channel scales on output channels: `mdl-slt critical` on GPT-2 (Conv1D weights, in × out)
    matches the same weights stored as nn.Linear (out × in)."""
    from mdl_slt.compute.loss import sequence_losses
    from mdl_slt.data.tokens import DataConfig, token_sets
    from mdl_slt.models.checkpoints import Checkpoint
    from mdl_slt.run.measure import measure_critical

    home, dirs = families
    done = run_cli("critical", dirs["gpt2"], "--compressor", "rtn", "--option", "granularity=channel",
                   "--epsilon", "0.02", "0.05", "0.2", "--json", home=home)
    assert done.returncode == 0, done.stderr
    conv = json.loads(done.stdout)
    ckpt = load_checkpoint(str(dirs["gpt2"]), home)
    linear = as_linear(ckpt.model)
    assert not any(type(m).__name__ == "Conv1D" for m in linear.modules())
    tokens = token_sets(home, ckpt.tokenizer, DataConfig())
    base = sequence_losses(linear, tokens.eval)
    assert base.mean() == pytest.approx(conv["base_loss"], rel=1e-6)
    found = measure_critical(Checkpoint(ckpt.ref, linear, ckpt.tokenizer, None, None), tokens,
                             compressors.get("rtn", granularity="channel"), base, [0.02, 0.05, 0.2], 0.05)
    assert found.uncompressed_bits == conv["uncompressed_dl_bits"] and found.search.num_evaluations == conv["n_evaluations"]
    for ours, theirs in zip(found.search.points, conv["critical"]):
        assert ours.value == theirs["knob"] and ours.beyond == theirs["knob_beyond"]
        assert ours.interpolated == pytest.approx(theirs["knob_interpolated"], rel=1e-5)
        assert found.at(ours.value).bits == theirs["dl_bits"]


def test_an_unreadable_architecture_is_one_line(tiny_suite, tmp_path):
    """A state-space model has no attention to prune: the user is told what was looked for."""
    from transformers import MambaConfig, MambaForCausalLM

    home, _ = tiny_suite
    torch.manual_seed(0)
    MambaForCausalLM(MambaConfig(vocab_size=256, hidden_size=16, num_hidden_layers=2, state_size=4)).save_pretrained(tmp_path)
    for item in (home / "suite-tokenizer").iterdir():
        shutil.copy(item, tmp_path / item.name)
    for name in ("heads", "tucker"):
        done = run_cli("critical", tmp_path, "--compressor", name, "--epsilon", "0.05", home=home)
        lines = done.stderr.strip().splitlines()  # what it measured with, the phase it failed in, then one error
        errors = [line for line in lines if line.startswith("mdl-slt: error: ")]
        assert done.returncode == 2 and errors == lines[-1:] and "Traceback" not in done.stderr, done.stderr
        assert lines[0].startswith("data: embedded") and f"{name} ({name})" in lines[0]
        assert "cannot read the attention of MambaBlock: expected a module with q_proj/k_proj/v_proj" in lines[-1]


def test_revision_names_give_steps_and_tokens():
    from mdl_slt.errors import UserError
    from mdl_slt.models.revisions import parse

    assert parse("step3000") == parse("step3000", None) and parse("step3000").step == 3000
    olmo = parse("stage1-step1000-tokens4B")
    assert (olmo.step, olmo.tokens) == (1000, 4_000_000_000)
    assert parse("stage2-ingredient1-step11931-tokens100B").tokens == 100 * 10**9
    assert parse("main") is None and parse("step12-tokens2.5M").tokens == 2_500_000
    custom = parse("ckpt_000700", r"ckpt_(?P<step>\d+)")
    assert custom.step == 700 and custom.tokens is None
    with pytest.raises(UserError, match=r"needs a named group \(\?P<step>"):
        parse("x", r"ckpt_\d+")


def test_a_run_over_a_hub_style_cache_of_an_olmo_named_model(families, tiny_tokens, tmp_path):
    """`steps: {schedule: hub}` lists the repository's revisions from the cache (offline), keeps
    those whose names give a step in range, and records their steps and tokens seen."""
    import tempfile

    from mdl_slt.home.hub import write_snapshot

    home, dirs = families
    cache = tmp_path / "hf-cache"
    model = load_checkpoint(str(dirs["olmo2"]), home).model
    for step, tokens in [(0, "0B"), (10, "1B"), (20, "2B"), (30, "3B")]:
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            for item in (home / "suite-tokenizer").iterdir():
                shutil.copy(item, f"{tmp}/{item.name}")
            write_snapshot(cache, "allenai/OLMo-2-tiny", f"stage1-step{step}-tokens{tokens}", Path(tmp))
        with torch.no_grad():  # a different model at each revision
            for p in model.parameters():
                p.mul_(0.98)
    experiment = tmp_path / "olmo.yaml"
    experiment.write_text(f"""
name: olmo
store: {tmp_path}/olmo.sqlite
report: {tmp_path}/olmo.pdf
models:
  - id: allenai/OLMo-2-tiny
    steps: {{schedule: hub, start: 10}}
data: {{context_length: 32, eval_sequences: 16, llc_sequences: 64}}
llc: {{step_size: 1.0e-4, num_chains: 2, num_draws: 20, num_burnin: 5, batch_size: 8}}
critical: {{compressors: [{{name: rtn, precision: 0.5}}, {{name: heads}}], epsilons: [0.05, 0.5]}}
""")
    os.environ["HF_HUB_CACHE"] = str(cache)
    try:
        done = run_cli("run", experiment, home=home, process=True)  # the hub's cache is read at import
        one_shot = run_cli("llc", "allenai/OLMo-2-tiny@stage1-step20-tokens2B", "--experiment", experiment, "--json",
                           "--num-draws", "10", "--num-burnin", "2", home=home, process=True)
    finally:
        del os.environ["HF_HUB_CACHE"]
    assert done.returncode == 0, done.stderr
    assert one_shot.returncode == 0, one_shot.stderr
    # one reading of a revision's name: the one-shot command gives the step and tokens the run stored
    assert (json.loads(one_shot.stdout)["step"], json.loads(one_shot.stdout)["tokens_seen"]) == (20, 2 * 10**9)
    with sqlite3.connect(tmp_path / "olmo.sqlite") as db:
        llc = db.execute("SELECT revision, step, tokens_seen FROM records WHERE task = 'llc' ORDER BY step").fetchall()
        heads = db.execute("SELECT COUNT(*) FROM records WHERE task = 'critical' AND compressor = 'heads'").fetchone()
    assert llc == [("stage1-step10-tokens1B", 10, 10**9), ("stage1-step20-tokens2B", 20, 2 * 10**9),
                   ("stage1-step30-tokens3B", 30, 3 * 10**9)]
    assert heads == (3 * 2,) and (tmp_path / "olmo.pdf").read_bytes().startswith(b"%PDF")
