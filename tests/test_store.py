import sqlite3

import pytest

from mdl_slt.errors import UserError
from mdl_slt.store import Record, Store, open_existing


def test_records_are_idempotent_and_readable(tmp_path):
    path = tmp_path / "r.sqlite"
    rec = Record("llc", model="m", revision="step1", config_hash="h", step=1, llc_mean=2.5, detail={"a": [1, 2]})
    curve = [Record("loss_curve", model="m", revision="step1", config_hash="h", compressor="rtn", knob=k, loss=k)
             for k in (4.0, 2.0)]
    with Store(path) as store:
        store.write([rec, *curve])
        store.write([rec])  # again: ignored, not duplicated
        assert store.has(rec.key) and store.has(curve[0].key)
        table = store.table()
    assert len(table) == 3
    assert table[table.task == "llc"].detail.iloc[0] == {"a": [1, 2]}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_critical_key_ignores_its_result():
    a = Record("critical", model="m", revision="r", config_hash="h", compressor="rtn", epsilon=0.1, knob=3.0)
    b = Record("critical", model="m", revision="r", config_hash="h", compressor="rtn", epsilon=0.1, knob=4.0)
    assert a.key == b.key


def test_missing_or_damaged_store_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no results store"):
        open_existing(tmp_path / "none.sqlite")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 1000)
    with pytest.raises(UserError, match="cannot open results store"):
        Store(bad)
