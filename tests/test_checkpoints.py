import pytest
import torch

from mdl_slt.compute.loss import evaluate_loss, token_nll
from mdl_slt.errors import UserError
from mdl_slt.models.checkpoints import CheckpointRef, load_checkpoint
from mdl_slt.models.revisions import training_position


def test_parse_references(tmp_path):
    ref = CheckpointRef.parse("EleutherAI/pythia-70m@step3000")
    assert (ref.model_id, ref.revision) == ("EleutherAI/pythia-70m", "step3000")
    assert str(ref) == "EleutherAI/pythia-70m@step3000"
    assert CheckpointRef.parse("EleutherAI/pythia-70m").revision is None
    assert CheckpointRef.parse(str(tmp_path)).is_local_dir
    assert training_position(ref.model_id, ref.revision) == (3000, 3000 * 1024 * 2048)  # Pythia's tokens per step
    assert training_position("allenai/OLMo-2", "stage1-step10000-tokens21B") == (10000, 21 * 10**9)
    assert training_position("org/model", "main") == (None, None)
    for bad in ["", "model@", "@step1"]:
        with pytest.raises(UserError):
            CheckpointRef.parse(bad)


def test_unknown_reference_is_one_clear_error(home):
    with pytest.raises(UserError, match="cannot load checkpoint 'nosuch/model@step1'"):
        load_checkpoint("nosuch/model@step1", home)


def test_loads_fp32_eval_with_step_and_tokens(tiny_checkpoint):
    assert tiny_checkpoint.step == 24
    assert tiny_checkpoint.tokens_seen == 24 * 8 * 32
    assert not tiny_checkpoint.model.training
    assert all(p.dtype == torch.float32 for p in tiny_checkpoint.model.parameters())


def test_local_directory_loads_the_same_model(tiny_checkpoint, tmp_path, home):
    tiny_checkpoint.model.save_pretrained(tmp_path)
    tiny_checkpoint.tokenizer.save_pretrained(tmp_path)
    local = load_checkpoint(str(tmp_path), home)
    tokens = torch.randint(0, 256, (4, 16))
    assert evaluate_loss(local.model, tokens) == pytest.approx(evaluate_loss(tiny_checkpoint.model, tokens), abs=1e-6)


def test_evaluate_loss_is_mean_token_nll(tiny_checkpoint):
    tokens = torch.randint(0, 256, (10, 16))
    model = tiny_checkpoint.model
    with torch.no_grad():
        logits = model(input_ids=tokens).logits
    logp = torch.log_softmax(logits[:, :-1].double(), -1)
    manual = -logp.gather(-1, tokens[:, 1:, None]).mean().item()
    assert evaluate_loss(model, tokens, batch_size=3) == pytest.approx(manual, abs=1e-5)
    with torch.no_grad():
        assert float(token_nll(model, tokens)) == pytest.approx(manual, abs=1e-5)
