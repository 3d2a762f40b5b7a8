"""The tasks each unit owes the store, and the settings each task's key hashes.

Tasks per checkpoint: `base_loss`, `llc`, and `critical:<id>` per compressor entry; with
`llc.step_size: auto`, one `step_size` task per model first (at its latest planned checkpoint),
run through the executor like the others, so the driver never loads a model; with a `layers`
section, on the checkpoints it takes, per weight group `llc@<group>` (the refined λ̂) and
`critical:<id>@<group>` (an entry restricted to the group); with a `sensitivity` section,
`measure:<name>` per measure (hawq per entry: `measure:hawq:<id>`); with an `allocation` section,
`allocation:<id>` per entry, last, reading the measures its methods need; with a `scale` section,
`llc_scale:<ε>` per tolerance (λ(ε)). A task's config hash covers only what its result depends on:

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
    llc_scale:<ε>  data, the first rung's sampler settings, ε, device

each with the measurement version, so adding or editing one compressor entry never re-measures
another, and rows measured on a CPU never merge with rows measured under bf16 on a GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mdl_slt.plan.experiment import Experiment, variation_name
from mdl_slt.plan.units import Unit
from mdl_slt.store.keys import config_hash, task_key


# Bumped whenever a change to the code changes what a measurement returns or how it is keyed
# (rtn's even level counts in 0.2; per-task keys, numerics and the LLC trace in 0.3; the range
# fit's larger sample, exact on groups up to 69,632 weights, in 5; checkpoint identities in the
# keys in 6), so stores never mix results of different methods under one key.
MEASUREMENT_VERSION = 6
# The held-out loss evaluations' own version, in the keys of base losses and critical searches only
# (their LLCs are kept): 2 since they keep per-sequence losses and each critical value's standard error.
LOSS_VERSION = 2


@dataclass(frozen=True)
class Task:
    name: str  # base_loss | llc | critical:<entry id> | llc@<group> | critical:<entry id>@<group> | …
    kind: str  # base_loss | llc | critical | llc_robust | step_size | llc_group | critical_group | llc_scale | …
    config_hash: str
    key: str
    entry: str | None = None  # the compressor entry's id, for critical tasks
    group: str | None = None  # the weight group, for the layer study's tasks
    needs: tuple[str, ...] = ()  # names of the unit's tasks whose rows it reads (an allocation's measures)
    inputs: tuple = ()  # (name, rows) of those measured before this run, from the store


class Tasks:
    """The tasks of every unit of a device-resolved experiment, with their settings and hashes."""

    def __init__(self, experiment: Experiment):
        if experiment.device == "auto":
            raise ValueError("Tasks needs an experiment whose device is resolved (plan.units.resolve_device)")
        self.experiment = experiment
        common = {"data": experiment.data.model_dump(mode="json"), "device": experiment.device,
                  "measurement_version": MEASUREMENT_VERSION}
        self.settings = self._whole_model(common)  # task name → (kind, settings) of every checkpoint's own
        self.hashes = {name: config_hash(settings) for name, (_, settings) in self.settings.items()}
        self.llc_by_model = {  # model → (settings, hash) where `step_size: auto` chose the model's step
            model: _hashed({**common, "llc": experiment.llc_for(model).model_dump(mode="json"), "step_size_rule": "auto"})
            for model in experiment.llc_steps}
        self.robust = self._robust(common)  # model → {task name: (settings, hash)} of λ̂ at varied sampler settings
        self.layer_methods = {e.key: e.build() for e in experiment.layer_entries()} if experiment.layers.groups else {}
        self.layer = self._layer(common)  # model → {task name: (kind, settings, hash)} of the layer study
        self.measures = {}  # task name → (settings, hash): `measure:<name>`, hawq per entry `measure:hawq:<id>`
        for name in experiment.sensitivity.measures:
            self.measures.update(self._measure_settings(name, common))
        self.allocation = {  # model → {task name: (settings, hash)}: `allocation:<id>` per entry
            entry.id: {f"allocation:{key}": self._allocation_settings(entry.id, key, common)
                       for key in experiment.allocation.compressors}
            for entry in (experiment.models if experiment.allocation.compressors else [])}
        self.scale = {  # model → {task name: (settings, hash)}: `llc_scale:<ε>` per tolerance
            entry.id: {f"llc_scale:{epsilon:g}": _hashed({**common, "epsilon": epsilon, "loss": "divergence from w*",
                                                          "llc": experiment.scale_llc(entry.id).model_dump(mode="json")})
                       for epsilon in experiment.scale.epsilons}
            for entry in experiment.models}
        self.step_size = {  # model → (settings, hash) of its `step_size` task, with `step_size: auto`
            entry.id: _hashed({"resolve": "step_size", "model": entry.id, "data": common["data"],
                               "llc": experiment.llc.model_dump(mode="json"), "device": experiment.device})
            for entry in (experiment.models if experiment.llc.step_size == "auto" else [])}

    def _whole_model(self, common: dict) -> dict:
        """`base_loss`, `llc` and `critical:<id>` per compressor entry: (kind, settings) by task name."""
        experiment = self.experiment
        settings = {
            "base_loss": ("base_loss", {**common, "numerics": experiment.critical.numerics,
                                        "loss_version": LOSS_VERSION}),
            "llc": ("llc", {**common, "llc": experiment.llc.model_dump(mode="json")}),
        }
        for entry in experiment.critical.compressors:
            method = entry.build()
            options = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(method).items()
                       if not (k == "groups" and v is None)}  # the whole model: keyed as before groups existed
            settings[f"critical:{entry.key}"] = ("critical", {
                **common, "compressor": {"name": entry.name, "options": options,
                                         "precision": entry.search_precision(method)},
                "epsilons": experiment.critical.epsilons, "numerics": experiment.critical.numerics,
                "loss_version": LOSS_VERSION})
        return settings

    def _robust(self, common: dict) -> dict:
        """Per model, λ̂ at each varied sampler setting (none where `step_size: auto`: its step is chosen
        first, and the varied settings multiply the chosen one)."""
        experiment, found = self.experiment, {}
        for entry in experiment.models:
            if experiment.llc_for(entry.id).step_size == "auto":
                continue
            found[entry.id] = {
                f"llc_robust:{variation_name(parameter, multiplier)}": _hashed({
                    **common, "llc": experiment.varied_llc(entry.id, parameter, multiplier).model_dump(mode="json"),
                    "variation": {"parameter": parameter, "multiplier": multiplier}})
                for parameter, multiplier in experiment.robustness.variations()}
        return found

    def _layer(self, common: dict) -> dict:
        """Per model, the layer study's refined λ̂ and each chosen entry restricted to one group."""
        experiment, found = self.experiment, {}
        for entry in experiment.models if experiment.layers.groups else []:
            own = {"llc_group": ("llc_group", {**common, "llc": experiment.llc_for(entry.id).model_dump(mode="json"),
                                               "sampled": "one weight group"})}
            for key in self.layer_methods:
                own[f"critical_group:{key}"] = ("critical_group", {**self.settings[f"critical:{key}"][1],
                                                                   "tolerance": experiment.layers.tolerance})
            found[entry.id] = {name: (kind, settings, config_hash(settings)) for name, (kind, settings) in own.items()}
        return found


    def _measure_settings(self, name: str, common: dict) -> dict:
        """The task(s) of sensitivity measure `name`, with what its result depends on: its own settings,
        the data where it reads any, and for hawq each entry's compressor."""
        from mdl_slt.measures.sensitivity import MEASURES

        measure = MEASURES[name]
        chosen = self.experiment.sensitivity.model_dump(mode="json", include=set(measure.settings))
        settings = {k: v for k, v in common.items() if k != "data" or measure.data} | {"measure": name, **chosen}
        if not self.experiment.measured_per_group(name):  # the whole model alone (per-group tasks keep their keys)
            settings["groups"] = "none"
        if name != "hawq":
            return {f"measure:{name}": _hashed(settings)}
        found = {}
        for entry in self.experiment.hawq_entries():
            own = {**settings, "compressor": self.settings[f"critical:{entry.key}"][1]["compressor"]}
            found[f"measure:hawq:{entry.key}"] = _hashed(own)
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
        return _hashed(settings)

    @property
    def all_hashes(self) -> set[str]:
        return (set(self.hashes.values()) | {h for _, h in self.llc_by_model.values()}
                | {h for _, h in self.step_size.values()} | {h for own in self.robust.values() for _, h in own.values()}
                | {h for own in self.layer.values() for _, _, h in own.values()}
                | {h for _, h in self.measures.values()} | {h for own in self.allocation.values() for _, h in own.values()}
                | {h for own in self.scale.values() for _, h in own.values()})

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
        for own in self.scale.values():
            for settings, found in own.values():
                yield found, "llc_scale", settings

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
        if self.experiment.scale_at(ref.model_id, ref.revision):
            for name, (_, found) in self.scale[ref.model_id].items():
                tasks.append(Task(name, "llc_scale", found, task_key(name, ref.model_id, ref.revision, unit.identity,
                                                                     found), name.partition(":")[2]))
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


def _hashed(settings: dict) -> tuple[dict, str]:
    return settings, config_hash(settings)
