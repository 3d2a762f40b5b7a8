"""From an experiment to units: one per checkpoint, with the identity of its bytes, its training
position and the weight groups its layer study measures; the device resolved before any work."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from mdl_slt.errors import UserError
from mdl_slt.home.hub import list_revisions
from mdl_slt.home.paths import hub_cache
from mdl_slt.models import pythia
from mdl_slt.models.checkpoints import CheckpointRef, checkpoint_identity
from mdl_slt.models.revisions import compile_pattern, hub_revisions, parse, training_position
from mdl_slt.plan.experiment import Experiment


@dataclass(frozen=True)
class Unit:
    ref: CheckpointRef
    step: int | None = None  # what the revision's name says; else the checkpoint's own metadata
    tokens_seen: int | None = None
    identity: str | None = None  # what names its bytes (`checkpoints.checkpoint_identity`)
    groups: tuple[str, ...] = ()  # the weight groups its layer study measures (`layers`)

    def __str__(self) -> str:
        return str(self.ref)


def resolve_device(experiment: Experiment) -> Experiment:
    """Fix `device: auto` before any work: Ray units get CUDA when they ask for GPUs; local ones
    when this machine has it. Asking for CUDA without one is a clear error."""
    if experiment.device != "auto":
        if experiment.device == "cuda" and experiment.executor == "local":
            from mdl_slt.compute.device import resolve_device as check

            check("cuda")
        return experiment
    if experiment.executor == "ray":
        return experiment.on("cuda" if experiment.gpus_per_unit > 0 else "cpu")
    from mdl_slt.compute.device import resolve_device as local

    return experiment.on(local("auto"))


def plan(experiment: Experiment, home: Path) -> list[Unit]:
    """One unit per (model, revision), with the identity of its bytes; `all` means every revision
    in the cache, or, for a suite model not built yet, every revision the suite will have; a hub
    schedule lists the repository's revisions and keeps those whose names give a step in range."""
    from mdl_slt.models.spec import SuiteSpec

    spec = SuiteSpec()
    future = {spec.model_id(m): [f"step{s}" for s in spec.schedule()] for m in spec.all_models()}
    units = []
    for entry in experiment.models:
        if entry.revision_pattern is not None:
            compile_pattern(entry.revision_pattern)  # a bad pattern is refused before any work
        revisions = entry.listed_revisions()
        if revisions is None and entry.steps is not None:  # schedule: hub
            found = [r for r in (parse(n, entry.revision_pattern)
                                 for n in hub_revisions(entry.id, home)) if r is not None]
            revisions = [r.name for r in sorted(found, key=lambda r: r.step) if entry.steps.keeps(r.step)]
            if not revisions:
                raise UserError(f"no revision of {entry.id} names a step in [{entry.steps.start}, "
                                f"{entry.steps.stop if entry.steps.stop is not None else '…'}] (found {len(found)} "
                                "named by step): check the range, or set `revision_pattern`")
        if revisions is None:
            if Path(entry.id).is_dir():
                units.append(Unit(CheckpointRef(entry.id)))
                continue
            revisions = list_revisions(hub_cache(home), entry.id) or future.get(entry.id, [])
            if not revisions:
                raise UserError(f"no revisions of {entry.id} in the local cache: list them under "
                                f"`revisions:` or `steps:` in the experiment file, or build the suite "
                                f"(`mdl-slt suite build`)")
        for revision in revisions:
            pythia.check_revision(entry.id, revision)
        units.extend(unit_of(entry, r) for r in revisions)
    return [replace(u, identity=checkpoint_identity(u.ref, home), groups=layer_groups(experiment, u, home))
            for u in units]


def layer_groups(experiment: Experiment, unit: Unit, home: Path) -> tuple[str, ...]:
    """The weight groups the layer study measures on `unit` (none where it is not among the
    checkpoints the study takes), read from the checkpoint's architecture without its weights."""
    if not experiment.layers_at(unit.ref.model_id, unit.ref.revision):
        return ()
    from mdl_slt.models.checkpoints import group_names

    names = group_names(unit.ref, home)
    wanted = experiment.layers.groups
    if wanted == "all":
        return tuple(names)
    unknown = [g for g in wanted if g not in names]
    if unknown:
        raise UserError(f"layers.groups names {', '.join(map(repr, unknown))}, which {unit.ref.model_id} does not have: "
                        f"its groups are {', '.join(names)}")
    return tuple(g for g in names if g in wanted)


def unit_of(entry, revision: str) -> Unit:
    """The unit of one revision, with the step and tokens seen its name gives."""
    step, tokens = training_position(entry.id, revision, entry.revision_pattern, entry.tokens_per_step)
    return Unit(CheckpointRef(entry.id, revision), step, tokens)
