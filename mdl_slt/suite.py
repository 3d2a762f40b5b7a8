"""The embedded micro-Pythia suite: GPT-NeoX models in Pythia's style, trained here on Shakespeare.

Pythia's recipe at toy scale: rotary embeddings on 25% of each head's dimensions, parallel
attention + MLP residual, untied unembedding, no dropout; AdamW with linear warm-up and cosine
decay; checkpoints at step 0, 1, 2, 4, ... and then evenly spaced to the end. Every checkpoint
is a revision `step<N>` of `mdl-slt/<name>` in the hub-cache layout under `<home>/hub`.
"""

from __future__ import annotations

import json
import math
import queue
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

from mdl_slt.corpus import load_corpus
from mdl_slt.home import hub_cache
from mdl_slt.hubcache import list_revisions, write_snapshot

ORG = "mdl-slt"
MANIFEST = "suite.json"


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


def learning_rate(spec: SuiteSpec, step: int, peak: float | None = None) -> float:
    """Linear warm-up to `peak` (the spec's by default), then cosine decay to `min_lr_ratio` of it
    at the last step."""
    peak = spec.learning_rate if peak is None else peak
    warmup = max(1, round(spec.warmup_fraction * spec.train_steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, spec.train_steps - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return peak * (spec.min_lr_ratio + (1 - spec.min_lr_ratio) * cosine)


def save_checkpoint(spec: SuiteSpec, model: SuiteModel, net, tokenizer_dir: Path, cache_dir: Path,
                    step: int, train_loss: float | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp)
        net.save_pretrained(files)
        for item in tokenizer_dir.iterdir():
            shutil.copy(item, files / item.name)
        tokens = step * spec.setting(model, "batch_size") * spec.context_length
        meta = {"step": step, "tokens_seen": tokens, "train_loss": train_loss,
                "suite_fingerprint": spec.fingerprint(model), "training": model.overrides()}
        (files / "mdl_slt.json").write_text(json.dumps(meta, indent=1))
        write_snapshot(cache_dir, spec.model_id(model), f"step{step}", files)


def train_model(spec: SuiteSpec, model: SuiteModel, train_tokens, tokenizer_dir: Path,
                cache_dir: Path, progress=None) -> str:
    """Train one suite run, saving each scheduled checkpoint. Deterministic given the spec."""
    import torch
    from transformers import GPTNeoXForCausalLM

    from mdl_slt.checkpoints import quiet_transformers

    torch.set_num_threads(1)
    quiet_transformers()
    seed, batch_size, peak = (spec.setting(model, k) for k in ("seed", "batch_size", "learning_rate"))
    data_tokens = spec.setting(model, "data_tokens")
    if data_tokens is not None:
        train_tokens = train_tokens[:data_tokens]
    torch.manual_seed(seed)
    net = GPTNeoXForCausalLM(neox_config(spec, model)).float()
    optimizer = torch.optim.AdamW(net.parameters(), lr=peak, betas=(0.9, 0.95),
                                  weight_decay=spec.setting(model, "weight_decay"))
    batches = torch.Generator().manual_seed(seed + 1)
    checkpoints = set(spec.schedule())
    windows = len(train_tokens) - spec.context_length - 1
    loss_value = None
    for step in range(spec.train_steps + 1):
        if step in checkpoints:
            net.eval()
            save_checkpoint(spec, model, net, tokenizer_dir, cache_dir, step, loss_value)
            net.train()
        if progress is not None:
            progress.put((model.name, step))
        if step == spec.train_steps:
            break
        starts = torch.randint(windows, (batch_size,), generator=batches)
        batch = torch.stack([train_tokens[s:s + spec.context_length] for s in starts.tolist()])
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(spec, step, peak)
        loss = net(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        loss_value = float(loss.detach())
    return spec.model_id(model)


def _train_with_bars(spec, ordered, pool, ctx, console, train_tokens, tokenizer_dir, cache_dir) -> None:
    """Train the models in `pool`, a progress bar per model on the terminal."""
    from rich.progress import Progress

    with ctx.Manager() as manager, Progress(console=console, transient=False) as bars, pool:
        updates = manager.Queue()
        tasks = {m.name: bars.add_task(f"train {m.name}", total=spec.train_steps) for m in ordered}
        futures = [pool.submit(train_model, spec, m, train_tokens, tokenizer_dir, cache_dir, updates) for m in ordered]
        while not all(f.done() for f in futures):
            try:
                name, step = updates.get(timeout=0.2)
                bars.update(tasks[name], completed=step)
            except queue.Empty:
                pass
        for f in futures:
            f.result()
        for name in tasks:
            bars.update(tasks[name], completed=spec.train_steps)


def read_manifest(home: Path) -> dict:
    path = home / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def missing(home: Path, spec: SuiteSpec, models=None) -> tuple[SuiteModel, ...]:
    """The runs among `models` (default: the spec's sizes) not built with their current settings."""
    built = read_manifest(home).get("built", {})
    return tuple(m for m in (spec.models if models is None else models) if built.get(m.name) != spec.fingerprint(m))


def build_suite(home: Path, spec: SuiteSpec = SuiteSpec(), models=None, workers: int = 2, force: bool = False,
                console=None) -> dict:
    """Train the runs `models` (default: the spec's sizes; variants only when asked for) that are
    not built with their current settings; a later call returns the manifest without work.
    Processes that build at once on one home take turns (a lock), and each trains only what the
    ones before it left missing."""
    from mdl_slt.files import locked

    models = spec.models if models is None else tuple(models)
    if not force and not missing(home, spec, models):
        return read_manifest(home)
    with locked(home / MANIFEST):
        todo = models if force else missing(home, spec, models)
        if todo:
            _build(home, spec, todo, workers, console)
    return read_manifest(home)


def _build(home: Path, spec: SuiteSpec, todo: tuple[SuiteModel, ...], workers: int, console) -> None:
    """Train the runs `todo` and add them to the manifest (holding the suite's lock)."""
    import torch

    from mdl_slt.files import write_text
    from mdl_slt.tokenizer import save_tokenizer, train_bpe

    corpus = load_corpus(home)
    tokenizer = train_bpe(corpus.train, spec.vocab_size)
    tokenizer_dir = home / "suite-tokenizer"
    save_tokenizer(tokenizer, tokenizer_dir)
    train_tokens = torch.tensor(tokenizer(corpus.train)["input_ids"], dtype=torch.long)
    cache_dir = hub_cache(home)
    ordered = sorted(todo, key=lambda m: -m.layers * m.hidden**2 * spec.setting(m, "batch_size"))  # longest first
    ctx = get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=max(1, min(workers, len(ordered))), mp_context=ctx)
    if console is not None and console.is_terminal:
        _train_with_bars(spec, ordered, pool, ctx, console, train_tokens, tokenizer_dir, cache_dir)
    else:  # a log: one plain line per model trained (nothing at all without a console)
        from concurrent.futures import as_completed

        from mdl_slt.progress import Tracker

        with pool:
            futures = {pool.submit(train_model, spec, m, train_tokens, tokenizer_dir, cache_dir): m for m in ordered}
            tracker = Tracker(console, "suite models", len(ordered)) if console is not None else None
            for future in as_completed(futures):
                future.result()
                if tracker is not None:
                    tracker.step(f"trained {futures[future].name} ({len(spec.schedule())} checkpoints)")
    manifest = read_manifest(home)
    built = {**manifest.get("built", {}), **{m.name: spec.fingerprint(m) for m in todo}}
    ids = [spec.model_id(m) for m in spec.all_models() if m.name in built]
    manifest = {
        "built": built,
        "spec": asdict(spec),
        "models": {i: list_revisions(cache_dir, i) for i in ids},
        "train_tokens": len(train_tokens),
        "train_plays": list(corpus.train_plays),
        "eval_plays": list(corpus.eval_plays),
    }
    write_text(home / MANIFEST, json.dumps(manifest, indent=1))
