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
critical: {{compressors: [{{name: rtn, precision: 0.1}}], epsilons: [0.05, 0.2]}}
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


def _pages(pdf, tmp):
    """Every page rendered by poppler (pdftoppm) at 60 dpi, as (height, width, 3) uint8 arrays."""
    import numpy as np

    subprocess.run(["pdftoppm", "-r", "60", str(pdf), str(tmp / "page")], check=True)
    pages = []
    for path in sorted(tmp.glob("page-*.ppm")):
        magic, size, _, pixels = path.read_bytes().split(b"\n", 3)
        width, height = map(int, size.split())
        pages.append(np.frombuffer(pixels, dtype=np.uint8)[: width * height * 3].reshape(height, width, 3))
    return pages


TEXT_PAGES = {1: "title", 2: "summary", 3: "fits", 4: "pooled", 13: "predictions"}


def test_report_renders_every_page_with_its_figures_and_numbers(finished_run, tmp_path):
    import shutil

    import pandas as pd

    assert shutil.which("pdftoppm") and shutil.which("pdftotext"), "poppler-utils missing: .ci/run installs it"
    home, work, path, first, _ = finished_run
    pdf = work / "tiny.pdf"
    pages = _pages(pdf, tmp_path)
    assert len(pages) == 13  # title, summary, 2 tables, 8 figures, predictions
    for number, page in enumerate(pages, 1):
        colour = (page.max(2).astype(int) - page.min(2)) > 40  # seaborn's palette; text pages are black on white
        if number in TEXT_PAGES:
            assert colour.mean() == 0, f"page {number} ({TEXT_PAGES[number]}) should hold text only"
        else:
            assert colour.sum() > 100, f"page {number} has no drawn figure"  # an empty plot has none
    images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True).stdout.splitlines()[2:]
    assert sorted(int(line.split()[0]) for line in images) == [n for n in range(1, 14) if n not in TEXT_PAGES]

    summary = subprocess.run(["pdftotext", "-f", "2", "-l", "2", str(pdf), "-"], capture_output=True, text=True).stdout
    summary = " ".join(summary.split())
    fits = pd.read_csv(work / "tiny-fits.csv").dropna(subset=["slope"])
    assert len(fits) == 2  # tiny-a at both ε; tiny-b has 3 checkpoints, too few
    for _, f in fits.iterrows():
        assert f"R² = {f.r_squared:.2f}, Pearson r = {f.pearson_r:.2f}" in summary
        assert f"leave-one-out error {f.loo_rmse:.3g}" in summary
    for name in ("records", "measurements", "fits", "pooled", "eps-sweep", "predictions"):
        assert (work / f"tiny-{name}.csv").stat().st_size > 100
    done = run_cli("report", work / "tiny.sqlite", "-o", tmp_path / "again.pdf", home=home)
    assert done.returncode == 0 and "13 pages" in done.stdout


def test_predict_from_the_saved_fit_matches_a_fresh_measurement(finished_run):
    """The fit file carries the run's settings, so --verify re-measures exactly what the store holds."""
    import json

    home, work, path, first, _ = finished_run
    fit = json.loads((work / "tiny-fit.json").read_text())
    assert fit["llc"]["num_draws"] == 20 and fit["data"]["context_length"] == 32 and fit["versions"]["torch"]
    done = run_cli("predict", "--fit", work / "tiny-fit.json", "--model", "mdl-slt/tiny-a@step24", "--verify",
                   "--json", home=home)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    with open_existing(work / "tiny.sqlite") as store:
        table = store.table()
    stored = table[(table.revision == "step24") & (table.model == "mdl-slt/tiny-a")]
    assert answer["llc_mean"] == stored[stored.task == "llc"].llc_mean.item()
    critical = stored[stored.task == "critical"].set_index("epsilon").knob
    assert [p["epsilon"] for p in answer["predictions"]] == [0.05, 0.2]
    for p in answer["predictions"]:
        assert p["basis"] == "model" and p["lower"] < p["predicted"] < p["upper"]
        assert p["measured"] == critical[p["epsilon"]]
    bad = run_cli("predict", "--fit", work / "tiny.yaml", "--model", "mdl-slt/tiny-a@step24", home=home)
    assert bad.returncode == 2 and "is not a fit file" in bad.stderr
