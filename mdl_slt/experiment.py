"""Experiment files (YAML), validated by one pydantic schema, and the plan they expand to.

Relative paths (store, report) are taken from the working directory. Settings that change a
measurement are hashed into its records' keys, so changing them measures anew and an
unchanged rerun skips what is stored.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mdl_slt import pythia
from mdl_slt.data import DataConfig
from mdl_slt.errors import UserError
from mdl_slt.sgld import LLCConfig


# Bumped whenever a change to the code changes what a measurement returns (e.g. rtn's even level
# counts in 0.2), so stores never mix results from different methods under one key.
MEASUREMENT_VERSION = 3


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepRange(_Strict):
    """Checkpoints `step<N>` for N from `start` to `stop` (inclusive) every `every`, or Pythia's
    published schedule (0, 1, 2, 4, …, 512, then every 1,000 to 143,000) within [start, stop]."""

    start: int = Field(0, ge=0)
    stop: int | None = Field(None, ge=0)
    every: int | None = Field(None, ge=1, description="spacing; omit for `schedule: pythia`")
    schedule: Literal["pythia"] | None = None

    def revisions(self) -> list[str]:
        if (self.every is None) == (self.schedule is None):
            raise UserError("a step range needs exactly one of `every` or `schedule: pythia`")
        if self.schedule == "pythia":
            stop = pythia.STEPS[-1] if self.stop is None else self.stop
            return [f"step{n}" for n in pythia.STEPS if self.start <= n <= stop]
        if self.stop is None:
            raise UserError("a step range with `every` needs `stop`")
        return [f"step{n}" for n in range(self.start, self.stop + 1, self.every)]


class ModelEntry(_Strict):
    id: str = Field(description="hub id (ORG/NAME) or a local directory")
    revisions: Literal["all"] | list[str] = Field("all", description="`all` = every revision in the cache")
    steps: StepRange | None = Field(None, description="instead of `revisions`: a range of `step<N>` revisions")

    def listed_revisions(self) -> list[str] | None:
        """The revisions named by `steps` or `revisions`, or None for `all`."""
        if self.steps is not None:
            if self.revisions != "all":
                raise UserError(f"model {self.id}: give `revisions` or `steps`, not both")
            return self.steps.revisions()
        return None if self.revisions == "all" else list(self.revisions)


class CompressorEntry(_Strict):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class CriticalConfig(_Strict):
    compressors: list[CompressorEntry] = Field(default_factory=lambda: [CompressorEntry(name="rtn")])
    epsilons: list[float] = Field(default_factory=lambda: [0.02, 0.05, 0.1])
    precision: float | None = Field(None, gt=0, description="knob precision of the critical search "
                                                               "(default: each knob's own, e.g. 0.05 bits)")

    def precision_for(self, knob) -> float:
        """The search precision on `knob`: this config's, else the knob's own default."""
        return self.precision if self.precision is not None else knob.precision

    @field_validator("epsilons")
    @classmethod
    def _positive(cls, values):
        if not values or any(v <= 0 for v in values):
            raise ValueError("epsilons must be a non-empty list of positive loss increases (nats/token)")
        return sorted(values)


class AnalysisConfig(_Strict):
    min_step: int = Field(0, ge=0, description="fit only checkpoints at or after this training step")


class Experiment(_Strict):
    name: str
    store: Path
    report: Path | None = None
    threads: int = Field(1, ge=1, description="torch threads per process")
    workers: int = Field(1, ge=1, description="local executor: checkpoints measured in parallel processes")
    executor: Literal["local", "ray"] = Field("local", description="`local` (this machine) or `ray` (a cluster)")
    address: str | None = Field(None, description="ray: the cluster's address (HOST:PORT); none = a Ray "
                                                  "instance on this machine for this run")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="`auto`: cuda when available, else cpu")
    gpus_per_unit: float = Field(0, ge=0, description="ray: GPUs each checkpoint asks for (CPUs: `threads`)")
    models: list[ModelEntry] = Field(min_length=1)
    data: DataConfig = DataConfig()
    llc: LLCConfig = LLCConfig()
    critical: CriticalConfig = CriticalConfig()
    analysis: AnalysisConfig = AnalysisConfig()

    def hash_of(self, *parts: str, extra: Any = None) -> str:
        payload = {p: getattr(self, p).model_dump(mode="json") for p in parts}
        payload.update(extra=extra, measurement_version=MEASUREMENT_VERSION)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _model_in(annotation) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `X`, `list[X]` or `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, (_model_in(a) for a in get_args(annotation))), None)


def _describe(error: dict) -> str:
    path = ".".join(str(p) for p in error["loc"])
    if error["type"] != "extra_forbidden":
        return f"'{path}': {error['msg']}"
    model = Experiment
    for part in error["loc"][:-1]:
        if isinstance(part, str) and part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation) or model
    close = difflib.get_close_matches(str(error["loc"][-1]), list(model.model_fields), n=1)
    return f"unknown key '{path}'" + (f" (did you mean '{close[0]}'?)" if close else "")


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`key.path=value` settings (values read as YAML) applied to the raw file, before validation,
    so a misspelt path is refused like a misspelt key; list items by index (models.0.id=...)."""
    import yaml

    for item in overrides:
        path, sep, text = item.partition("=")
        if not sep or not path:
            raise UserError(f"--set {item!r}: write KEY.PATH=VALUE, e.g. --set llc.num_draws=300")
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
            node[last] = yaml.safe_load(text)
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
    raw = apply_overrides(raw, list(overrides))
    try:
        return Experiment.model_validate(raw)
    except ValidationError as error:
        # a misspelt key is usually the cause of a "missing" one: name it first
        first = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise UserError(f"{path}: {_describe(first)}{more}") from None
