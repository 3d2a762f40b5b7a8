"""Checkpoint references (`MODEL_ID@REVISION` or a local directory) and the one loader for all of them.

Resolution order for `ORG/NAME@REV`: the embedded suite's hub cache under the mdl-slt home,
then the user's Hugging Face cache, then the hub itself when it is reachable.
Models load in fp32 (never fp16: its rounding would hide small compressions) in eval mode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mdl_slt.errors import UserError, one_line
from mdl_slt.home.hub import hub_reachable
from mdl_slt.home.paths import hub_cache
from mdl_slt.models import pythia
from mdl_slt.models.revisions import training_position


@dataclass(frozen=True)
class CheckpointRef:
    model_id: str
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> "CheckpointRef":
        text = text.strip()
        if not text:
            raise UserError("empty checkpoint reference: write MODEL_ID@REVISION (e.g. "
                            "EleutherAI/pythia-70m@step3000) or a local directory")
        if Path(text).expanduser().is_dir():
            return cls(str(Path(text).expanduser()))
        model_id, _, revision = text.partition("@")
        if not model_id or (_ and not revision):
            raise UserError(f"malformed checkpoint reference {text!r}: write MODEL_ID@REVISION "
                            "(e.g. EleutherAI/pythia-70m@step3000) or a local directory")
        return cls(model_id, revision or None)

    @property
    def is_local_dir(self) -> bool:
        return self.revision is None and Path(self.model_id).is_dir()

    def __str__(self) -> str:
        return self.model_id if self.revision is None else f"{self.model_id}@{self.revision}"


@dataclass
class Checkpoint:
    ref: CheckpointRef
    model: object  # a transformers causal LM, in eval mode, fp32
    tokenizer: object
    step: int | None
    tokens_seen: int | None

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def quiet_transformers() -> None:
    import huggingface_hub
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    huggingface_hub.utils.disable_progress_bars()
    huggingface_hub.utils.logging.set_verbosity_error()


def checkpoint_identity(ref: CheckpointRef, home: Path) -> str | None:
    """What names a checkpoint's bytes, without loading it: for a local directory, `sha256:` of its
    files' names and contents; for `ORG/NAME@REV`, the snapshot's commit hash in the first hub
    cache that has the revision (the suite's, then the user's), else the hub's answer when it is
    reachable; None when nothing can tell (the checkpoint cannot be loaded either)."""
    import hashlib

    if ref.is_local_dir:
        digest = hashlib.sha256()
        for path in sorted(p for p in Path(ref.model_id).iterdir() if p.is_file() and not p.name.startswith(".")):
            content = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 24):
                    content.update(chunk)
            digest.update(f"{path.name}:{content.hexdigest()}\n".encode())
        return f"sha256:{digest.hexdigest()}"
    from huggingface_hub import constants

    from mdl_slt.home.hub import repo_folder

    revision = ref.revision or "main"
    for cache in (hub_cache(home), Path(constants.HF_HUB_CACHE)):
        repo = repo_folder(cache, ref.model_id)
        if (repo / "refs" / revision).is_file():
            return (repo / "refs" / revision).read_text().strip()
        if (repo / "snapshots" / revision).is_dir():  # the revision is a commit hash
            return revision
    if hub_reachable():
        from huggingface_hub import HfApi

        try:
            return HfApi().model_info(ref.model_id, revision=revision).sha
        except Exception:  # noqa: BLE001  no such model or revision: loading it will say so
            return None
    return None


def check_suite_revision(ref: CheckpointRef, home: Path) -> None:
    """A model of the built suite asked for at a revision it does not have: one line listing the ones it has."""
    from mdl_slt.home.hub import list_revisions

    known = [] if ref.is_local_dir or ref.revision is None else list_revisions(hub_cache(home), ref.model_id)
    if known and ref.revision not in known:
        raise UserError(f"{ref.model_id} has no revision {ref.revision}: the suite holds {', '.join(known)} "
                        "(`mdl-slt suite list`)")


def _sources(ref: CheckpointRef, home: Path):
    """Keyword sets for from_pretrained, cheapest first: the suite cache, the user's cache, the hub."""
    if ref.is_local_dir:
        yield {"pretrained_model_name_or_path": ref.model_id}
        return
    base = {"pretrained_model_name_or_path": ref.model_id, "revision": ref.revision}
    yield {**base, "cache_dir": str(hub_cache(home)), "local_files_only": True}
    yield {**base, "local_files_only": True}
    if hub_reachable():
        yield base
    else:
        raise UserError(f"cannot load checkpoint '{ref}': it is in no local cache and the hub is "
                        "unreachable (offline) — check the name and revision, build the embedded suite "
                        "with `mdl-slt suite build`, or go online")


def load_checkpoint(ref: CheckpointRef | str, home: Path, device: str = "cpu") -> Checkpoint:
    """Load model and tokenizer for `ref` in fp32, eval mode; one clear UserError if impossible."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = CheckpointRef.parse(ref) if isinstance(ref, str) else ref
    pythia.check_revision(ref.model_id, ref.revision)
    check_suite_revision(ref, home)
    quiet_transformers()
    last_error = None
    for kwargs in _sources(ref, home):
        try:
            model = AutoModelForCausalLM.from_pretrained(**kwargs, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(**kwargs)
        except (OSError, ValueError) as error:  # not in this source: try the next
            last_error = error
            continue
        except Exception as error:  # noqa: BLE001  found but unreadable (e.g. a truncated safetensors file)
            raise UserError(f"checkpoint '{ref}' is corrupt or incomplete ({type(error).__name__}: "
                            f"{one_line(error)}): download or copy it again") from None
        model.to(device).eval()
        step, tokens = training_position(ref.model_id, ref.revision)
        if step is None or tokens is None:  # the name does not say: the suite's metadata, else Pythia's rate
            meta = _suite_metadata(ref, home)
            step = step if step is not None else meta.get("step")
            tokens = tokens if tokens is not None else meta.get("tokens_seen", pythia.tokens_seen(ref.model_id, step))
        return Checkpoint(ref, model, tokenizer, step, tokens)
    reason = one_line(last_error) if last_error else "unknown error"
    raise UserError(f"cannot load checkpoint '{ref}': {reason} — check the name and revision, "
                    f"build the embedded suite with `mdl-slt suite build`, or go online for the hub")


def architecture(ref: CheckpointRef, home: Path):
    """A checkpoint's transformers configuration, from the same sources as its weights, reading no
    weight; for a run of the embedded suite not built yet, from the suite's spec."""
    from transformers import AutoConfig

    from mdl_slt.home.hub import list_revisions
    from mdl_slt.models.spec import SuiteSpec, neox_config

    quiet_transformers()
    spec = SuiteSpec()
    run = spec.find([ref.model_id]) if not ref.is_local_dir else ()
    if run and not list_revisions(hub_cache(home), ref.model_id):
        return neox_config(spec, run[0])
    for kwargs in _sources(ref, home):
        try:
            return AutoConfig.from_pretrained(**kwargs)
        except (OSError, ValueError):  # not in this source: try the next
            continue
    raise UserError(f"cannot read the configuration of '{ref}': check the name and revision, build the embedded "
                    "suite with `mdl-slt suite build`, or go online for the hub")


def group_names(ref: CheckpointRef, home: Path) -> list[str]:
    """The weight groups of a checkpoint's architecture (compressors.groups), from its configuration
    alone: the model is built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    from compressors.groups import weight_groups

    config = architecture(ref, home)
    with torch.device("meta"):
        return [g.name for g in weight_groups(AutoModelForCausalLM.from_config(config))]


def _suite_metadata(ref: CheckpointRef, home: Path) -> dict:
    """The suite's `mdl_slt.json` beside the weights (step, tokens seen), or {} for other models."""
    from huggingface_hub import try_to_load_from_cache

    if ref.is_local_dir:
        path = Path(ref.model_id) / "mdl_slt.json"
    else:
        found = try_to_load_from_cache(ref.model_id, "mdl_slt.json", cache_dir=str(hub_cache(home)),
                                       revision=ref.revision)
        path = Path(found) if isinstance(found, str) else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}
