"""Checkpoint suites published as hub revisions: what a revision's name says of its training.

A naming scheme is a regular expression with a named group `step` and optionally `tokens` (with
an optional unit K, M, B or T after it). Known schemes:

    pythia   step<N>                                    (Pythia, the embedded suite)
    olmo     [stage<k>-][ingredient<i>-]step<N>[-tokens<M><unit>]   (OLMo, OLMo-2, LLM360-style)

`revision_pattern` in an experiment's model entry adds the user's own. Tokens seen, the n of
λ̂·log n, come from the name where it says, else from steps × `tokens_per_step` (Pythia's is
known: 1,024 × 2,048).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mdl_slt.errors import UserError, one_line

SCHEMES = {
    "pythia": r"^step(?P<step>\d+)$",
    "olmo": r"^(?:stage\d+-)?(?:ingredient\d+-)?step(?P<step>\d+)(?:-tokens(?P<tokens>\d+(?:\.\d+)?)(?P<unit>[KMBT]?))?$",
}
UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


@dataclass(frozen=True)
class Revision:
    name: str
    step: int
    tokens: int | None  # as the name says


def compile_pattern(pattern: str):
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise UserError(f"revision_pattern {pattern!r} is not a regular expression: {error}") from None
    if "step" not in compiled.groupindex:
        raise UserError(f"revision_pattern {pattern!r} needs a named group (?P<step>...) for the training step")
    return compiled


def parse(name: str, pattern: str | None = None) -> Revision | None:
    """What `name` says of its training, by the given pattern or the first known scheme it fits."""
    for candidate in ([pattern] if pattern else SCHEMES.values()):
        match = compile_pattern(candidate).fullmatch(name)
        if match:
            groups = match.groupdict()
            tokens = groups.get("tokens")
            count = round(float(tokens) * UNITS[groups.get("unit") or ""]) if tokens else None
            return Revision(name, int(groups["step"]), count)
    return None


def training_position(model_id: str, revision: str | None, pattern: str | None = None,
                      tokens_per_step: int | None = None) -> tuple[int | None, int | None]:
    """(step, tokens seen) as a revision's name gives them, the one reading of a name for runs and
    one-shot commands alike: tokens from the name where it says, else step × `tokens_per_step`
    (Pythia's is known); (None, None) for a name that gives no step."""
    from mdl_slt.models import pythia

    named = parse(revision, pattern) if revision else None
    if named is None:
        return None, None
    per_step = tokens_per_step or (pythia.TOKENS_PER_STEP if pythia.size_of(model_id) else None)
    return named.step, named.tokens if named.tokens is not None else (named.step * per_step if per_step else None)


def hub_revisions(model_id: str, home) -> list[str]:
    """A repository's revisions: from the hub's branches when it answers, else from the local caches
    (the suite's and the user's Hugging Face cache)."""
    from huggingface_hub import constants

    from mdl_slt.home.hub import hub_reachable, list_revisions
    from mdl_slt.home.paths import hub_cache

    if hub_reachable():
        from huggingface_hub import list_repo_refs

        try:
            return [branch.name for branch in list_repo_refs(model_id).branches]
        except Exception as error:  # noqa: BLE001  the hub's client raises many kinds
            raise UserError(f"cannot list the revisions of {model_id} on the hub: {one_line(error)}") \
                from None
    return list_revisions(hub_cache(home), model_id) or list_revisions(Path(constants.HF_HUB_CACHE), model_id)
