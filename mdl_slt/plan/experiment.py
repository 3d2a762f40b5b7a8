"""Experiment files (YAML), validated by one pydantic schema.

Relative paths in a file (store, report, data files, local models) are taken from the file's own
folder; those given with `--set` from the working directory. `mdl_slt.plan.units` expands an
experiment into checkpoints and tasks; each task's key hashes only the settings it depends on.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mdl_slt.data.tokens import DataConfig
from mdl_slt.errors import UserError, first_problem
from mdl_slt.llc.config import LLCConfig
from mdl_slt.measures.critical import CriticalConfig
from mdl_slt.measures.sensitivity import SensitivityConfig
from mdl_slt.models import pythia


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepRange(_Strict):
    """Checkpoints by training step: `step<N>` for N from `start` to `stop` (inclusive) every
    `every`; Pythia's published schedule (0, 1, 2, 4, …, 512, then every 1,000 to 143,000) within
    [start, stop]; or, with `schedule: hub`, every revision of the repository (the hub's branches
    when online, the local caches offline) whose name gives a step in [start, stop] (see
    `mdl_slt.models.revisions`), thinned to every `every` steps from `start` when given."""

    start: int = Field(0, ge=0)
    stop: int | None = Field(None, ge=0)
    every: int | None = Field(None, ge=1, description="spacing; omit for `schedule: pythia`")
    schedule: Literal["pythia", "hub"] | None = None

    def revisions(self) -> list[str]:
        """The revisions of a range or of Pythia's schedule (a hub schedule is listed by the plan)."""
        if self.schedule is None and self.every is None:
            raise UserError("a step range needs `every`, or `schedule: pythia` or `schedule: hub`")
        if self.schedule == "pythia":
            stop = pythia.STEPS[-1] if self.stop is None else self.stop
            return [f"step{n}" for n in pythia.STEPS if self.start <= n <= stop]
        if self.stop is None:
            raise UserError("a step range with `every` needs `stop`")
        return [f"step{n}" for n in range(self.start, self.stop + 1, self.every)]

    def keeps(self, step: int) -> bool:
        """Whether a hub revision at `step` belongs to this range."""
        inside = self.start <= step <= (self.stop if self.stop is not None else step)
        return inside and (self.every is None or (step - self.start) % self.every == 0)


class ModelEntry(_Strict):
    id: str = Field(description="hub id (ORG/NAME) or a local directory")
    revisions: Literal["all"] | list[str] = Field("all", description="`all` = every revision in the cache")
    steps: StepRange | None = Field(None, description="instead of `revisions`: a range of training steps")
    revision_pattern: str | None = Field(None, description="a regular expression with (?P<step>…) and optionally "
                                         "(?P<tokens>…)(?P<unit>[KMBT]?) reading revision names; default: the "
                                         "known schemes (step<N>, OLMo's stage<k>-step<N>-tokens<M>B)")
    tokens_per_step: int | None = Field(None, ge=1, description="training tokens per step, where revision names "
                                        "do not say (Pythia's is known)")

    def listed_revisions(self) -> list[str] | None:
        """The revisions named by `steps` or `revisions`; None for `all` and for a hub schedule."""
        if self.steps is not None:
            if self.revisions != "all":
                raise UserError(f"model {self.id}: give `revisions` or `steps`, not both")
            return None if self.steps.schedule == "hub" else self.steps.revisions()
        return None if self.revisions == "all" else list(self.revisions)


class AnalysisConfig(_Strict):
    """How stored measurements become fits; stated before any fit is seen."""

    window: float = Field(0.9, gt=0, le=1, description="the analysis window: checkpoints whose held-out loss has "
                          "covered at least this fraction of its fall from a uniform prediction (ln V) to its "
                          "lowest measured value")
    min_step: int | None = Field(None, ge=0, description="instead of the window rule: checkpoints at or after this step")
    critical: Literal["interpolated", "bracket"] = Field("interpolated", description="the critical value fitted: "
                                                         "interpolated inside the bracket, or its passing end")


VARIED = ("step_size", "n_beta", "localization", "batch_size")


class RobustnessConfig(_Strict):
    """Other sampler settings at which λ̂ is measured again, each a multiplier of the main setting
    (one setting varied at a time); the main λ̂ is never measured again."""

    step_size: list[float] = Field(default_factory=list, description="multipliers of the SGLD step")
    n_beta: list[float] = Field(default_factory=list, description="multipliers of nβ")
    localization: list[float] = Field(default_factory=list, description="multipliers of the localization γ")
    batch_size: list[float] = Field(default_factory=list, description="multipliers of the minibatch size")
    every: int = Field(1, ge=1, description="every k-th of each model's listed revisions (all of them when a model "
                                            "lists none)")

    @field_validator("step_size", "n_beta", "localization", "batch_size")
    @classmethod
    def _positive(cls, values):
        if any(not (v > 0) or v == 1 for v in values):
            raise ValueError("multipliers must be positive and not 1 (1 is the main setting, measured already)")
        return sorted(set(values))

    def variations(self) -> list[tuple[str, float]]:
        return [(name, m) for name in VARIED for m in getattr(self, name)]


SUGGESTED = {"step_size": [0.33, 3.0], "n_beta": [0.33, 3.0], "localization": [0.33, 3.0], "batch_size": [4.0]}


def vary(config: LLCConfig, parameter: str, multiplier: float) -> LLCConfig:
    """Sampler settings with one of them multiplied (the minibatch rounded, at least 1)."""
    value = getattr(config, parameter)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value == 0:
        raise UserError(f"robustness: cannot vary {parameter} = {value!r} by a multiplier; give it a number in `llc` "
                        "or leave it out of `robustness`")
    varied = max(1, round(value * multiplier)) if parameter == "batch_size" else value * multiplier
    return config.model_copy(update={parameter: varied})


def variation_name(parameter: str, multiplier: float) -> str:
    return f"{parameter}×{multiplier:g}"


def parse_variation(text: str) -> tuple[str, float]:
    parameter, _, multiplier = text.partition("×")
    return parameter, float(multiplier)


class LayersConfig(_Strict):
    """The layer-resolved study inside checkpoints: per weight group, its refined λ̂ (only the group
    sampled, every other parameter held at w*) and each chosen compressor entry's critical value
    with the entry restricted to the group (the others left exact)."""

    groups: Literal["all"] | list[str] = Field(default_factory=list, description="weight groups (block0.attn.in, …; "
                                               "`mdl-slt layers MODEL_REF --list`), or `all`; none: no layer study")
    every: int = Field(1, ge=1, description="every k-th of each model's listed revisions (all of them when a model "
                                            "lists none)")
    compressors: list[str] | None = Field(None, description="the compressor entries (ids) measured per group; "
                                                            "default: every entry")
    tolerance: Literal["share", "whole"] = Field("share", description="each group's tolerance: `share`, ε/G with G "
                                                 "the model's weight groups (its share of the whole model's ε), or "
                                                 "`whole`, ε itself")


class AllocationConfig(_Strict):
    """Per-group knob values within a whole-model ε, chosen by each method and judged on the measured
    loss of the whole compressed model (`mdl_slt.measures.allocation`)."""

    compressors: list[str] = Field(default_factory=list, description="compressor entries (ids) to allocate; none: "
                                                                      "no allocation study")
    methods: list[Literal["uniform", "hawq", "llc", "fisher", "oracle"]] = Field(
        default_factory=lambda: ["uniform", "hawq", "llc", "fisher", "oracle"],
        description="uniform (one knob), hawq (Ω from the Hessian trace), llc (λ̂_g/d_g in its place), fisher "
                    "(the Fisher trace in its place), oracle (each group's measured loss curve)")
    epsilons: list[float] | None = Field(None, description="whole-model tolerances; default: critical.epsilons")
    grid: int = Field(16, ge=2, description="knob values per group, evenly spaced over the range")
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict, description="per entry id, the knob range "
                                                   "the grid spans (default: the knob's own)")
    every: int = Field(1, ge=1, description="every k-th of each model's listed revisions (all when none are listed)")


class ScaleConfig(_Strict):
    """λ(ε), the LLC at the scale of each tolerance (`mdl_slt.llc.scale`): λ̂ at the nβ whose posterior
    sits ε above w*, on the divergence from w*, searched up a ladder of nβ from the sampler settings
    `llc` sets on top of the experiment's."""

    epsilons: list[float] = Field(default_factory=list, description="tolerances in nats/token; none: no λ(ε) "
                                                                     "study")
    llc: dict = Field(default_factory=dict, description="sampler settings for the ladder's first rung, over the "
                                                        "experiment's `llc` (e.g. sampler, step_size, n_beta, "
                                                        "max_steps)")
    every: int = Field(1, ge=1, description="every k-th of each model's listed revisions (all when none are listed)")

    @field_validator("epsilons")
    @classmethod
    def _tolerances(cls, values):
        if any(not (v > 0) for v in values):
            raise ValueError("tolerances must be positive")
        return sorted(set(values), reverse=True)


class Experiment(_Strict):
    name: str
    store: Path
    report: Path | None = None
    threads: int = Field(1, ge=1, description="torch threads per process")
    workers: int = Field(1, ge=1, description="local executor: checkpoints measured in parallel processes")
    executor: Literal["local", "ray"] = Field("local", description="`local` (this machine) or `ray` (a cluster)")
    address: str | None = Field(None, description="ray: the cluster's address (HOST:PORT); none = a Ray "
                                                  "instance on this machine for this run")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="`auto`: cuda when available, else cpu; "
                                                                      "resolved once per run, before any work")
    gpus_per_unit: float = Field(0, ge=0, description="ray: GPUs each checkpoint asks for (CPUs: `threads`)")
    lease_s: float = Field(60.0, gt=0, description="processes sharing the store: a checkpoint claimed by one that "
                                                   "stopped renewing its claim for this long is taken over")
    models: list[ModelEntry] = Field(min_length=1)
    data: DataConfig = DataConfig()
    llc: LLCConfig = LLCConfig()
    critical: CriticalConfig = CriticalConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    robustness: RobustnessConfig = RobustnessConfig()
    layers: LayersConfig = LayersConfig()
    sensitivity: SensitivityConfig = SensitivityConfig()
    allocation: AllocationConfig = AllocationConfig()
    scale: ScaleConfig = ScaleConfig()
    llc_steps: dict[str, float] = Field(default_factory=dict, description="written by a run, not by hand: the step "
                                        "size `llc.step_size: auto` chose for each model, held for all its checkpoints")

    def llc_for(self, model_id: str) -> LLCConfig:
        """The sampler settings of one model: `step_size: auto` replaced by the step chosen for it."""
        if self.llc.step_size == "auto" and model_id in self.llc_steps:
            return self.llc.model_copy(update={"step_size": self.llc_steps[model_id]})
        return self.llc

    def varied_llc(self, model_id: str, parameter: str, multiplier: float) -> LLCConfig:
        """One model's sampler settings with one of them multiplied (`vary`)."""
        return vary(self.llc_for(model_id), parameter, multiplier)

    def robust_at(self, model_id: str, revision: str | None) -> bool:
        """Whether a checkpoint is among those the robustness section re-measures (`every`)."""
        return bool(self.robustness.variations()) and self._every(model_id, revision, self.robustness.every)

    def layers_at(self, model_id: str, revision: str | None) -> bool:
        """Whether a checkpoint is among those the layer study measures (`every`)."""
        return bool(self.layers.groups) and self._every(model_id, revision, self.layers.every)

    def scale_llc(self, model_id: str) -> LLCConfig:
        """The first rung's sampler settings of λ(ε) for one model: the `scale` section's over `llc_for`."""
        return LLCConfig.model_validate({**self.llc_for(model_id).model_dump(exclude_unset=True), **self.scale.llc})

    def scale_at(self, model_id: str, revision: str | None) -> bool:
        """Whether a checkpoint is among those the λ(ε) study measures (`every`)."""
        return bool(self.scale.epsilons) and self._every(model_id, revision, self.scale.every)

    def sensitivity_at(self, model_id: str, revision: str | None) -> bool:
        """Whether a checkpoint is among those the sensitivity measures take (`every`)."""
        return bool(self.sensitivity.measures) and self._every(model_id, revision, self.sensitivity.every)

    def measured_per_group(self, measure: str) -> bool:
        """Whether sensitivity measure `measure` is taken per weight group as well as for the whole model:
        for a layer study or an allocation, and the Hessian trace for HAWQ's Ω (a sum over groups)."""
        return (bool(self.layers.groups) or bool(self.allocation.compressors)
                or (measure in ("hessian_trace", "hawq") and "hawq" in self.sensitivity.measures))

    def allocation_at(self, model_id: str, revision: str | None) -> bool:
        """Whether a checkpoint is among those the allocation study takes (`every`)."""
        return bool(self.allocation.compressors) and self._every(model_id, revision, self.allocation.every)

    def allocation_needs(self) -> list[str]:
        """The measures the allocation methods read (task names; `llc@<group>` stands for every group's)."""
        methods = set(self.allocation.methods) if self.allocation.compressors else set()
        return ((["measure:hessian_trace"] if "hawq" in methods else []) + (["measure:fisher"] if "fisher" in methods
                                                                            else []) + (["llc@"] if "llc" in methods else []))

    def hawq_entries(self) -> list:
        """The compressor entries whose ‖ΔW‖² the hawq measure takes."""
        chosen = self.sensitivity.compressors
        return [e for e in self.critical.compressors if chosen is None or e.key in chosen]

    def _every(self, model_id: str, revision: str | None, every: int) -> bool:
        """Whether `revision` is every `every`-th of its model's listed revisions (any, when none are listed)."""
        entry = next((m for m in self.models if m.id == model_id), None)
        listed = entry.listed_revisions() if entry is not None else None
        return listed is None or revision in listed[::every]

    def layer_entries(self) -> list:
        """The compressor entries the layer study restricts to each group."""
        chosen = self.layers.compressors
        return [e for e in self.critical.compressors if chosen is None or e.key in chosen]

    @model_validator(mode="after")
    def _layer_entries(self):
        known = [e.key for e in self.critical.compressors]
        for section, chosen in (("layers", self.layers.compressors), ("sensitivity", self.sensitivity.compressors),
                                ("allocation", self.allocation.compressors)):
            unknown = [c for c in chosen or [] if c not in known]
            if unknown:
                raise ValueError(f"{section}.compressors names {', '.join(map(repr, unknown))}, which is no compressor "
                                 f"entry (entries: {', '.join(known)})")
        needs = {"hawq": ("sensitivity", "hessian_trace"), "fisher": ("sensitivity", "fisher"), "llc": ("layers", "all")}
        for method in self.allocation.methods if self.allocation.compressors else []:
            if method not in needs:
                continue
            section, what = needs[method]
            present = what in self.sensitivity.measures if section == "sensitivity" else self.layers.groups == "all"
            every = getattr(self, section).every
            if not present or self.allocation.every % every:
                raise ValueError(f"allocation method {method} reads {'every group' if what == 'all' else what}'s "
                                 f"measure: add {'layers.groups: all' if what == 'all' else f'{what} to sensitivity.measures'}"
                                 f" on the allocation's checkpoints (its `every` a divisor of allocation.every, "
                                 f"{self.allocation.every})")
        return self

    @model_validator(mode="after")
    def _scale_settings(self):
        try:
            self.scale_llc(self.models[0].id)
        except ValidationError as error:
            where, first = first_problem(error)
            raise ValueError(f"scale.llc.{where}: {first['msg']}") from None
        return self

    def on(self, device: str) -> "Experiment":
        """This experiment with its device resolved (`cpu` or `cuda`): the device is part of every
        task's identity, so it is fixed before any work and stored with the run."""
        return self.model_copy(update={"device": device})


def _model_in(annotation) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `X`, `list[X]` or `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, (_model_in(a) for a in get_args(annotation))), None)


def _describe(error: dict) -> str:
    path = ".".join(str(p) for p in error["loc"])
    if error["type"] != "extra_forbidden":
        message = error["msg"].removeprefix("Value error, ")
        return f"'{path}': {message}" if path else message
    model = Experiment
    for part in error["loc"][:-1]:
        if isinstance(part, str) and part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation) or model
    close = difflib.get_close_matches(str(error["loc"][-1]), list(model.model_fields), n=1)
    return f"unknown key '{path}'" + (f" (did you mean '{close[0]}'?)" if close else "")


def parse_assignment(item: str, flag: str, form: str, example: str) -> tuple[str, object]:
    """(key, value) of a KEY=VALUE item given with `flag`, the value read as YAML (3, true,
    [attention, mlp]); a malformed item is one line showing `form` and an `example`."""
    import yaml

    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"{flag} {item!r}: write {form}, e.g. {flag} {example}")
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError:
        raise UserError(f"{flag} {item!r}: {text!r} is not a value (a number, word or [list])") from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`key.path=value` settings (values read as YAML) applied to the raw file, before validation,
    so a misspelt path is refused like a misspelt key; list items by index (models.0.id=...)."""
    for item in overrides:
        path, value = parse_assignment(item, "--set", "KEY.PATH=VALUE", "llc.num_draws=300")
        node, parts = raw, path.split(".")
        for part in parts[:-1]:
            key = int(part) if isinstance(node, list) and part.isdigit() else part
            try:
                node = node[key]
            except (KeyError, IndexError, TypeError):
                if isinstance(node, dict):
                    node = node.setdefault(key, {})
                else:
                    raise UserError(f"--set {item!r}: no {part!r} in {path!r}") from None
        last = int(parts[-1]) if isinstance(node, list) and parts[-1].isdigit() else parts[-1]
        try:
            node[last] = value
        except (IndexError, TypeError):
            raise UserError(f"--set {item!r}: cannot set {path!r}") from None
    return raw


def load_experiment(path: str | Path, overrides: list[str] = ()) -> Experiment:
    """Read, override and validate an experiment file; any problem is one UserError line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"experiment file not found: {path} (see experiments/demo.yaml for an example)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a mapping of settings (name, store, models, ...), not {type(raw).__name__}")
    return validated(apply_overrides(relative_to(raw, path.resolve().parent), list(overrides)), str(path))


def relative_to(raw: dict, folder: Path) -> dict:
    """The file's relative paths taken from its own folder, as most tools read a config: `store`,
    `report`, data files, a local dataset, and model ids that name a directory there (a hub id such as
    ORG/NAME stays as it is). `--set` values stay relative to the working directory."""
    def anchored(value):
        if not isinstance(value, str) or Path(value).expanduser().is_absolute():
            return value
        return os.path.normpath(folder / value)

    raw = dict(raw)
    for key in ("store", "report"):
        if raw.get(key) is not None:
            raw[key] = anchored(raw[key])
    data = raw.get("data")
    if isinstance(data, dict):
        data = raw["data"] = dict(data)
        for key in ("files", "eval_files"):
            if isinstance(data.get(key), list):
                data[key] = [anchored(f) for f in data[key]]
        if isinstance(data.get("dataset"), str) and (folder / data["dataset"]).is_dir():
            data["dataset"] = anchored(data["dataset"])
    if isinstance(raw.get("models"), list):
        raw["models"] = [{**m, "id": anchored(m["id"])} if isinstance(m, dict) and isinstance(m.get("id"), str)
                         and (folder / m["id"]).is_dir() else m for m in raw["models"]]
    return raw


def validated(raw: dict, source: str) -> Experiment:
    """An Experiment from raw settings; any problem is one UserError line naming `source`."""
    try:
        return Experiment.model_validate(raw)
    except ValidationError as error:
        _, first = first_problem(error)
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise UserError(f"{source}: {_describe(first)}{more}") from None
