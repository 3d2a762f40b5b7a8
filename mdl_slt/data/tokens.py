"""The text behind every measurement, and the fixed token sets cut from it.

Sources: the embedded Shakespeare corpus; local files (`.txt`: one document per file; `.jsonl`:
one per line, its `text_field`); a Hugging Face dataset by name, or a local dataset directory,
read with streaming so only the documents needed are fetched.

Each set is a (sequences, context_length) LongTensor tokenized with the model's own tokenizer
and cached under the home, keyed by tokenizer, source and sizes, so every checkpoint of a run
sees identical tokens. Embedded: blocks evenly spaced over the held-out plays (eval) and the
training plays (LLC). Other sources: documents are read in order, each followed by the
end-of-text token, until enough blocks of `context_length` tokens are filled; with a separate
held-out source each set comes from its own, otherwise eval takes evenly spaced blocks of
that stream and the LLC set the rest, so the two never overlap.
"""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mdl_slt.errors import UserError, one_line


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["embedded", "files", "hf"] = "embedded"
    files: list[str] = Field(default_factory=list, description="files: paths or globs of .txt / .jsonl files")
    eval_files: list[str] = Field(default_factory=list, description="files: held-out files (default: share `files`)")
    dataset: str | None = Field(None, description="hf: dataset name (e.g. NeelNanda/pile-10k) or local directory")
    dataset_config: str | None = Field(None, description="hf: the dataset's configuration name, if it has several")
    split: str = Field("train", description="hf: split read for the LLC set (and eval, unless eval_split)")
    eval_split: str | None = Field(None, description="hf: held-out split (default: share `split`)")
    text_field: str = Field("text", description="jsonl and hf: the field holding each document's text")
    context_length: int = Field(128, ge=8)
    eval_sequences: int = Field(64, ge=1, description="held-out sequences for every loss evaluation")
    llc_sequences: int = Field(256, ge=1, description="training sequences the SGLD minibatches come from")

    @model_validator(mode="after")
    def _source_fields(self):
        needs = {"files": ("files",), "hf": ("dataset",), "embedded": ()}[self.source]
        for name in needs:
            if not getattr(self, name):
                raise ValueError(f"source '{self.source}' needs `{name}`")
        foreign = {"files": ("files", "eval_files"), "hf": ("dataset", "dataset_config", "eval_split")}
        for source, names in foreign.items():
            for name in names:
                if source != self.source and getattr(self, name):
                    raise ValueError(f"`{name}` belongs to source '{source}', not '{self.source}'")
        return self


@dataclass
class TokenSets:
    eval: object  # LongTensor (eval_sequences, context_length), held-out text
    train: object  # LongTensor (llc_sequences, context_length), the text SGLD samples from


def token_blocks(token_ids, num_sequences: int, context_length: int):
    """`num_sequences` evenly spaced, non-overlapping blocks of `context_length` tokens."""
    import torch

    ids = torch.as_tensor(token_ids, dtype=torch.long)
    available = len(ids) // context_length
    if available < num_sequences:
        raise UserError(f"the text holds {available} blocks of {context_length} tokens, fewer than the "
                        f"{num_sequences} sequences asked for: lower num_sequences or context_length")
    blocks = ids[: available * context_length].view(available, context_length)
    picks = torch.linspace(0, available - 1, num_sequences).round().long()
    return blocks[picks].clone()


def token_sets(home: Path, tokenizer, data: DataConfig) -> TokenSets:
    """The fixed eval and LLC token sets of `data` under `tokenizer`, built once and cached."""
    import torch

    from mdl_slt.data.tokenizer import tokenizer_fingerprint

    if data.source == "embedded":
        return _embedded_sets(home, tokenizer, data)
    key = hashlib.sha256(json.dumps([tokenizer_fingerprint(tokenizer), data.model_dump(mode="json"),
                                     _source_fingerprint(data)]).encode()).hexdigest()[:20]
    path = home / "tokens" / f"{data.source}-{key}.pt"
    if path.exists():
        return TokenSets(**torch.load(path))
    separate = bool(data.eval_files or data.eval_split)
    if separate:
        sets = TokenSets(eval=_stream_blocks(_documents(data, held_out=True), tokenizer, data.eval_sequences, data),
                         train=_stream_blocks(_documents(data), tokenizer, data.llc_sequences, data))
    else:
        blocks = _stream_blocks(_documents(data), tokenizer, data.eval_sequences + data.llc_sequences, data)
        picks = torch.linspace(0, len(blocks) - 1, data.eval_sequences).round().long()
        rest = torch.ones(len(blocks), dtype=torch.bool)
        rest[picks] = False
        sets = TokenSets(eval=blocks[picks].clone(), train=blocks[rest].clone())
    _save(path, {"eval": sets.eval, "train": sets.train})
    return sets


def _embedded_sets(home: Path, tokenizer, data: DataConfig) -> TokenSets:
    from mdl_slt.data.corpus import load_corpus

    corpus = load_corpus(home)
    return TokenSets(eval=token_blocks(_cached_ids(home, "eval", corpus.eval, tokenizer), data.eval_sequences,
                                       data.context_length),
                     train=token_blocks(_cached_ids(home, "train", corpus.train, tokenizer), data.llc_sequences,
                                        data.context_length))


def _cached_ids(home: Path, split: str, text: str, tokenizer):
    """The token ids of one split of the embedded corpus under `tokenizer` (int32), tokenized once and
    cached: token sets of every size and context length are sliced from them."""
    import torch

    from mdl_slt.data.tokenizer import tokenizer_fingerprint

    key = hashlib.sha256(f"{tokenizer_fingerprint(tokenizer)}|{hashlib.sha256(text.encode()).hexdigest()}"
                         .encode()).hexdigest()[:20]
    path = home / "tokens" / f"{split}-ids-{key}.pt"
    if path.exists():
        return torch.load(path)
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.int32)
    _save(path, ids)
    return ids


def _save(path: Path, value) -> None:
    """Cache `value` at `path` atomically: workers building the same set at once each write their
    own temporary file, and the last rename wins (the content is the same)."""
    import torch

    from mdl_slt.home.files import replacing

    with replacing(path) as tmp:
        torch.save(value, tmp)


def _stream_blocks(documents: Iterator[str], tokenizer, num_sequences: int, data: DataConfig):
    """The first `num_sequences` blocks of the documents' tokens, each document ended by EOS."""
    import torch

    if tokenizer.eos_token_id is None:
        raise UserError("the model's tokenizer has no end-of-text token to separate documents")
    needed, ids = num_sequences * data.context_length, []
    for text in documents:
        ids.extend(tokenizer(text)["input_ids"])
        ids.append(tokenizer.eos_token_id)
        if len(ids) >= needed:
            return torch.tensor(ids[:needed], dtype=torch.long).view(num_sequences, data.context_length)
    raise UserError(f"the {data.source} data holds {len(ids) // data.context_length} blocks of "
                    f"{data.context_length} tokens, fewer than the {num_sequences} asked for: add text, or "
                    f"lower eval_sequences, llc_sequences or context_length")


def _documents(data: DataConfig, held_out: bool = False) -> Iterator[str]:
    if data.source == "files":
        return _file_documents(data.eval_files if held_out else data.files, data.text_field)
    return _dataset_documents(data, data.eval_split if held_out else data.split)


def _expand(patterns: list[str]) -> list[Path]:
    paths = []
    for pattern in patterns:
        found = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
        if not found:
            raise UserError(f"data file not found: {pattern} (give .txt or .jsonl paths or globs)")
        paths.extend(Path(p) for p in found)
    return paths


def _file_documents(patterns: list[str], text_field: str) -> Iterator[str]:
    """`.txt`: the file is one document; `.jsonl`: each line's `text_field`."""
    for path in _expand(patterns):
        if path.suffix == ".txt":
            yield path.read_text(encoding="utf-8")
        elif path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, 1):
                    if not line.strip():
                        continue
                    try:
                        yield json.loads(line)[text_field]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise UserError(f"{path}, line {number}: not a JSON object with a '{text_field}' "
                                        f"field (set data.text_field)") from None
        else:
            raise UserError(f"data file {path}: use .txt (one document) or .jsonl (one per line)")


def _dataset_documents(data: DataConfig, split: str) -> Iterator[str]:
    """Documents of a Hugging Face dataset split, streamed in order."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise UserError("reading a Hugging Face dataset needs the `datasets` package: "
                        "pip install 'mdl-slt[hub]'") from None
    from mdl_slt.home.hub import hub_reachable

    local = Path(data.dataset).expanduser()
    if not local.is_dir() and not hub_reachable():
        raise UserError(f"dataset {data.dataset} is not a local directory and the hub is unreachable "
                        f"(offline): go online, or use `source: files` with local .txt/.jsonl files")
    try:
        stream = load_dataset(str(local) if local.is_dir() else data.dataset, data.dataset_config,
                              split=split, streaming=True)
    except Exception as error:  # noqa: BLE001  datasets raises many kinds; the user gets one line
        raise UserError(f"cannot open dataset {data.dataset} (split {split}): "
                        f"{one_line(error)}") from None
    for row in stream:
        if data.text_field not in row:
            raise UserError(f"dataset {data.dataset} has no field '{data.text_field}' "
                            f"(fields: {', '.join(row)}): set data.text_field")
        yield row[data.text_field]


def _source_fingerprint(data: DataConfig) -> list:
    """What identifies the source's content beyond its settings: local files' sizes and times."""
    if data.source != "files":
        return []
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in _expand(data.files + data.eval_files)]
