"""The results store: one SQLite file, one tidy row per measurement, safe to resume.

Every row has an idempotent `key` (a hash of what was measured and the settings it was
measured with); a task writes all its rows in one transaction, so a run killed at any moment
leaves whole tasks or nothing. WAL mode lets readers (report, status) open the file while a
run writes.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from mdl_slt.errors import UserError

COLUMNS = {
    "key": "TEXT PRIMARY KEY",
    "experiment": "TEXT",
    "task": "TEXT NOT NULL",  # base_loss | llc | loss_curve | critical
    "model": "TEXT NOT NULL",
    "revision": "TEXT",
    "step": "INTEGER",
    "num_params": "INTEGER",
    "tokens_seen": "INTEGER",
    "compressor": "TEXT",
    "knob": "REAL",
    "epsilon": "REAL",
    "loss": "REAL",
    "base_loss": "REAL",
    "bits": "REAL",
    "bits_entropy": "REAL",
    "llc_mean": "REAL",
    "llc_std_error": "REAL",
    "detail": "TEXT",  # JSON: chains, traces, search evaluations, flags
    "elapsed_s": "REAL",
    "config_hash": "TEXT",
    "seed": "INTEGER",
    "package_version": "TEXT",
    "created_at": "TEXT",
}


@dataclass
class Record:
    task: str
    model: str
    revision: str | None
    config_hash: str
    step: int | None = None
    num_params: int | None = None
    tokens_seen: int | None = None
    compressor: str | None = None
    knob: float | None = None
    epsilon: float | None = None
    loss: float | None = None
    base_loss: float | None = None
    bits: float | None = None
    bits_entropy: float | None = None
    llc_mean: float | None = None
    llc_std_error: float | None = None
    detail: dict = field(default_factory=dict)
    elapsed_s: float | None = None
    seed: int | None = None
    experiment: str | None = None

    @property
    def key(self) -> str:
        knob = self.knob if self.task == "loss_curve" else None  # elsewhere the knob is a result
        return record_key(self.task, self.model, self.revision, self.config_hash,
                          self.compressor, knob, self.epsilon)


def record_key(task, model, revision, config_hash, compressor=None, knob=None, epsilon=None) -> str:
    return "|".join(str(x) for x in (task, model, revision, config_hash, compressor, knob, epsilon))


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(f"CREATE TABLE IF NOT EXISTS records ({', '.join(f'{c} {t}' for c, t in COLUMNS.items())})")
            self.db.execute("CREATE TABLE IF NOT EXISTS runs (started_at TEXT, experiment TEXT, config TEXT)")
            self.db.execute("CREATE TABLE IF NOT EXISTS failures (unit TEXT PRIMARY KEY, reason TEXT, at TEXT)")
            self.db.commit()
        except sqlite3.DatabaseError as error:
            raise UserError(f"cannot open results store {self.path}: {error}; "
                            "point to another file or remove the damaged one") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def has(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM records WHERE key = ?", (key,)).fetchone() is not None

    def write(self, records: list[Record]) -> None:
        """Insert all `records` in one transaction; rows already present are left as they are."""
        from mdl_slt import __version__

        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows = []
        for r in records:
            values = {c: getattr(r, c, None) for c in COLUMNS}
            values.update(key=r.key, detail=json.dumps(r.detail), package_version=__version__, created_at=now)
            rows.append(tuple(values[c] for c in COLUMNS))
        with self.db:
            self.db.executemany(
                f"INSERT OR IGNORE INTO records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows)

    def record_failure(self, unit: str, reason: str) -> None:
        """Remember why `unit` failed (the latest reason); cleared when it later succeeds."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?)",
                            (unit, reason, datetime.now(timezone.utc).isoformat(timespec="seconds")))

    def clear_failure(self, unit: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM failures WHERE unit = ?", (unit,))

    def failures(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT unit, reason FROM failures").fetchall())

    def last_config(self) -> dict | None:
        row = self.db.execute("SELECT config FROM runs ORDER BY rowid DESC LIMIT 1").fetchone()
        return json.loads(row[0]) if row else None

    def log_run(self, experiment: str, config: dict) -> None:
        with self.db:
            self.db.execute("INSERT INTO runs VALUES (?, ?, ?)",
                            (datetime.now(timezone.utc).isoformat(timespec="seconds"), experiment,
                             json.dumps(config, sort_keys=True)))

    def table(self):
        """All records as a pandas DataFrame, `detail` decoded."""
        import pandas as pd

        frame = pd.read_sql_query("SELECT * FROM records ORDER BY model, step, task, compressor, epsilon, knob", self.db)
        frame["detail"] = frame["detail"].map(json.loads)
        return frame

    def runs(self):
        import pandas as pd

        return pd.read_sql_query("SELECT * FROM runs ORDER BY started_at", self.db)


def open_existing(path: str | Path) -> Store:
    if not Path(path).is_file():
        raise UserError(f"no results store at {path}: run an experiment first (`mdl-slt run FILE.yaml`)")
    return Store(path)
