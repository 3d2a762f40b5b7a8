"""The measurements one checkpoint gets: base loss, LLC, critical compression per compressor entry.

`measure_unit` loads a checkpoint once and yields one `Outcome` per task (a model's step-size
choice, the base loss, the LLC, each critical search) as soon as that task is done, so the store
keeps every finished task even if a later one fails or the process dies. A task that raises is an
outcome too (failed, with its one-line reason); the unit's other tasks still run. The one-shot
commands and `predict --verify` use the same functions, so all measure identically.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from mdl_slt.compute.device import NUMERICS_LABEL
from mdl_slt.compute.loss import sequence_losses
from mdl_slt.data.tokens import TokenSets
from mdl_slt.errors import UserError, one_line
from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.sampling import estimate_llc
from mdl_slt.llc.scale import llc_at_scale
from mdl_slt.llc.trace import LLCResult
from mdl_slt.measures.critical import CriticalSearch, critical_standard_error, find_critical
from mdl_slt.models.checkpoints import Checkpoint
from mdl_slt.plan.experiment import parse_variation
from mdl_slt.plan.tasks import Task
from mdl_slt.plan.units import Unit
from mdl_slt.run.studies import allocation_records, group_llc, group_tolerances, sensitivity_records
from mdl_slt.store.records import Record


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
    return one_line(text)


def load(ref, experiment, home: Path, device: str | None = None) -> tuple[Checkpoint, TokenSets]:
    """A checkpoint on `device` (default: the experiment's, resolved) in a process with the
    experiment's torch threads, and its token sets from the experiment's data."""
    from mdl_slt.compute.threads import set_threads
    from mdl_slt.data.tokens import token_sets
    from mdl_slt.models.checkpoints import load_checkpoint

    set_threads(experiment.threads)
    ckpt = load_checkpoint(ref, home, device or experiment.device)
    return ckpt, token_sets(home, ckpt.tokenizer, experiment.data)


def measure_llc(checkpoint: Checkpoint, tokens: TokenSets, config: LLCConfig, progress=None) -> LLCResult:
    return estimate_llc(checkpoint.model, tokens.train, config, progress=progress)


def choose_step_size(checkpoint: Checkpoint, tokens: TokenSets, config: LLCConfig) -> dict:
    """`step_size: auto` resolved on one checkpoint's sampling data: the step and how it was chosen."""
    from mdl_slt.llc.batches import default_loss
    from mdl_slt.llc.sampling import resolve

    data = tokens.train.to(next(checkpoint.model.parameters()).device)
    resolved, how = resolve(config, checkpoint.model, data, default_loss(data, "fp32"))
    return {"step_size": resolved.step_size, "checkpoint": str(checkpoint.ref), **how}


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
    base_loss: float
    standard_errors: dict  # ε → standard error of the interpolated critical value (`critical_standard_error`)
    sequences: int  # evaluation sequences behind each loss
    knob_range: tuple[float, float]  # the knob's (low, high): where any critical value, or interval, can lie

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

    def points(self) -> list[dict]:
        """Per ε: the bracket's passing end (`knob`, None when not reached), the interpolated
        crossing, the loss there and the description lengths at both."""
        found = []
        for p in self.search.points:
            at = self.at(p.value) if p.value is not None else None
            found.append({"epsilon": p.epsilon, "knob": p.value, "interpolated": p.interpolated, "beyond": p.beyond,
                          "loss": p.loss, "bits": at.bits if at else None,
                          "bits_entropy": at.bits_entropy if at else None,
                          "bits_interpolated": self.bits_between(p.value, p.beyond, p.interpolated) if at else None,
                          "monotone": p.monotone, "wide": p.wide, "interpolation": p.interpolation,
                          "se": self.standard_errors.get(p.epsilon, math.nan)})
        return found

    def sequences_needed(self, se: float) -> int | None:
        """Evaluation sequences that would bring a standard error under the search precision
        (errors fall as 1/√n); None when it already is."""
        precision = self.search.precision
        if not (se > precision):
            return None
        return math.ceil(self.sequences * (se / precision) ** 2)


def measure_critical(checkpoint: Checkpoint, tokens: TokenSets, compressor, base, epsilons, precision: float,
                     numerics: str = "fp32", progress=None) -> CriticalMeasurement:
    """Critical compression of `checkpoint` under `compressor` at every ε, with each critical
    value's standard error; `base`: the base model's per-sequence held-out losses; `progress(n)`
    is called with the evaluations made so far."""
    start = time.perf_counter()
    model = checkpoint.model
    prepared = compressor.prepare(model, tokens.train.to(next(model.parameters()).device))
    differences = {}

    def loss_at(value: float) -> float:
        """Held-out loss at `value`, each sequence averaged over the method's random draws (1 for
        most); the per-sequence differences from the base are kept for the standard errors."""
        draws = []
        for draw in range(compressor.num_draws):
            with compressor.applied(model, prepared, value, draw):
                draws.append(sequence_losses(model, tokens.eval, numerics=numerics))
        per_sequence = sum(draws) / len(draws)
        differences[value] = per_sequence - base
        if progress is not None:
            progress(len(differences))
        return float(per_sequence.mean())

    base_loss = float(base.mean())
    search = find_critical(loss_at, base_loss, epsilons, compressor.knob, precision,
                           lambda v: compressor.snap(v, prepared), compressor.levels(prepared))
    order = compressor.knob.compression
    errors = {p.epsilon: critical_standard_error(differences, p.epsilon, order) if p.value is not None else math.nan
              for p in search.points}
    curve = []
    for value, loss in sorted(search.evaluations.items(), key=lambda kv: compressor.knob.compression(kv[0])):
        length = compressor.description_length(prepared, value)
        curve.append(CurvePoint(value, loss, length.total_bits, length.entropy_total_bits))
    return CriticalMeasurement(compressor.name, compressor.knob.name, search, curve,
                               compressor.uncompressed_bits(prepared).total_bits, time.perf_counter() - start, base_loss,
                               errors, len(base), (compressor.knob.low, compressor.knob.high))


def measure_entry(checkpoint: Checkpoint, tokens: TokenSets, entry, epsilons, numerics: str,
                  base=None, progress=None) -> CriticalMeasurement:
    """One compressor entry's critical search at its own precision, the base model's per-sequence
    losses evaluated unless given: the one path for runs, `mdl-slt critical` and `predict --verify`."""
    compressor = entry.build()
    if base is None:
        base = sequence_losses(checkpoint.model, tokens.eval, numerics=numerics)
    return measure_critical(checkpoint, tokens, compressor, base, epsilons, entry.search_precision(compressor),
                            numerics, progress)


def measure_unit(unit: Unit, experiment, home: Path, tasks: list[Task]) -> Iterator[Outcome]:
    """Measure `tasks` of one checkpoint, yielding each task's outcome as it finishes."""
    name = str(unit)
    try:
        ckpt, tokens = load(unit.ref, experiment, home)
    except Exception as error:  # noqa: BLE001  an unloadable checkpoint fails each of its tasks, with the reason
        for task in tasks:
            yield Outcome(name, task, error=reason(error))
        return
    at = UnitAt(unit, experiment, ckpt, tokens)
    for task in tasks:
        at.known.update((name, list(rows)) for name, rows in task.inputs)
        try:
            start = time.perf_counter()
            outcome = MEASURERS[task.kind](at, task, start)
            if task.kind in ("sensitivity", "llc_group"):  # rows the unit's later tasks read (an allocation's)
                at.known[task.name] = [vars(r) for r in outcome.records]
            yield outcome
        except Exception as error:  # noqa: BLE001  a failed task is recorded; the unit's other tasks go on
            yield Outcome(name, task, error=reason(error))


@dataclass
class UnitAt:
    """One loaded checkpoint and what its tasks share: the columns every row carries, the compressor
    entries, the base model's per-sequence held-out losses (evaluated once, when first needed) and
    the rows of tasks that later tasks read."""

    unit: Unit
    experiment: object
    ckpt: Checkpoint
    tokens: TokenSets
    known: dict = field(default_factory=dict)  # task name → the rows it wrote (an allocation's measures)
    _base: object = None

    def __post_init__(self):
        unit, ckpt = self.unit, self.ckpt
        self.name = str(unit)
        self.common = dict(model=unit.ref.model_id, revision=unit.ref.revision, num_params=ckpt.num_params,
                           step=unit.step if unit.step is not None else ckpt.step,
                           tokens_seen=unit.tokens_seen if unit.tokens_seen is not None else ckpt.tokens_seen,
                           experiment=self.experiment.name, device=self.experiment.device,
                           checkpoint_id=unit.identity)
        self.entries = {e.key: e for e in self.experiment.critical.compressors}
        self.numerics = self.experiment.critical.numerics
        self.evaluated = {**self.common, "numerics": NUMERICS_LABEL[self.numerics]}  # rows of loss evaluations

    @property
    def base(self):
        if self._base is None:
            self._base = sequence_losses(self.ckpt.model, self.tokens.eval, numerics=self.numerics)
        return self._base


def _step_size(at: UnitAt, task: Task, start: float) -> Outcome:
    chosen = choose_step_size(at.ckpt, at.tokens, at.experiment.llc)
    return Outcome(at.name, task, [Record("step_size", task_key=task.key, config_hash=task.config_hash,
                                          elapsed_s=time.perf_counter() - start, detail=chosen, **at.common)])


def _base_loss(at: UnitAt, task: Task, start: float) -> Outcome:
    base_loss = float(at.base.mean())
    uniform = math.log(at.ckpt.model.config.vocab_size)  # the loss of a uniform prediction, ln V
    return Outcome(at.name, task, [Record("base_loss", task_key=task.key, config_hash=task.config_hash, loss=base_loss,
                                          base_loss=base_loss, elapsed_s=time.perf_counter() - start,
                                          detail={"uniform_loss": uniform}, **at.evaluated)])


def _llc(at: UnitAt, task: Task, start: float) -> Outcome:
    result = measure_llc(at.ckpt, at.tokens, at.experiment.llc_for(at.unit.ref.model_id))
    return Outcome(at.name, task, [llc_record(result, task, at.experiment.llc.seed, at.common)], result.trace)


def _llc_robust(at: UnitAt, task: Task, start: float) -> Outcome:
    parameter, multiplier = parse_variation(task.entry)
    result = measure_llc(at.ckpt, at.tokens, at.experiment.varied_llc(at.unit.ref.model_id, parameter, multiplier))
    record = llc_record(result, task, at.experiment.llc.seed, at.common, "llc_robust")
    record.detail["variation"] = {"parameter": parameter, "multiplier": multiplier}
    return Outcome(at.name, task, [record])


def _llc_scale(at: UnitAt, task: Task, start: float) -> Outcome:
    epsilon = float(task.entry)
    found = llc_at_scale(at.ckpt.model, at.tokens.train, at.experiment.scale_llc(at.unit.ref.model_id), epsilon)
    return Outcome(at.name, task, [Record("llc_scale", task_key=task.key, config_hash=task.config_hash, epsilon=epsilon,
                                          llc_mean=found.llc_mean, llc_std_error=found.llc_std_error,
                                          elapsed_s=time.perf_counter() - start, detail=found.to_dict(), **at.common)])


def _sensitivity(at: UnitAt, task: Task, start: float) -> Outcome:
    return Outcome(at.name, task, sensitivity_records(at.ckpt, at.tokens, at.experiment, task, at.entries, at.common))


def _allocation(at: UnitAt, task: Task, start: float) -> Outcome:
    missing = [n for n in task.needs if n not in at.known]
    if missing:
        raise UserError(f"needs {', '.join(missing)}, not measured (failed, or not in this run)")
    return Outcome(at.name, task, allocation_records(at.ckpt, at.tokens, at.experiment, task, at.entries[task.entry],
                                                     at.base, at.known, at.evaluated))


def _llc_group(at: UnitAt, task: Task, start: float) -> Outcome:
    result = group_llc(at.ckpt, at.tokens, at.experiment, task.group)
    record = llc_record(result, task, at.experiment.llc.seed, at.common, "llc_group")
    record.weight_group = task.group
    return Outcome(at.name, task, [record], result.trace)


def _critical_group(at: UnitAt, task: Task, start: float) -> Outcome:
    entry = at.entries[task.entry].restricted(task.group)
    tolerances = group_tolerances(at.ckpt.model, at.experiment)
    found = measure_entry(at.ckpt, at.tokens, entry, list(tolerances), at.numerics, at.base)
    return Outcome(at.name, task, critical_records(found, task, entry, at.evaluated, task.group, tolerances))


def _critical(at: UnitAt, task: Task, start: float) -> Outcome:
    entry = at.entries[task.entry]
    found = measure_entry(at.ckpt, at.tokens, entry, at.experiment.critical.epsilons, at.numerics, at.base)
    return Outcome(at.name, task, critical_records(found, task, entry, at.evaluated))


MEASURERS = {  # task kind → how it is measured
    "step_size": _step_size, "base_loss": _base_loss, "llc": _llc, "llc_robust": _llc_robust, "llc_scale": _llc_scale,
    "sensitivity": _sensitivity, "allocation": _allocation, "llc_group": _llc_group, "critical_group": _critical_group,
    "critical": _critical}


def save_compressed(checkpoint: Checkpoint, tokens: TokenSets, entry, point: dict, found: CriticalMeasurement,
                    folder: Path, numerics: str) -> None:
    """Write `checkpoint` compressed by `entry` at the realisable knob value `point["knob"]` (a critical
    value's bracket end) as a Hugging Face model directory: dequantized fp32 weights, its tokenizer,
    and `mdl_slt-compression.json` with the compressor, options, knob, ε and the held-out loss
    measured at that value, which the saved model reproduces when loaded; and, for a compressor that
    writes a real code (`code`), its bytes in `mdl_slt-code.bin`, from which the saved weights decode."""
    import json

    from mdl_slt import __version__
    from mdl_slt.compute.loss import evaluate_loss

    method = entry.build()
    model = checkpoint.model
    prepared = method.prepare(model, tokens.train.to(next(model.parameters()).device))
    folder.mkdir(parents=True, exist_ok=True)
    with method.applied(model, prepared, point["knob"]):
        loss = evaluate_loss(model, tokens.eval, numerics=numerics)
        model.save_pretrained(folder)
    code = method.code(prepared, point["knob"])
    if code is not None:
        (folder / "mdl_slt-code.bin").write_bytes(code)
    checkpoint.tokenizer.save_pretrained(folder)
    info = {"ref": str(checkpoint.ref), "compressor": entry.key, "method": entry.name, "options": entry.options,
            "knob_name": method.knob.name, "knob_unit": method.knob.unit, "knob": point["knob"],
            "epsilon": point["epsilon"], "base_loss": found.base_loss, "loss": loss, "dl_bits": point["bits"],
            "numerics": numerics, "mdl_slt": __version__,
            "note": "weights stored dequantized in fp32; dl_bits counts them at the compressed format's size"}
    (folder / "mdl_slt-compression.json").write_text(json.dumps(info, indent=1))


def llc_record(result: LLCResult, task: Task, seed: int, common: dict, kind: str = "llc") -> Record:
    detail = {key: value for key, value in result.to_dict().items()
              if key not in ("llc_mean", "llc_std_error", "init_loss", "elapsed_s", "loss_trace")}
    return Record(kind, task_key=task.key, config_hash=task.config_hash, loss=result.init_loss,
                  llc_mean=result.llc_mean, llc_std_error=result.llc_std_error, detail=detail,
                  elapsed_s=result.elapsed_s, seed=seed, numerics=NUMERICS_LABEL[result.config["numerics"]], **common)


def critical_records(found: CriticalMeasurement, task: Task, entry, common: dict, group: str | None = None,
                     tolerances: dict | None = None) -> list[Record]:
    """The loss curve (one row per evaluated knob value) and one row per ε with its critical value,
    the bracket's passing end in `knob`, the interpolated crossing in `knob_interpolated`. For an
    entry restricted to a weight group, `loss_curve_group` and `critical_group` rows of that group,
    each critical row under the whole model's ε its tolerance stands for (`tolerances`), the
    tolerance itself in its detail."""
    ids = dict(task_key=task.key, config_hash=task.config_hash, compressor=entry.key, method=entry.name,
               weight_group=group)
    suffix = "" if group is None else "_group"
    base_loss = found.base_loss
    rows = [Record(f"loss_curve{suffix}", knob=p.knob, loss=p.loss, base_loss=base_loss, bits=p.bits,
                   bits_entropy=p.bits_entropy, **ids, **common) for p in found.curve]
    search = found.search
    for point in found.points():
        rows.append(Record(
            f"critical{suffix}", epsilon=(tolerances or {}).get(point["epsilon"], point["epsilon"]),
            knob=point["knob"], knob_interpolated=point["interpolated"],
            loss=point["loss"], base_loss=base_loss, bits=point["bits"], bits_entropy=point["bits_entropy"],
            bits_interpolated=point["bits_interpolated"], elapsed_s=found.elapsed_s,
            detail={"knob_name": found.knob_name, "beyond": point["beyond"], "monotone": point["monotone"],
                    "interpolation": point["interpolation"], "wide": point["wide"],
                    "evaluations": search.num_evaluations, "precision": search.precision,
                    "critical_se": point["se"] if math.isfinite(point["se"]) else None, "se_sequences": found.sequences,
                    "sequences_needed": found.sequences_needed(point["se"]), "knob_range": list(found.knob_range),
                    "nonfinite": search.nonfinite, "uncompressed_bits": found.uncompressed_bits,
                    **({"tolerance": point["epsilon"]} if group is not None else {})},
            **ids, **common))
    return rows
