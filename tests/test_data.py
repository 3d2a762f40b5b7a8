"""Data sources: local .txt/.jsonl files and streamed Hugging Face datasets, cut into fixed, cached token sets."""

import json

import pytest
import torch
from pydantic import ValidationError

from mdl_slt.data.tokens import DataConfig, token_sets
from mdl_slt.errors import UserError

SIZES = dict(context_length=32, eval_sequences=8, llc_sequences=24)


@pytest.fixture(scope="module")
def documents(tiny_suite):
    """Forty real documents: consecutive 1,500-character pieces of the training plays."""
    from mdl_slt.data.corpus import load_corpus

    home, _ = tiny_suite
    text = load_corpus(home).train
    return [text[i * 1500:(i + 1) * 1500] for i in range(40)]


def write_jsonl(path, documents, field="text"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({field: d, "meta": i}) + "\n" for i, d in enumerate(documents)))
    return path


def rows(tensor):
    return {tuple(r) for r in tensor.tolist()}


def test_files_give_disjoint_fixed_sets_cut_in_document_order(tiny_suite, tiny_checkpoint, documents, tmp_path):
    home, _ = tiny_suite
    tok = tiny_checkpoint.tokenizer
    write_jsonl(tmp_path / "docs.jsonl", documents)
    config = DataConfig(source="files", files=[str(tmp_path / "*.jsonl")], **SIZES)
    sets = token_sets(home, tok, config)
    assert sets.eval.shape == (8, 32) and sets.train.shape == (24, 32)
    assert not rows(sets.eval) & rows(sets.train)  # held-out blocks never sampled
    stream = []
    for d in documents:
        stream += tok(d)["input_ids"] + [tok.eos_token_id]
    blocks = torch.tensor(stream[:32 * 32]).view(32, 32)
    assert rows(blocks) == rows(sets.eval) | rows(sets.train)  # exactly the first 32 blocks, EOS between documents
    assert torch.equal(sets.eval[0], blocks[0]) and torch.equal(sets.eval[-1], blocks[-1])  # evenly spaced picks
    again = token_sets(home, tok, config)  # from the cache
    assert torch.equal(again.eval, sets.eval) and torch.equal(again.train, sets.train)


def test_a_held_out_file_feeds_eval_and_txt_is_one_document(tiny_suite, tiny_checkpoint, documents, tmp_path):
    home, _ = tiny_suite
    tok = tiny_checkpoint.tokenizer
    for i, d in enumerate(documents[:30]):
        (tmp_path / "train" / f"{i:02d}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "train" / f"{i:02d}.txt").write_text(d)
    (tmp_path / "held-out.txt").write_text("".join(documents[30:]))
    sets = token_sets(home, tok, DataConfig(source="files", files=[str(tmp_path / "train" / "*.txt")],
                                            eval_files=[str(tmp_path / "held-out.txt")], **SIZES))
    held_out = tok("".join(documents[30:]))["input_ids"]
    assert sets.eval.flatten().tolist() == held_out[:8 * 32]
    assert sets.train.flatten().tolist()[:10] == tok(documents[0])["input_ids"][:10]


def test_a_streamed_dataset_gives_the_tokens_of_the_same_files(tiny_suite, tiny_checkpoint, documents, tmp_path):
    """`source: hf` reads a dataset with `datasets` streaming; a local dataset directory stands in for the hub."""
    home, _ = tiny_suite
    tok = tiny_checkpoint.tokenizer
    write_jsonl(tmp_path / "corpus" / "train.jsonl", documents, field="content")
    write_jsonl(tmp_path / "corpus" / "validation.jsonl", documents[::-1], field="content")
    streamed = token_sets(home, tok, DataConfig(source="hf", dataset=str(tmp_path / "corpus"), split="train",
                                                eval_split="validation", text_field="content", **SIZES))
    from_files = token_sets(home, tok, DataConfig(
        source="files", files=[str(tmp_path / "corpus" / "train.jsonl")],
        eval_files=[str(tmp_path / "corpus" / "validation.jsonl")], text_field="content", **SIZES))
    assert torch.equal(streamed.train, from_files.train) and torch.equal(streamed.eval, from_files.eval)
    with pytest.raises(UserError, match="has no field 'text' \\(fields: content, meta\\)"):
        token_sets(home, tok, DataConfig(source="hf", dataset=str(tmp_path / "corpus"), **SIZES))


def test_bad_sources_are_one_clear_error(tiny_suite, tiny_checkpoint, documents, tmp_path):
    home, _ = tiny_suite
    tok = tiny_checkpoint.tokenizer
    with pytest.raises(UserError, match="data file not found"):
        token_sets(home, tok, DataConfig(source="files", files=[str(tmp_path / "none*.jsonl")], **SIZES))
    write_jsonl(tmp_path / "wrong.jsonl", documents, field="body")
    with pytest.raises(UserError, match="wrong.jsonl, line 1: not a JSON object with a 'text' field"):
        token_sets(home, tok, DataConfig(source="files", files=[str(tmp_path / "wrong.jsonl")], **SIZES))
    write_jsonl(tmp_path / "short.jsonl", [documents[0][:300]])
    with pytest.raises(UserError, match="fewer than the 32 asked for"):
        token_sets(home, tok, DataConfig(source="files", files=[str(tmp_path / "short.jsonl")], **SIZES))
    with pytest.raises(UserError, match="hub is unreachable"):
        token_sets(home, tok, DataConfig(source="hf", dataset="NeelNanda/pile-10k", **SIZES))
    with pytest.raises(ValidationError, match="source 'files' needs `files`"):
        DataConfig(source="files")
    with pytest.raises(ValidationError, match="`dataset` belongs to source 'hf', not 'embedded'"):
        DataConfig(dataset="NeelNanda/pile-10k")
