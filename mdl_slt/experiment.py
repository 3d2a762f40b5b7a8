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

from mdl_slt.errors import UserError
from mdl_slt.sgld import LLCConfig


# Bumped whenever a change to the code changes what a measurement returns (e.g. rtn's even level
# counts in 0.2), so stores never mix results from different methods under one key.
MEASUREMENT_VERSION = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEntry(_Strict):
    id: str = Field(description="hub id (ORG/NAME) or a local directory")
    revisions: Literal["all"] | list[str] = Field("all", description="`all` = every revision in the cache")


class DataConfig(_Strict):
    source: Literal["embedded"] = "embedded"
    context_length: int = Field(128, ge=8)
    eval_sequences: int = Field(64, ge=1, description="held-out sequences for every loss evaluation")
    llc_sequences: int = Field(256, ge=1, description="training sequences the SGLD minibatches come from")


class CompressorEntry(_Strict):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class CriticalConfig(_Strict):
    compressors: list[CompressorEntry] = Field(default_factory=lambda: [CompressorEntry(name="rtn")])
    epsilons: list[float] = Field(default_factory=lambda: [0.02, 0.05, 0.1])
    precision: float | None = Field(None, gt=0, description="knob precision of the critical search "
                                                               "(default: each knob's own, e.g. 0.05 bits)")

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
    workers: int = Field(1, ge=1, description="checkpoints measured in parallel processes")
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


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment file; any problem is one UserError line."""
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
    try:
        return Experiment.model_validate(raw)
    except ValidationError as error:
        # a misspelt key is usually the cause of a "missing" one: name it first
        first = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise UserError(f"{path}: {_describe(first)}{more}") from None
