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
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

from mdl_slt.data.corpus import load_corpus
from mdl_slt.home.hub import list_revisions, write_snapshot
from mdl_slt.home.paths import hub_cache
from mdl_slt.models.spec import SuiteModel, SuiteSpec, neox_config

MANIFEST = "suite.json"


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

    from mdl_slt.models.checkpoints import quiet_transformers

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
    from mdl_slt.home.files import locked

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

    from mdl_slt.data.tokenizer import save_tokenizer, train_bpe
    from mdl_slt.home.files import write_text

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
