"""The store: rows keyed by their task, a task's rows written whole, failures remembered, old stores upgraded."""

import sqlite3

import pytest

from mdl_slt.errors import UserError
from mdl_slt.store.database import Store, open_existing
from mdl_slt.store.keys import task_key
from mdl_slt.store.records import Record


def rows(key):
    llc = Record("llc", model="m", revision="step1", task_key=key, config_hash="h", step=1, llc_mean=2.5,
                 detail={"a": [1, 2]})
    curve = [Record("loss_curve", model="m", revision="step1", task_key=key, config_hash="h", compressor="rtn",
                    knob=k, loss=k) for k in (4.0, 2.0)]
    return [llc, *curve]


def test_a_task_is_written_whole_and_idempotently(tmp_path):
    path = tmp_path / "r.sqlite"
    key = task_key("llc", "m", "step1", "c0ffee", "h")
    with Store(path) as store:
        store.write_task(key, "m@step1", "llc", "h", rows(key), trace=b"\x00\x01")
        store.write_task(key, "m@step1", "llc", "h", rows(key))  # again: ignored, not duplicated
        assert store.done() == {key} and store.trace(key) == b"\x00\x01"
        table = store.table()
    assert len(table) == 3 and set(table.task_key) == {key}
    assert table[table.task == "llc"].detail.iloc[0] == {"a": [1, 2]}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT status, rows FROM tasks").fetchall() == [("done", 3)]


def test_failures_are_remembered_until_the_task_is_done(tmp_path):
    key = task_key("critical:gptq", "m", "step1", "c0ffee", "h")
    with Store(tmp_path / "r.sqlite") as store:
        store.fail_task(key, "m@step1", "critical:gptq", "h", "out of memory")
        store.fail_task(key, "m@step1", "critical:gptq", "h", "out of memory again")
        assert store.task_states() == {key: ("failed", "out of memory again")} and store.done() == set()
        store.write_task(key, "m@step1", "critical:gptq", "h", [])
        store.fail_task(key, "m@step1", "critical:gptq", "h", "a late report of an old failure")
        assert store.task_states() == {key: ("done", None)}


def test_keys_tell_tasks_and_rows_apart():
    a = Record("critical", model="m", revision="r", task_key="t1", config_hash="h", compressor="rtn", epsilon=0.1, knob=3.0)
    b = Record("critical", model="m", revision="r", task_key="t1", config_hash="h", compressor="rtn", epsilon=0.1, knob=4.0)
    c = Record("critical", model="m", revision="r", task_key="t2", config_hash="h", compressor="rtn", epsilon=0.1, knob=3.0)
    assert a.key == b.key  # the knob of a critical row is its result, not its identity
    assert a.key != c.key  # another task (another compressor entry) never shares a key


def test_a_store_of_an_earlier_version_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE records (key TEXT PRIMARY KEY, task TEXT NOT NULL, model TEXT NOT NULL, loss REAL)")
        db.execute("INSERT INTO records VALUES ('k', 'base_loss', 'm', 1.5)")
    with Store(path) as store:
        table = store.table()
    assert table.loss.tolist() == [1.5] and {"task_key", "device", "numerics", "knob_interpolated"} <= set(table)


def test_missing_or_damaged_store_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no results store"):
        open_existing(tmp_path / "none.sqlite")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 1000)
    with pytest.raises(UserError, match="cannot open results store"):
        Store(bad)


def test_claims_wait_for_a_live_lease_but_not_for_a_holder_that_died_on_this_machine(tmp_path):
    """A lease is trusted while it runs, except when its holder ran here and its process is gone;
    a lapsed lease is taken over wherever its holder ran."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from mdl_slt.store.claims import WAIT, Claims, Leases, machine

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with Store(tmp_path / "r.sqlite") as store:
            holders = {"alive here": f"{machine()}:{alive.pid}:aaaaaa", "dead here": f"{machine()}:{dead.pid}:bbbbbb",
                       "elsewhere": f"elsewhere/1:{dead.pid}:cccccc", "lapsed": f"elsewhere/1:{alive.pid}:dddddd"}
            for unit, holder in holders.items():
                assert Leases(store).claim(unit, holder, -1.0 if unit == "lapsed" else 3600.0)
            task = SimpleNamespace(key="a task")
            with Claims(store, [(unit, [task]) for unit in holders]) as claims:
                taken = [claims.next()[0] for _ in range(2)]
                assert sorted(taken) == ["dead here", "lapsed"] and claims.next() == WAIT
                assert not claims.finish()  # the live holders are still at work
            assert set(Leases(store).live_holders()) == {holders["alive here"], holders["elsewhere"]}
    finally:
        alive.kill()
        alive.wait()
