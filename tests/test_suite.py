import json

import pytest
import torch

from mdl_slt.home.hub import list_revisions, repo_folder, write_snapshot
from mdl_slt.models.spec import SuiteSpec, neox_config
from mdl_slt.models.suite import build_suite, learning_rate
from tests.conftest import TINY


def non_embedding_params(spec, model):
    from transformers import GPTNeoXForCausalLM

    with torch.device("meta"):
        net = GPTNeoXForCausalLM(neox_config(spec, model))
    total = sum(p.numel() for p in net.parameters())
    return total - net.get_input_embeddings().weight.numel() - net.get_output_embeddings().weight.numel()


def test_default_suite_is_pythia_style_and_spans_sizes():
    spec = SuiteSpec()
    assert len(spec.models) >= 3
    sizes = [non_embedding_params(spec, m) for m in spec.models]
    assert max(sizes) / min(sizes) >= 8
    config = neox_config(spec, spec.models[0])
    assert config.use_parallel_residual
    assert config.rope_parameters["partial_rotary_factor"] == 0.25
    assert not config.tie_word_embeddings


def test_schedule_is_pythia_like():
    spec = SuiteSpec()
    steps = spec.schedule()
    spacing = spec.train_steps // spec.evenly_spaced
    assert steps[:4] == [0, 1, 2, 4] and steps[-1] == spec.train_steps and len(steps) >= 8
    log_part = [s for s in steps if 0 < s < spacing]
    assert log_part and all(s & (s - 1) == 0 for s in log_part)  # powers of two
    tail = [s for s in steps if s >= spacing]
    assert len(set(b - a for a, b in zip(tail, tail[1:]))) == 1  # evenly spaced


def test_learning_rate_warms_up_then_decays():
    spec = SuiteSpec()
    lrs = [learning_rate(spec, s) for s in range(spec.train_steps)]
    peak = lrs.index(max(lrs))
    assert 0 < peak < spec.train_steps // 10
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert lrs[-1] == pytest.approx(spec.learning_rate * spec.min_lr_ratio, rel=0.01)


def test_tiny_suite_loads_by_revision_offline(tiny_suite):
    from transformers import AutoModelForCausalLM

    home, manifest = tiny_suite
    revisions = manifest["models"]["mdl-slt/tiny-a"]
    assert revisions == [f"step{s}" for s in TINY.schedule()]
    first = AutoModelForCausalLM.from_pretrained("mdl-slt/tiny-a", revision="step0", cache_dir=str(home / "hub"),
                                                 local_files_only=True)
    last = AutoModelForCausalLM.from_pretrained("mdl-slt/tiny-a", revision=revisions[-1],
                                                cache_dir=str(home / "hub"), local_files_only=True)
    w0 = first.get_input_embeddings().weight
    assert not torch.equal(w0, last.get_input_embeddings().weight)
    snapshot = repo_folder(home / "hub", "mdl-slt/tiny-a") / "snapshots"
    meta = [json.loads(p.read_text()) for p in snapshot.glob("*/mdl_slt.json")]
    by_step = {m["step"]: m for m in meta}
    assert by_step[TINY.train_steps]["tokens_seen"] == TINY.train_steps * TINY.batch_size * TINY.context_length
    assert by_step[TINY.train_steps]["train_loss"] < by_step[1]["train_loss"]  # training learned something


def test_suite_build_is_reused(tiny_suite, monkeypatch):
    """A built suite is a manifest read: nothing is trained or locked again."""
    import mdl_slt.models.suite

    home, manifest = tiny_suite
    monkeypatch.setattr(mdl_slt.models.suite, "_build", lambda *args: pytest.fail("a built suite was trained again"))
    monkeypatch.setattr("mdl_slt.home.files.locked", lambda path: pytest.fail(f"{path} was locked"))
    assert build_suite(home, TINY) == manifest


def test_variant_is_built_on_demand_with_its_own_training(tiny_suite):
    """A variant is not built with the sizes; asked for, it alone is trained, from the same
    initialisation (same seed) but otherwise: its own batch size, weight decay and data budget."""
    from mdl_slt.models.checkpoints import load_checkpoint
    from mdl_slt.models.suite import missing

    home, manifest = tiny_suite
    variant = TINY.variants[0]
    assert "mdl-slt/tiny-a-otherwise" not in manifest["models"] and missing(home, TINY, TINY.variants)
    built = build_suite(home, TINY, TINY.variants)
    assert built["models"]["mdl-slt/tiny-a"] == manifest["models"]["mdl-slt/tiny-a"]  # the sizes untouched
    assert not missing(home, TINY) and not missing(home, TINY, TINY.variants)
    snapshot = repo_folder(home / "hub", "mdl-slt/tiny-a-otherwise") / "snapshots"
    meta = {m["step"]: m for m in (json.loads(p.read_text()) for p in snapshot.glob("*/mdl_slt.json"))}
    assert meta[TINY.train_steps]["tokens_seen"] == TINY.train_steps * 4 * TINY.context_length
    assert meta[TINY.train_steps]["training"] == {"weight_decay": 0.5, "batch_size": 4, "data_tokens": 2000}
    weights = {name: {step: load_checkpoint(f"{name}@step{step}", home).model.state_dict()
                      for step in (0, TINY.train_steps)} for name in ("mdl-slt/tiny-a", "mdl-slt/tiny-a-otherwise")}
    base, other = weights["mdl-slt/tiny-a"], weights["mdl-slt/tiny-a-otherwise"]
    assert all(torch.equal(base[0][k], other[0][k]) for k in base[0])
    assert not all(torch.equal(base[TINY.train_steps][k], other[TINY.train_steps][k]) for k in base[0])
    assert TINY.setting(variant, "learning_rate") == TINY.learning_rate and TINY.fingerprint(variant) != \
        TINY.fingerprint(TINY.models[0])


def test_snapshots_share_blobs_and_refs_point_at_commits(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("same")
    (files / "b.txt").write_text("one")
    c1 = write_snapshot(tmp_path / "hub", "org/m", "step1", files)
    (files / "b.txt").write_text("two")
    c2 = write_snapshot(tmp_path / "hub", "org/m", "step10", files)
    repo = repo_folder(tmp_path / "hub", "org/m")
    assert c1 != c2 and (repo / "refs" / "step1").read_text() == c1
    assert len(list((repo / "blobs").iterdir())) == 3  # a.txt stored once
    assert (repo / "snapshots" / c2 / "a.txt").is_symlink()
    assert (repo / "snapshots" / c2 / "b.txt").read_text() == "two"
    assert list_revisions(tmp_path / "hub", "org/m") == ["step1", "step10"]
    assert write_snapshot(tmp_path / "hub", "org/m", "step10", files) == c2  # deterministic
