"""What the store holds: the columns of a measurement row, the other tables, and `Record`, one row
as a task returns it (its key built by `mdl_slt.store.keys`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from mdl_slt.store.keys import row_key

COLUMNS = {
    "key": "TEXT PRIMARY KEY",
    "task_key": "TEXT",
    "checkpoint_id": "TEXT",  # what names the measured checkpoint's bytes
    "experiment": "TEXT",
    "task": "TEXT NOT NULL",  # base_loss | llc | loss_curve | critical | llc_robust | the layer study's and measures'
    "model": "TEXT NOT NULL",
    "revision": "TEXT",
    "step": "INTEGER",
    "num_params": "INTEGER",
    "tokens_seen": "INTEGER",
    "compressor": "TEXT",  # the entry's id
    "method": "TEXT",  # the registered compressor it runs
    "knob": "REAL",
    "knob_interpolated": "REAL",
    "epsilon": "REAL",
    "loss": "REAL",
    "base_loss": "REAL",
    "bits": "REAL",
    "bits_entropy": "REAL",
    "bits_interpolated": "REAL",
    "llc_mean": "REAL",
    "llc_std_error": "REAL",
    "weight_group": "TEXT",  # the weight group a row measures alone (compressors.groups); NULL: the whole model
    "measure": "TEXT",  # a sensitivity row's quantity (hessian_trace, …); an allocation row's method
    "value": "REAL",  # a sensitivity measure's value
    "value_se": "REAL",  # and its standard error, where it is an estimate
    "detail": "TEXT",  # JSON: diagnostics, search evaluations, flags
    "elapsed_s": "REAL",
    "config_hash": "TEXT",
    "device": "TEXT",  # cpu | cuda
    "numerics": "TEXT",  # fp32 | bf16-autocast
    "seed": "INTEGER",
    "package_version": "TEXT",
    "created_at": "TEXT",
}
TABLES = {
    "tasks": "key TEXT PRIMARY KEY, unit TEXT, task TEXT, config_hash TEXT, status TEXT, reason TEXT, rows INTEGER, at TEXT",
    "configs": "hash TEXT PRIMARY KEY, kind TEXT, settings TEXT",
    "traces": "key TEXT PRIMARY KEY, data BLOB",
    "runs": "started_at TEXT, experiment TEXT, config TEXT",
    "checkpoints": "ref TEXT PRIMARY KEY, model TEXT, revision TEXT, identity TEXT, at TEXT",
    "claims": "unit TEXT PRIMARY KEY, holder TEXT, expires REAL",
}


KNOB_ROWS = ("loss_curve", "loss_curve_group", "sensitivity")  # tasks with a row per knob value


@dataclass
class Record:
    task: str
    model: str
    revision: str | None
    task_key: str
    config_hash: str
    checkpoint_id: str | None = None
    step: int | None = None
    num_params: int | None = None
    tokens_seen: int | None = None
    compressor: str | None = None
    method: str | None = None
    knob: float | None = None
    knob_interpolated: float | None = None
    epsilon: float | None = None
    loss: float | None = None
    base_loss: float | None = None
    bits: float | None = None
    bits_entropy: float | None = None
    bits_interpolated: float | None = None
    llc_mean: float | None = None
    llc_std_error: float | None = None
    weight_group: str | None = None
    measure: str | None = None
    value: float | None = None
    value_se: float | None = None
    detail: dict = field(default_factory=dict)
    elapsed_s: float | None = None
    device: str | None = None
    numerics: str | None = None
    seed: int | None = None
    experiment: str | None = None

    @property
    def key(self) -> str:
        # a loss-curve row is told apart by its knob value, a critical row by its ε, a measure's by
        # its group and knob; elsewhere the knob is a result, not part of the identity
        own = self.task in KNOB_ROWS
        parts = () if self.measure is None else (self.measure,)  # a measure's quantities share a task
        parts += () if self.weight_group is None else (self.weight_group,)
        return row_key(self.task_key, self.task, self.knob if own else None, self.epsilon, *parts)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
