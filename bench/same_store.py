"""Are two results stores the same measurements, row for row? For checking that a change of code
(a refactoring, a faster path) changed no result.

    python bench/same_store.py BEFORE.sqlite AFTER.sqlite [--tolerance 0]
    python bench/same_store.py BEFORE.sqlite AFTER.sqlite --by-content --llc-se 3

Compares the task keys and states, every record (keys, losses, knob values, description lengths,
λ̂ and its error, the JSON detail), every stored trace (the losses and their metadata) and the
recorded settings. Ignored: when and how fast (created_at, elapsed_s, steps_per_second) and the
package version. With --tolerance, numbers may differ by that much relative (else: exactly).

`--by-content` matches records by what they measured (task, model, revision, compressor entry, ε,
the knob of a loss-curve point) instead of by key, for stores whose keys were built differently
(another measurement version, checkpoint identities in the keys); tasks, settings and traces are
then not compared. `--llc-se K` lets λ̂ differ by up to K standard errors (√(se₁² + se₂²)) and
skips the LLC's own diagnostics: for a faster sampler path, which samples other chains of the same
posterior; every base loss and critical value must still agree exactly.
Prints what differs and exits 1, or one line saying the two stores agree.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
from pathlib import Path

IGNORED = {"created_at", "elapsed_s", "steps_per_second", "package_version", "at", "rowid"}
KEYS = {"key", "task_key", "config_hash", "checkpoint_id"}  # how a record is filed, not what it measured
CONTENT = ("task", "model", "revision", "compressor", "epsilon", "knob")


def _same(a, b, tolerance: float) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = (set(a) | set(b)) - IGNORED
        return all(_same(a.get(k), b.get(k), tolerance) for k in keys)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y, tolerance) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or abs(a - b) <= tolerance * max(abs(a), abs(b))
    return a == b


def _rows(db: sqlite3.Connection, table: str, key: str) -> dict:
    db.row_factory = sqlite3.Row
    rows = {}
    for row in db.execute(f"SELECT * FROM {table}"):
        values = {k: row[k] for k in row.keys() if k not in IGNORED}
        for name in ("detail", "settings"):
            if values.get(name):
                values[name] = json.loads(values[name])
        rows[values[key]] = values
    return rows


def _traces(db: sqlite3.Connection) -> dict:
    from mdl_slt.llc.trace import Trace

    found = {}
    for key, data in db.execute("SELECT key, data FROM traces"):
        trace = Trace.from_bytes(data)
        meta = {k: v for k, v in vars(trace).items() if k != "losses"}
        found[key] = {"losses": trace.losses.astype(float).tolist(), "meta": meta}
    return found


def _by_content(db: sqlite3.Connection, llc_se: float | None) -> dict:
    rows = {}
    for values in _rows(db, "records", "key").values():
        name = tuple(values[c] if c != "knob" or values["task"] == "loss_curve" else None for c in CONTENT)
        rows[name] = {k: v for k, v in values.items() if k not in KEYS and k != "detail"}
        if values["task"] != "llc" or llc_se is None:
            rows[name]["detail"] = values.get("detail")
    return rows


def compare_content(before: Path, after: Path, tolerance: float, llc_se: float | None) -> list[str]:
    """Differences between the records of two stores matched by what they measured."""
    differences = []
    with sqlite3.connect(before) as a, sqlite3.connect(after) as b:
        left, right = _by_content(a, llc_se), _by_content(b, llc_se)
    for k in sorted(set(left) ^ set(right), key=str):
        differences.append(f"records: {k} only in {before if k in left else after}")
    worst = 0.0
    for k in sorted(set(left) & set(right), key=str):
        x, y = left[k], right[k]
        if k[0] == "llc" and llc_se is not None:
            se = (x["llc_std_error"] ** 2 + y["llc_std_error"] ** 2) ** 0.5
            apart = abs(x["llc_mean"] - y["llc_mean"]) / se
            worst = max(worst, apart)
            if apart > llc_se:
                differences.append(f"records: {k} λ̂ {x['llc_mean']:.3f} vs {y['llc_mean']:.3f}, {apart:.1f} se apart")
            x, y = {**x, "llc_mean": 0, "llc_std_error": 0}, {**y, "llc_mean": 0, "llc_std_error": 0}
        if not _same(x, y, tolerance):
            fields = sorted(f for f in set(x) | set(y) if not _same(x.get(f), y.get(f), tolerance))
            differences.append(f"records: {k} differs in {', '.join(fields)}")
    if not differences:
        print(f"the stores agree: {len(left)} records by content"
              + (f"; λ̂ within {llc_se:g} standard errors (largest gap {worst:.2f})" if llc_se is not None else ""))
    return differences


def compare(before: Path, after: Path, tolerance: float = 0.0) -> list[str]:
    """Every difference between the two stores, as lines; [] when they agree."""
    differences = []
    with sqlite3.connect(before) as a, sqlite3.connect(after) as b:
        for table, key in (("tasks", "key"), ("records", "key"), ("configs", "hash")):
            left, right = _rows(a, table, key), _rows(b, table, key)
            for k in sorted(set(left) ^ set(right)):
                differences.append(f"{table}: {k} only in {before if k in left else after}")
            for k in sorted(set(left) & set(right)):
                if not _same(left[k], right[k], tolerance):
                    fields = sorted(f for f in set(left[k]) | set(right[k])
                                    if not _same(left[k].get(f), right[k].get(f), tolerance))
                    differences.append(f"{table}: {k} differs in {', '.join(fields)}")
        left, right = _traces(a), _traces(b)
        for k in sorted(set(left) ^ set(right)):
            differences.append(f"traces: {k} only in {before if k in left else after}")
        for k in sorted(set(left) & set(right)):
            if not _same(left[k], right[k], tolerance):
                differences.append(f"traces: {k} differs")
        counts = {t: a.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("tasks", "records", "traces")}
    if not differences:
        print(f"the stores agree: {counts['tasks']} tasks, {counts['records']} records, {counts['traces']} traces "
              f"({'exactly' if tolerance == 0 else f'within {tolerance:g} relative'}; timings and version aside)")
    return differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.0, help="relative tolerance on numbers [default: 0]")
    parser.add_argument("--by-content", action="store_true", help="match records by what they measured, not by key")
    parser.add_argument("--llc-se", type=float, default=None, help="with --by-content: λ̂ may differ by this many "
                                                                   "standard errors")
    args = parser.parse_args()
    for path in (args.before, args.after):
        if not path.is_file():
            sys.exit(f"same_store: no store at {path}")
    if args.by_content:
        differences = compare_content(args.before, args.after, args.tolerance, args.llc_se)
    else:
        differences = compare(args.before, args.after, args.tolerance)
    for line in differences[:50]:
        print(line)
    if differences:
        print(f"{len(differences)} differences" + (" (first 50 shown)" if len(differences) > 50 else ""))
        sys.exit(1)


if __name__ == "__main__":
    main()
