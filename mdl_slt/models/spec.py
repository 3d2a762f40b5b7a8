"""The embedded suite's specification: its runs (three sizes, and variants of the smallest trained
otherwise), the shared training settings, the checkpoint schedule and each run's GPT-NeoX
configuration. What a run's bytes depend on is here, so its layout is known before it is built
(`mdl-slt validate` on an empty home); `suite.py` trains it."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

ORG = "mdl-slt"


@dataclass(frozen=True)
class SuiteModel:
    """One training run: an architecture, and the training settings where they differ from the
    spec's (None: the spec's). `data_tokens` limits the run to the first N training tokens, which
    it then sees many times."""

    name: str
    layers: int
    hidden: int
    heads: int
    learning_rate: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    data_tokens: int | None = None
    seed: int | None = None

    def overrides(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in TRAINING and v is not None}


TRAINING = ("learning_rate", "weight_decay", "batch_size", "data_tokens", "seed")


def _variant(suffix: str, **training) -> SuiteModel:
    return SuiteModel(f"micro-pythia-90k-{suffix}", layers=2, hidden=32, heads=4, **training)


# Runs of the 90k architecture trained otherwise: candidates for checkpoints at which λ̂ and the
# held-out loss part (docs/science.md, "Training variants"). Built only when an experiment names one.
VARIANTS = (
    _variant("wd0.1", weight_decay=0.1), _variant("wd1", weight_decay=1.0),
    _variant("lr6e-4", learning_rate=6e-4), _variant("lr6e-3", learning_rate=6e-3),
    _variant("b4", batch_size=4), _variant("b64", batch_size=64),
    _variant("data64k", data_tokens=65_536), _variant("data256k", data_tokens=262_144),
    _variant("seed1", seed=1),
)


@dataclass(frozen=True)
class SuiteSpec:
    """Everything that determines the suite's bytes: shared training settings, the runs of three
    sizes, and variants of the smallest trained otherwise. Each run's fingerprint keys its build."""

    models: tuple[SuiteModel, ...] = (
        SuiteModel("micro-pythia-90k", layers=2, hidden=32, heads=4),
        SuiteModel("micro-pythia-230k", layers=2, hidden=64, heads=4),
        SuiteModel("micro-pythia-530k", layers=3, hidden=96, heads=4),
    )
    vocab_size: int = 1024
    context_length: int = 128
    batch_size: int = 16
    train_steps: int = 1000
    evenly_spaced: int = 20
    learning_rate: float = 2e-3
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    data_tokens: int | None = None
    variants: tuple[SuiteModel, ...] = VARIANTS
    tags: tuple[str, ...] = field(default=())

    def model_id(self, model: SuiteModel) -> str:
        return f"{ORG}/{model.name}"

    def all_models(self) -> tuple[SuiteModel, ...]:
        return self.models + self.variants

    def find(self, names) -> tuple[SuiteModel, ...]:
        """The runs named by model id or name, in the spec's order."""
        wanted = {n.removeprefix(f"{ORG}/") for n in names}
        return tuple(m for m in self.all_models() if m.name in wanted)

    def setting(self, model: SuiteModel, name: str):
        """A training setting of one run: its override, else the spec's."""
        value = getattr(model, name)
        return getattr(self, name) if value is None else value

    def schedule(self) -> list[int]:
        """Pythia-like checkpoint steps: 0, then powers of two below the spacing, then evenly spaced."""
        spacing = self.train_steps / self.evenly_spaced
        steps = {0} | {2**k for k in range(int(math.log2(max(spacing, 1))) + 1) if 2**k < spacing}
        steps |= {round(spacing * i) for i in range(1, self.evenly_spaced + 1)}
        return sorted(steps)

    def fingerprint(self, model: SuiteModel) -> str:
        """What determines one run's bytes: the shared settings and the run's own."""
        import hashlib

        shared = {k: v for k, v in asdict(self).items() if k not in ("models", "variants", "tags")}
        return hashlib.sha256(json.dumps([shared, asdict(model)], sort_keys=True).encode()).hexdigest()[:16]


def neox_config(spec: SuiteSpec, model: SuiteModel):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=spec.vocab_size, hidden_size=model.hidden, num_hidden_layers=model.layers,
        num_attention_heads=model.heads, intermediate_size=4 * model.hidden,
        rotary_pct=0.25, max_position_embeddings=spec.context_length,
        use_parallel_residual=True, tie_word_embeddings=False, hidden_dropout=0.0,
        attention_dropout=0.0, bos_token_id=0, eos_token_id=0,
    )
