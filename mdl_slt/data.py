"""Fixed token sets: every checkpoint of a run sees identical tokens.

A split's text is tokenized once with the model's tokenizer, cut into contiguous blocks of
`context_length` tokens, and `num_sequences` blocks are taken evenly spaced across it (no
randomness, so the set is a pure function of text, tokenizer and sizes). The result is cached
under the home, keyed by those inputs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mdl_slt.errors import UserError


@dataclass(frozen=True)
class TokenSetSpec:
    split: str  # "train" or "eval"
    num_sequences: int
    context_length: int


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


def cached_token_set(home: Path, text: str, tokenizer, spec: TokenSetSpec):
    import torch

    from mdl_slt.tokenizer import tokenizer_fingerprint

    key = hashlib.sha256(
        f"{tokenizer_fingerprint(tokenizer)}|{hashlib.sha256(text.encode()).hexdigest()}|"
        f"{spec.num_sequences}|{spec.context_length}".encode()
    ).hexdigest()[:20]
    path = home / "tokens" / f"{spec.split}-{key}.pt"
    if path.exists():
        return torch.load(path)
    ids = tokenizer(text)["input_ids"]
    tokens = token_blocks(ids, spec.num_sequences, spec.context_length)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(tokens, tmp)
    tmp.replace(path)
    return tokens
