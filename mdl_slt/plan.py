"""From an experiment to work: one unit per checkpoint, and the tasks each unit owes the store.

Tasks per checkpoint: `base_loss`, `llc`, and `critical:<id>` per compressor entry; with
`llc.step_size: auto`, one `step_size` task per model first (at its latest planned checkpoint),
run through the executor like the others, so the driver never loads a model; with a `layers`
section, on the checkpoints it takes, per weight group `llc@<group>` (the refined λ̂) and
`critical:<id>@<group>` (an entry restricted to the group); with a `sensitivity` section,
`measure:<name>` per measure (hawq per entry: `measure:hawq:<id>`); with an `allocation` section,
`allocation:<id>` per entry, last, reading the measures its methods need. A task's config
hash covers only what its result depends on:

    step_size      the model, data, sampler settings, device
    base_loss      data, loss numerics, device
    llc            data, sampler settings (numerics included; with `step_size: auto`, the step
                   chosen for the model), device
    critical:<id>  data, the entry's compressor and options (defaults filled in), its search
                   precision, the ε list, loss numerics, device
    llc@<group>, critical:<id>@<group>  as llc and critical:<id>, the group's tolerance rule for the
                   latter; the group itself is in the task's name and key
    measure:<name>  the measure's own settings, the data where it reads any, device (hawq: and the
                   entry's compressor)
    allocation:<id>  its settings, the entry's compressor, loss numerics, and the config hashes of the
                   measures it reads

each with the measurement version, so adding or editing one compressor entry never re-measures
another, and rows measured on a CPU never merge with rows measured under bf16 on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mdl_slt import pythia
from mdl_slt.checkpoints import CheckpointRef, checkpoint_identity
from mdl_slt.errors import UserError
from mdl_slt.experiment import Experiment, variation_name
from mdl_slt.home import hub_cache
from mdl_slt.hubcache import list_revisions
from mdl_slt.keys import config_hash, task_key
from mdl_slt.revisions import compile_pattern, hub_revisions, parse, training_position

# Bumped whenever a change to the code changes what a measurement returns or how it is keyed
# (rtn's even level counts in 0.2; per-task keys, numerics and the LLC trace in 0.3; the range
# fit's larger sample, exact on groups up to 69,632 weights, in 5; checkpoint identities in the
# keys in 6), so stores never mix results of different methods under one key.
MEASUREMENT_VERSION = 6
# The held-out loss evaluations' own version, in the keys of base losses and critical searches only
# (their LLCs are kept): 2 since they keep per-sequence losses and each critical value's standard error.
LOSS_VERSION = 2


@dataclass(frozen=True)
class Unit:
    ref: CheckpointRef
    step: int | None = None  # what the revision's name says; else the checkpoint's own metadata
    tokens_seen: int | None = None
    identity: str | None = None  # what names its bytes (`checkpoints.checkpoint_identity`)
    groups: tuple[str, ...] = ()  # the weight groups its layer study measures (`layers`)

    def __str__(self) -> str:
        return str(self.ref)


@dataclass(frozen=True)
class Task:
    name: str  # base_loss | llc | critical:<entry id> | llc@<group> | critical:<entry id>@<group> | …
    kind: str  # base_loss | llc | critical | llc_robust | step_size | llc_group | critical_group
    config_hash: str
    key: str
    entry: str | None = None  # the compressor entry's id, for critical tasks
    group: str | None = None  # the weight group, for the layer study's tasks
    needs: tuple[str, ...] = ()  # names of the unit's tasks whose rows it reads (an allocation's measures)
    inputs: tuple = ()  # (name, rows) of those measured before this run, from the store


def resolve_device(experiment: Experiment) -> Experiment:
    """Fix `device: auto` before any work: Ray units get CUDA when they ask for GPUs; local ones
    when this machine has it. Asking for CUDA without one is a clear error."""
    if experiment.device != "auto":
        if experiment.device == "cuda" and experiment.executor == "local":
            from mdl_slt.device import resolve_device as check

            check("cuda")
        return experiment
    if experiment.executor == "ray":
        return experiment.on("cuda" if experiment.gpus_per_unit > 0 else "cpu")
    from mdl_slt.device import resolve_device as local

    return experiment.on(local("auto"))


class Tasks:
    """The tasks of every unit of a device-resolved experiment, with their settings and hashes."""

    def __init__(self, experiment: Experiment):
        if experiment.device == "auto":
            raise ValueError("Tasks needs an experiment whose device is resolved (plan.resolve_device)")
        self.experiment = experiment
        common = {"data": experiment.data.model_dump(mode="json"), "device": experiment.device,
                  "measurement_version": MEASUREMENT_VERSION}
        self.settings = {
            "base_loss": ("base_loss", {**common, "numerics": experiment.critical.numerics,
                                        "loss_version": LOSS_VERSION}),
            "llc": ("llc", {**common, "llc": experiment.llc.model_dump(mode="json")}),
        }
        for entry in experiment.critical.compressors:
            method = entry.build()
            options = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(method).items()
                       if not (k == "groups" and v is None)}  # the whole model: keyed as before groups existed
            self.settings[f"critical:{entry.key}"] = ("critical", {
                **common, "compressor": {"name": entry.name, "options": options,
                                         "precision": entry.search_precision(method)},
                "epsilons": experiment.critical.epsilons, "numerics": experiment.critical.numerics,
                "loss_version": LOSS_VERSION})
        self.hashes = {name: config_hash(settings) for name, (_, settings) in self.settings.items()}
        self.llc_by_model = {}  # model → (settings, hash) where `step_size: auto` chose the model's step
        for model, step in experiment.llc_steps.items():
            settings = {**common, "llc": experiment.llc_for(model).model_dump(mode="json"), "step_size_rule": "auto"}
            self.llc_by_model[model] = (settings, config_hash(settings))

        self.robust = {}  # model → {task name: (settings, hash)} of λ̂ at each varied sampler setting
        for entry in experiment.models:
            if experiment.llc_for(entry.id).step_size == "auto":
                continue  # its step is chosen first; the varied settings multiply the chosen one
            self.robust[entry.id] = {}
            for parameter, multiplier in experiment.robustness.variations():
                settings = {**common, "llc": experiment.varied_llc(entry.id, parameter, multiplier).model_dump(mode="json"),
                            "variation": {"parameter": parameter, "multiplier": multiplier}}
                name = f"llc_robust:{variation_name(parameter, multiplier)}"
                self.robust[entry.id][name] = (settings, config_hash(settings))

        self.layer = {}  # model → {task name: (kind, settings, hash)} of the layer study, per weight group
        self.layer_methods = {e.key: e.build() for e in experiment.layer_entries()} if experiment.layers.groups else {}
        for entry in experiment.models if experiment.layers.groups else []:
            own = {"llc_group": ("llc_group", {**common, "llc": experiment.llc_for(entry.id).model_dump(mode="json"),
                                               "sampled": "one weight group"})}
            for key in self.layer_methods:
                own[f"critical_group:{key}"] = ("critical_group", {**self.settings[f"critical:{key}"][1],
                                                                   "tolerance": experiment.layers.tolerance})
            self.layer[entry.id] = {name: (kind, settings, config_hash(settings)) for name, (kind, settings) in own.items()}

        self.measures = {}  # task name → (settings, hash): `measure:<name>`, hawq per entry `measure:hawq:<id>`
        for name in experiment.sensitivity.measures:
            self.measures.update(self._measure_settings(name, common))

        self.allocation = {}  # model → {task name: (settings, hash)}: `allocation:<id>` per entry
        for entry in experiment.models if experiment.allocation.compressors else []:
            self.allocation[entry.id] = {f"allocation:{key}": self._allocation_settings(entry.id, key, common)
                                         for key in experiment.allocation.compressors}

        self.step_size = {}  # model → (settings, hash) of its `step_size` task, with `step_size: auto`
        if experiment.llc.step_size == "auto":
            for entry in experiment.models:
                settings = {"resolve": "step_size", "model": entry.id, "data": common["data"],
                            "llc": experiment.llc.model_dump(mode="json"), "device": experiment.device}
                self.step_size[entry.id] = (settings, config_hash(settings))

    def _measure_settings(self, name: str, common: dict) -> dict:
        """The task(s) of sensitivity measure `name`, with what its result depends on: its own settings,
        the data where it reads any, and for hawq each entry's compressor."""
        from mdl_slt.sensitivity import MEASURES

        measure = MEASURES[name]
        chosen = self.experiment.sensitivity.model_dump(mode="json", include=set(measure.settings))
        settings = {k: v for k, v in common.items() if k != "data" or measure.data} | {"measure": name, **chosen}
        if not self.experiment.measured_per_group(name):  # the whole model alone (per-group tasks keep their keys)
            settings["groups"] = "none"
        if name != "hawq":
            return {f"measure:{name}": (settings, config_hash(settings))}
        found = {}
        for entry in self.experiment.hawq_entries():
            own = {**settings, "compressor": self.settings[f"critical:{entry.key}"][1]["compressor"]}
            found[f"measure:hawq:{entry.key}"] = (own, config_hash(own))
        return found

    def _allocation_settings(self, model: str, key: str, common: dict) -> tuple[dict, str]:
        """An allocation's settings: its own, the entry's compressor, and the config hashes of the
        measures it reads, so a new sampler or measure setting allocates again."""
        chosen = self.experiment.allocation
        needs = {name: (self.layer[model]["llc_group"][2] if name == "llc@" else self.measures[name][1])
                 for name in self.experiment.allocation_needs()}
        settings = {**common, "compressor": self.settings[f"critical:{key}"][1]["compressor"],
                    "methods": chosen.methods, "epsilons": chosen.epsilons or self.experiment.critical.epsilons,
                    "grid": chosen.grid, "range": chosen.ranges.get(key), "numerics": self.experiment.critical.numerics,
                    "loss_version": LOSS_VERSION, "needs": needs}
        return settings, config_hash(settings)

    @property
    def all_hashes(self) -> set[str]:
        return (set(self.hashes.values()) | {h for _, h in self.llc_by_model.values()}
                | {h for _, h in self.step_size.values()} | {h for own in self.robust.values() for _, h in own.values()}
                | {h for own in self.layer.values() for _, _, h in own.values()}
                | {h for _, h in self.measures.values()} | {h for own in self.allocation.values() for _, h in own.values()})

    def configs(self):
        """(hash, kind, settings) of every task configuration, for the store."""
        for name, (kind, settings) in self.settings.items():
            yield self.hashes[name], kind, settings
        for settings, found in self.llc_by_model.values():
            yield found, "llc", settings
        for settings, found in self.step_size.values():
            yield found, "step_size", settings
        for own in self.robust.values():
            for settings, found in own.values():
                yield found, "llc_robust", settings
        for own in self.layer.values():
            for kind, settings, found in own.values():
                yield found, kind, settings
        for settings, found in self.measures.values():
            yield found, "sensitivity", settings
        for own in self.allocation.values():
            for settings, found in own.values():
                yield found, "allocation", settings

    def step_size_tasks(self, units: list[Unit]) -> list[tuple[Unit, Task]]:
        """With `step_size: auto`, per model its `step_size` task at its latest planned checkpoint
        (curvature grows with training, so the step suits the earlier ones too; the last listed
        when steps are unknown)."""
        by_model: dict[str, list[Unit]] = {}
        for unit in units:
            by_model.setdefault(unit.ref.model_id, []).append(unit)
        found = []
        for model, own in by_model.items():
            if model not in self.step_size:
                continue
            unit = max(enumerate(own), key=lambda item: (-1 if item[1].step is None else item[1].step, item[0]))[1]
            hashed = self.step_size[model][1]
            found.append((unit, Task("step_size", "step_size", hashed,
                                     task_key("step_size", model, None, unit.identity, hashed))))
        return found

    def for_unit(self, unit: Unit) -> list[Task]:
        ref = unit.ref
        tasks = []
        for name, (kind, _) in self.settings.items():
            found = self.llc_by_model[ref.model_id][1] if kind == "llc" and ref.model_id in self.llc_by_model \
                else self.hashes[name]
            tasks.append(Task(name, kind, found, task_key(name, ref.model_id, ref.revision, unit.identity, found),
                              name.partition(":")[2] or None))
        if self.experiment.robust_at(ref.model_id, ref.revision):
            for name, (_, found) in self.robust.get(ref.model_id, {}).items():
                tasks.append(Task(name, "llc_robust", found, task_key(name, ref.model_id, ref.revision, unit.identity,
                                                                      found), name.partition(":")[2]))
        if self.experiment.sensitivity_at(ref.model_id, ref.revision):
            for name, (_, found) in self.measures.items():
                tasks.append(Task(name, "sensitivity", found, task_key(name, ref.model_id, ref.revision, unit.identity,
                                                                       found), name.split(":")[2] if name.count(":") == 2
                                  else None))
        tasks += self.layer_tasks(unit)
        if self.experiment.allocation_at(ref.model_id, ref.revision):  # last: they read the measures above
            needs = tuple(n for name in self.experiment.allocation_needs()
                          for n in ([f"llc@{g}" for g in unit.groups] if name == "llc@" else [name]))
            for name, (_, found) in self.allocation[ref.model_id].items():
                tasks.append(Task(name, "allocation", found, task_key(name, ref.model_id, ref.revision, unit.identity,
                                                                      found), name.partition(":")[2], None, needs))
        return tasks

    def layer_tasks(self, unit: Unit) -> list[Task]:
        """Per weight group of the unit's layer study: its refined λ̂ (`llc@<group>`) and each chosen
        entry restricted to it where the entry acts on it (`critical:<id>@<group>`); the group is in the
        task's name and key, not its config hash, so adding a group measures only it."""
        ref, own, tasks = unit.ref, self.layer.get(unit.ref.model_id, {}), []
        for group in unit.groups:
            kind, _, found = own["llc_group"]
            tasks.append(Task(f"llc@{group}", kind, found, task_key(f"llc@{group}", ref.model_id, ref.revision,
                                                                    unit.identity, found), None, group))
            for key, method in self.layer_methods.items():
                if method.acts_on(group):
                    name = f"critical:{key}@{group}"
                    kind, _, found = own[f"critical_group:{key}"]
                    tasks.append(Task(name, kind, found, task_key(name, ref.model_id, ref.revision, unit.identity,
                                                                  found), key, group))
        return tasks


def plan(experiment: Experiment, home: Path) -> list[Unit]:
    """One unit per (model, revision), with the identity of its bytes; `all` means every revision
    in the cache, or, for a suite model not built yet, every revision the suite will have; a hub
    schedule lists the repository's revisions and keeps those whose names give a step in range."""
    from mdl_slt.suite import SuiteSpec

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
    from mdl_slt.checkpoints import group_names

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


def search_budget(entry, epsilons) -> int:
    """The most loss evaluations one critical search of `entry` can make: a bracket (2) and a bisection
    per ε down to its precision, times its evaluations per knob value."""
    method = entry.build()
    knob, precision = method.knob, entry.search_precision(method)
    searches = 2 + len(epsilons) * max(1, math.ceil(math.log2((knob.high - knob.low) / precision)))
    return searches * method.cost().evaluations


@dataclass(frozen=True)
class Cost:
    """The most work an experiment's units can take, before anything runs."""

    sgld_steps: int  # every chain's step budget, over all checkpoints
    evaluations: int  # held-out loss evaluations, over all checkpoints
    notes: list[str] = field(default_factory=list)  # per entry, work beyond the evaluations


def estimated_cost(experiment: Experiment, units: list[Unit]) -> Cost:
    """Per checkpoint: each chain's step budget, one base-loss evaluation and, per compressor entry,
    a bracket (2 evaluations) and a bisection per ε down to its precision, times the compressor's
    evaluations per knob value."""
    evaluations, notes = 1, []
    for entry in experiment.critical.compressors:
        evaluations += search_budget(entry, experiment.critical.epsilons)
        note = entry.build().cost().note
        if note:
            notes.append(f"{entry.key}: {note} per knob value")
    varied = sum(experiment.robust_at(u.ref.model_id, u.ref.revision) for u in units) * len(experiment.robustness.variations())
    if varied:
        notes.append(f"{varied} λ̂ at varied sampler settings (robustness)")
    groups = sum(len(u.groups) for u in units)
    if groups:
        notes.append(f"{groups} refined λ̂ and up to {groups * len(experiment.layer_entries())} critical searches of "
                     "single weight groups (layers)")
    measured = sum(experiment.sensitivity_at(u.ref.model_id, u.ref.revision) for u in units)
    if measured:
        notes.append(f"{', '.join(experiment.sensitivity.measures)} on {measured} checkpoints (sensitivity)")
    allocated = sum(experiment.allocation_at(u.ref.model_id, u.ref.revision) for u in units)
    if allocated:
        notes.append(f"{len(experiment.allocation.methods)} allocations of {', '.join(experiment.allocation.compressors)} "
                     f"on {allocated} checkpoints, the oracle's {experiment.allocation.grid} evaluations per group "
                     "(allocation)")
    return Cost((len(units) + varied + groups) * experiment.llc.num_chains * experiment.llc.max_steps,
                len(units) * evaluations, notes)

