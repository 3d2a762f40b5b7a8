import re
import subprocess

import pytest

from mdl_slt import __version__
from mdl_slt.store import open_existing
from tests.conftest import run_cli

EXPERIMENT = """
name: tiny
store: {store}
report: {report}
models:
  - id: mdl-slt/tiny-a
  - id: mdl-slt/tiny-b
    revisions: [step8, step16, step24]
data: {{context_length: 32, eval_sequences: 16, llc_sequences: 64}}
llc: {{step_size: 1.0e-4, num_chains: 2, num_draws: 20, num_burnin: 5, batch_size: 8}}
critical: {{epsilons: [0.05, 0.2], precision: 0.1}}
"""


@pytest.fixture(scope="module")
def finished_run(tiny_suite, tmp_path_factory):
    home, manifest = tiny_suite
    work = tmp_path_factory.mktemp("run")
    path = work / "tiny.yaml"
    path.write_text(EXPERIMENT.format(store=work / "tiny.sqlite", report=work / "tiny.pdf"))
    first = run_cli("run", path, home=home)
    return home, work, path, first, manifest


def test_run_records_every_checkpoint(finished_run):
    home, work, path, first, manifest = finished_run
    assert first.returncode == 0, first.stderr
    units = len(manifest["models"]["mdl-slt/tiny-a"]) + 3
    with open_existing(work / "tiny.sqlite") as store:
        table = store.table()
    for task in ("base_loss", "llc"):
        assert (table.task == task).sum() == units
    assert (table.task == "critical").sum() == units * 2
    crit = table[table.task == "critical"]
    assert crit.knob.notna().all() and (crit.bits > 0).all()
    assert set(table.step) == set(range(0, 25)) & ({0, 1, 2, 4, 8, 16, 24})
    assert table.config_hash.notna().all() and (table.package_version == __version__).all()


def test_rerun_skips_what_is_stored(finished_run):
    home, work, path, first, _ = finished_run
    with open_existing(work / "tiny.sqlite") as store:
        before = len(store.table())
    again = run_cli("run", path, home=home)
    assert again.returncode == 0, again.stderr
    assert re.search(r"0 measured, \d+ already stored", again.stderr)
    with open_existing(work / "tiny.sqlite") as store:
        assert len(store.table()) == before


def test_report_pdf_and_csv(finished_run):
    home, work, path, first, _ = finished_run
    pdf = work / "tiny.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    assert len(re.findall(rb"/Type /Page\b", pdf.read_bytes())) == 5  # summary + 4 figure pages
    for name in ("records", "measurements", "fits"):
        assert (work / f"tiny-{name}.csv").stat().st_size > 100
    done = run_cli("report", work / "tiny.sqlite", "-o", work / "again.pdf", home=home)
    assert done.returncode == 0 and "5 pages" in done.stdout
