"""The results store: one SQLite file, one tidy row per measurement, safe to resume.

Tables:
- `records`: one row per measurement, keyed by `mdl_slt.store.keys` (its task's key plus what tells
  the task's rows apart);
- `tasks`: one row per task, done (with its row count) or failed (with its one-line reason);
- `configs`: the settings behind every config hash, so a fit can name what it was measured with;
- `traces`: the LLC task's per-step SGLD losses (burn-in included), compressed, so λ̂ can be
  re-estimated with another burn-in without sampling again;
- `runs`: every run's resolved experiment.
A task's rows, its `tasks` row and its trace are written in one transaction, so a run killed at
any moment leaves whole tasks or nothing. WAL mode lets readers (report, status) open the file
while a run writes. The one writer is the process that runs the experiment.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from mdl_slt.errors import UserError
from mdl_slt.store.records import COLUMNS, TABLES, Record, now

class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(f"CREATE TABLE IF NOT EXISTS records ({', '.join(f'{c} {t}' for c, t in COLUMNS.items())})")
            present = {row[1] for row in self.db.execute("PRAGMA table_info(records)")}
            for column, kind in COLUMNS.items():  # a store of an earlier version gains the new columns
                if column not in present:
                    self.db.execute(f"ALTER TABLE records ADD COLUMN {column} {kind.replace(' PRIMARY KEY', '')}")
            for name, columns in TABLES.items():
                self.db.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
            self.db.commit()
        except sqlite3.DatabaseError as error:
            raise UserError(f"cannot open results store {self.path}: {error}; point to another file (this one is "
                            "left as it is)") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def write_task(self, key: str, unit: str, task: str, config_hash: str, records: list[Record],
                   trace: bytes | None = None) -> None:
        """Store a finished task in one transaction: its rows, its `tasks` row (done), its trace."""
        from mdl_slt import __version__

        stamp = now()
        rows = []
        for r in records:
            values = {c: getattr(r, c, None) for c in COLUMNS}
            values.update(key=r.key, detail=json.dumps(r.detail), package_version=__version__, created_at=stamp)
            rows.append(tuple(values[c] for c in COLUMNS))
        with self.db:
            self.db.executemany(
                f"INSERT OR IGNORE INTO records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows)
            if trace is not None:
                self.db.execute("INSERT OR REPLACE INTO traces VALUES (?, ?)", (key, trace))
            self.db.execute("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, 'done', NULL, ?, ?)",
                            (key, unit, task, config_hash, len(rows), stamp))

    def fail_task(self, key: str, unit: str, task: str, config_hash: str, reason: str) -> None:
        """Remember why a task failed (the latest reason); a done task stays done."""
        with self.db:
            self.db.execute("INSERT INTO tasks VALUES (?, ?, ?, ?, 'failed', ?, 0, ?) ON CONFLICT(key) DO UPDATE "
                            "SET reason = excluded.reason, at = excluded.at WHERE status = 'failed'",
                            (key, unit, task, config_hash, reason, now()))

    def task_states(self) -> dict[str, tuple[str, str | None]]:
        """task key → (done | failed, reason)."""
        return {k: (s, r) for k, s, r in self.db.execute("SELECT key, status, reason FROM tasks")}

    def failed(self) -> list[tuple[str, str, str, str]]:
        """(unit, task name, config hash, reason) of every task whose latest attempt failed."""
        return list(self.db.execute("SELECT unit, task, config_hash, reason FROM tasks WHERE status = 'failed'"))

    def done(self) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM tasks WHERE status = 'done'")}

    def settled_since(self, since: str) -> set[str]:
        """Tasks done, or failed at or after `since` (an ISO time): nothing more to try in this run."""
        return {k for (k,) in self.db.execute("SELECT key FROM tasks WHERE status = 'done' OR at >= ?", (since,))}

    def record_checkpoints(self, checkpoints: list[tuple[str, str, str | None, str | None]]) -> None:
        """The bytes each checkpoint (ref, model, revision, identity) has now: what a fit uses."""
        stamp = now()
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                                [(*c, stamp) for c in checkpoints])

    def checkpoints(self) -> dict[tuple[str, str | None], str | None]:
        """(model, revision) → the identity of its bytes at the latest run."""
        return {(m, r): i for m, r, i in self.db.execute("SELECT model, revision, identity FROM checkpoints")}

    def rows_of(self, task_key: str) -> list[dict]:
        """Every row a task wrote, as column → value (`detail` decoded)."""
        cursor = self.db.execute("SELECT * FROM records WHERE task_key = ? ORDER BY key", (task_key,))
        names = [c[0] for c in cursor.description]
        return [{**dict(zip(names, row)), "detail": json.loads(row[names.index("detail")] or "{}")} for row in cursor]

    def detail(self, task_key: str) -> dict | None:
        """The `detail` of a task's first row; None when the task wrote none."""
        row = self.db.execute("SELECT detail FROM records WHERE task_key = ? ORDER BY key LIMIT 1", (task_key,)).fetchone()
        return json.loads(row[0]) if row else None

    def unconverged(self) -> dict[str, tuple]:
        """LLC task key → (R̂, ESS, steps, relaxation steps or None) for every LLC whose chains did
        not reach their targets."""
        rows = self.db.execute("SELECT task_key, json_extract(detail, '$.r_hat'), json_extract(detail, '$.ess'), "
                               "json_extract(detail, '$.steps'), json_extract(detail, '$.extra.relaxation_steps') "
                               "FROM records WHERE task = 'llc' AND json_extract(detail, '$.converged') = 0")
        return {key: tuple(rest) for key, *rest in rows}

    def record_config(self, config_hash: str, kind: str, settings: dict) -> None:
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO configs VALUES (?, ?, ?)",
                            (config_hash, kind, json.dumps(settings, sort_keys=True)))

    def configs(self) -> dict[str, dict]:
        """config hash → {kind, settings}."""
        return {h: {"kind": k, "settings": json.loads(s)} for h, k, s in self.db.execute("SELECT * FROM configs")}

    def trace(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT data FROM traces WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def last_config(self) -> dict | None:
        row = self.db.execute("SELECT config FROM runs ORDER BY rowid DESC LIMIT 1").fetchone()
        return json.loads(row[0]) if row else None

    def log_run(self, experiment: str, config: dict) -> None:
        with self.db:
            self.db.execute("INSERT INTO runs VALUES (?, ?, ?)", (now(), experiment, json.dumps(config, sort_keys=True)))

    def table(self):
        """All records as a pandas DataFrame, `detail` decoded."""
        import pandas as pd

        frame = pd.read_sql_query("SELECT * FROM records ORDER BY model, step, task, compressor, epsilon, knob", self.db)
        frame["detail"] = frame["detail"].map(lambda text: json.loads(text) if text else {})
        return frame

    def runs(self):
        import pandas as pd

        return pd.read_sql_query("SELECT * FROM runs ORDER BY rowid", self.db)


SQLITE_HEADER = b"SQLite format 3\x00"


def open_existing(path: str | Path) -> Store:
    """The results store at `path`; a missing file, or one that is no SQLite database (a report, a
    CSV), is one line saying so, and the file is left as it is."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no results store at {path}: run an experiment first (`mdl-slt run FILE.yaml`)")
    with path.open("rb") as handle:
        head = handle.read(len(SQLITE_HEADER))
    if head and head != SQLITE_HEADER:
        kind = {b"%PDF": "a PDF report", b"PK\x03\x04": "a zip archive"}.get(head[:4], "not an SQLite database")
        raise UserError(f"{path} is not a results store ({kind}): give the .sqlite file a run wrote, the experiment's "
                        "`store` (e.g. reports/demo.sqlite)")
    return Store(path)
