"""The measurements one checkpoint gets: base loss, LLC, critical compression per compressor entry.

`measure_unit` loads a checkpoint once and yields one `Outcome` per task as soon as that task is
done, so the store keeps every finished task even if a later one fails or the process dies. A
task that raises is an outcome too (failed, with its one-line reason); the unit's other tasks
still run. The one-shot CLI commands use the same functions, so both measure identically.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from mdl_slt.checkpoints import Checkpoint
from mdl_slt.critical import CriticalSearch, find_critical
from mdl_slt.data import TokenSets
from mdl_slt.device import NUMERICS_LABEL
from mdl_slt.errors import UserError
from mdl_slt.lm_loss import evaluate_loss
from mdl_slt.plan import Task, Unit
from mdl_slt.sgld import LLCConfig, LLCResult, estimate_llc
from mdl_slt.store import Record


@dataclass
class Outcome:
    """What one task of one unit produced: its rows (and trace), or why it failed."""

    unit: str
    task: Task
    records: list[Record] = field(default_factory=list)
    trace: bytes | None = None
    error: str | None = None


def reason(error: BaseException) -> str:
    """A failure as one line: a UserError's own words, else the exception's type and message."""
    text = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    return " ".join(text.split())[:400]


def load(ref, experiment, home: Path, device: str | None = None) -> tuple[Checkpoint, TokenSets]:
    """A checkpoint on `device` (default: the experiment's, resolved) in a process with the
    experiment's torch threads, and its token sets from the experiment's data."""
    from mdl_slt.checkpoints import load_checkpoint
    from mdl_slt.data import token_sets
    from mdl_slt.threads import set_threads

    set_threads(experiment.threads)
    ckpt = load_checkpoint(ref, home, device or experiment.device)
    return ckpt, token_sets(home, ckpt.tokenizer, experiment.data)


def measure_llc(checkpoint: Checkpoint, tokens: TokenSets, config: LLCConfig) -> LLCResult:
    return estimate_llc(checkpoint.model, tokens.train, config)


def choose_step_size(unit: Unit, experiment, home: Path) -> dict:
    """`step_size: auto` resolved on one checkpoint of the experiment's data: the step and how."""
    from mdl_slt.sgld import default_loss, resolve

    ckpt, tokens = load(unit.ref, experiment, home)
    data = tokens.train.to(experiment.device)
    config, how = resolve(experiment.llc, ckpt.model, data, default_loss(data, "fp32"))
    return {"step_size": config.step_size, "checkpoint": str(unit.ref), **how}


@dataclass
class CurvePoint:
    knob: float
    loss: float
    bits: float
    bits_entropy: float


@dataclass
class CriticalMeasurement:
    compressor: str
    knob_name: str
    search: CriticalSearch
    curve: list[CurvePoint]  # every evaluated knob value, least compressed first
    uncompressed_bits: float
    elapsed_s: float

    def at(self, value: float) -> CurvePoint:
        return next(p for p in self.curve if p.knob == value)

    def bits_between(self, good: float, bad: float | None, value: float | None) -> float | None:
        """The description length at `value` inside a bracket, linear between its ends."""
        if value is None:
            return None
        low = self.at(good).bits
        if bad is None or bad == good:
            return low
        return low + (value - good) / (bad - good) * (self.at(bad).bits - low)


def measure_critical(checkpoint: Checkpoint, tokens: TokenSets, compressor, base_loss: float,
                     epsilons, precision: float, numerics: str = "fp32") -> CriticalMeasurement:
    """Critical compression of `checkpoint` under `compressor` at every ε."""
    start = time.perf_counter()
    model = checkpoint.model
    prepared = compressor.prepare(model, tokens.train.to(next(model.parameters()).device))

    def loss_at(value: float) -> float:
        """Held-out loss at `value`, averaged over the method's random draws (1 for most)."""
        losses = []
        for draw in range(compressor.num_draws):
            with compressor.applied(model, prepared, value, draw):
                losses.append(evaluate_loss(model, tokens.eval, numerics=numerics))
        return sum(losses) / len(losses)

    search = find_critical(loss_at, base_loss, epsilons, compressor.knob, precision,
                           lambda v: compressor.snap(v, prepared), compressor.levels(prepared))
    curve = []
    for value, loss in sorted(search.evaluations.items(), key=lambda kv: compressor.knob.compression(kv[0])):
        length = compressor.description_length(prepared, value)
        curve.append(CurvePoint(value, loss, length.total_bits, length.entropy_total_bits))
    return CriticalMeasurement(compressor.name, compressor.knob.name, search, curve,
                               compressor.uncompressed_bits(prepared).total_bits, time.perf_counter() - start)


def measure_unit(unit: Unit, experiment, home: Path, tasks: list[Task]) -> Iterator[Outcome]:
    """Measure `tasks` of one checkpoint, yielding each task's outcome as it finishes."""
    name = str(unit)
    try:
        ckpt, tokens = load(unit.ref, experiment, home)
    except Exception as error:  # noqa: BLE001  an unloadable checkpoint fails each of its tasks, with the reason
        for task in tasks:
            yield Outcome(name, task, error=reason(error))
        return
    common = dict(model=unit.ref.model_id, revision=unit.ref.revision, num_params=ckpt.num_params,
                  step=unit.step if unit.step is not None else ckpt.step,
                  tokens_seen=unit.tokens_seen if unit.tokens_seen is not None else ckpt.tokens_seen,
                  experiment=experiment.name, device=experiment.device)
    entries = {e.key: e for e in experiment.critical.compressors}
    numerics = experiment.critical.numerics
    base_loss = None
    for task in tasks:
        try:
            start = time.perf_counter()
            if base_loss is None and task.kind in ("base_loss", "critical"):
                base_loss = evaluate_loss(ckpt.model, tokens.eval, numerics=numerics)
            if task.kind == "base_loss":
                uniform = math.log(ckpt.model.config.vocab_size)  # the loss of a uniform prediction, ln V
                rows = [Record("base_loss", task_key=task.key, config_hash=task.config_hash, loss=base_loss,
                               base_loss=base_loss, elapsed_s=time.perf_counter() - start, detail={"uniform_loss": uniform},
                               numerics=NUMERICS_LABEL[numerics], **common)]
                yield Outcome(name, task, rows)
            elif task.kind == "llc":
                result = measure_llc(ckpt, tokens, experiment.llc_for(unit.ref.model_id))
                yield Outcome(name, task, [llc_record(result, task, experiment.llc.seed, common)], result.trace)
            else:
                entry = entries[task.entry]
                compressor = entry.build()
                found = measure_critical(ckpt, tokens, compressor, base_loss, experiment.critical.epsilons,
                                         entry.search_precision(compressor), numerics)
                yield Outcome(name, task, critical_records(found, task, entry, base_loss,
                                                           {**common, "numerics": NUMERICS_LABEL[numerics]}))
        except Exception as error:  # noqa: BLE001  a failed task is recorded; the unit's other tasks go on
            yield Outcome(name, task, error=reason(error))


def llc_record(result: LLCResult, task: Task, seed: int, common: dict) -> Record:
    detail = {key: value for key, value in result.to_dict().items()
              if key not in ("llc_mean", "llc_std_error", "init_loss", "elapsed_s", "loss_trace")}
    return Record("llc", task_key=task.key, config_hash=task.config_hash, loss=result.init_loss,
                  llc_mean=result.llc_mean, llc_std_error=result.llc_std_error, detail=detail,
                  elapsed_s=result.elapsed_s, seed=seed, numerics=NUMERICS_LABEL[result.config["numerics"]], **common)


def critical_records(found: CriticalMeasurement, task: Task, entry, base_loss: float, common: dict) -> list[Record]:
    """The loss curve (one row per evaluated knob value) and one row per ε with its critical value,
    the bracket's passing end in `knob`, the interpolated crossing in `knob_interpolated`."""
    ids = dict(task_key=task.key, config_hash=task.config_hash, compressor=entry.key, method=entry.name)
    rows = [Record("loss_curve", knob=p.knob, loss=p.loss, base_loss=base_loss, bits=p.bits,
                   bits_entropy=p.bits_entropy, **ids, **common) for p in found.curve]
    search = found.search
    for point in search.points:
        at = found.at(point.value) if point.value is not None else None
        rows.append(Record(
            "critical", epsilon=point.epsilon, knob=point.value, knob_interpolated=point.interpolated,
            loss=point.loss, base_loss=base_loss, bits=at.bits if at else None,
            bits_entropy=at.bits_entropy if at else None,
            bits_interpolated=found.bits_between(point.value, point.beyond, point.interpolated) if at else None,
            elapsed_s=found.elapsed_s,
            detail={"knob_name": found.knob_name, "beyond": point.beyond, "monotone": point.monotone,
                    "interpolation": point.interpolation, "wide": point.wide,
                    "evaluations": search.num_evaluations, "precision": search.precision,
                    "nonfinite": search.nonfinite, "uncompressed_bits": found.uncompressed_bits},
            **ids, **common))
    return rows
