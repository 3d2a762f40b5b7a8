import re
import subprocess
from pathlib import Path

import pytest

from mdl_slt import __version__
from mdl_slt.store.database import open_existing
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
analysis: {{min_step: 0}}
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


def _filled(page) -> tuple[float, float]:
    """The share of the page's width and height that its drawn content spans."""
    import numpy as np

    ink = np.argwhere(page.min(axis=2) < 235)
    (top, left), (bottom, right) = ink.min(axis=0), ink.max(axis=0)
    return (right - left) / page.shape[1], (bottom - top) / page.shape[0]


def test_report_renders_every_page_as_vector_figures_that_fill_it(finished_run, tmp_path):
    import shutil

    import pandas as pd

    from mdl_slt.analysis import analyse
    from mdl_slt.report import figure_pages

    assert shutil.which("pdftoppm") and shutil.which("pdftotext"), "poppler-utils missing: .ci/run installs it"
    home, work, path, first, _ = finished_run
    pdf = work / "tiny.pdf"
    pages = _pages(pdf, tmp_path)
    analysis = analyse(work / "tiny.sqlite")
    figures = len(figure_pages(analysis))
    assert len(analysis.across_runs)  # two runs: the answer across runs leads, the per-run fits follow
    # the answer's picture, the across-runs table, per-run fits, settings, the figures, the appendix of fits, of
    # baselines and across runs
    assert len(pages) == 4 + figures + 3
    drawn = {1} | set(range(5, 5 + figures))
    for number, page in enumerate(pages, 1):
        colour = (page.max(2).astype(int) - page.min(2)) > 40  # seaborn's palette; text pages are black on white
        width, height = _filled(page)
        if number in drawn:
            assert colour.sum() > 20, f"page {number} has no drawn figure"
        if number in drawn - {1}:
            assert width > 0.9 and height > 0.8, f"figure page {number} is mostly empty ({width:.0%} × {height:.0%})"
        elif number != 1:
            assert colour.mean() == 0, f"page {number} should hold text only"
            assert height > 0.1, f"text page {number} is nearly blank"
    images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True).stdout.splitlines()[2:]
    assert images == []  # vector graphics: no raster image anywhere
    kept = sorted(p.name for p in (work / "tiny-figures").iterdir())  # every figure as files, named by its page
    assert len(kept) == 2 * (figures + 1) and kept[:2] == ["01-answer.png", "01-answer.svg"]
    assert {p.split(".")[0][:2] for p in kept} == {"01"} | {f"{n:02d}" for n in range(5, 5 + figures)}

    def text(page):
        return " ".join(subprocess.run(["pdftotext", "-f", str(page), "-l", str(page), str(pdf), "-"],
                                       capture_output=True, text=True).stdout.split())

    first, second, third = text(1), text(2), text(3)
    across = pd.read_csv(work / "tiny-across-runs.csv")
    for _, r in across.iterrows():  # page 1 says per family what predicts unseen runs and λ̂'s direction
        assert f"{r.compressor} (bits) at ε = 0.05 / 0.2: best on unseen runs" in first
        assert f"Pooling {r.scope} (r(λ̂, L) = {r.r_llc_loss:.2f}" in second  # the table follows on page 2
    assert "At equal loss, λ̂'s coefficient is" in first and "theory's direction" in first
    assert "Across runs: does λ̂ predict the critical compression beyond the loss?" in second
    assert "Within each run, the same lines on the held-out loss" in second
    fits = pd.read_csv(work / "tiny-fits.csv").dropna(subset=["slope"])
    assert len(fits) == 2  # tiny-a at both ε; tiny-b has too few checkpoints in the window
    for _, f in fits.iterrows():
        assert f"{f.r_squared:.2f} {f.slope:.3g} [{f.slope_ci_low:.3g}, {f.slope_ci_high:.3g}]" in third
    baselines = pd.read_csv(work / "tiny-baselines.csv").set_index(["model", "compressor", "epsilon"])
    for _, f in fits.iterrows():  # the per-run table says, per fit, which predictor wins out of sample
        best = baselines.loc[(f.model, f.compressor, f.epsilon)].best_out_of_sample
        assert {"llc": "λ̂", "loss": "loss", "tokens": "tokens"}[best] + ";" in third
    for name in ("records", "measurements", "fits", "fits-all", "baselines", "pooled", "across-runs", "eps-sweep",
                 "predictions", "left-out"):
        assert (work / f"tiny-{name}.csv").exists()
    done = run_cli("report", work / "tiny.sqlite", "-o", tmp_path / "again.pdf", home=home)
    assert done.returncode == 0 and f"{len(pages)} pages" in done.stdout


def data_of(ax):
    """The x and y values an axes draws in data coordinates (lines, markers, error bars), leaving
    out reference lines and spans drawn in axes coordinates."""
    import numpy as np

    xs, ys = [], []
    for line in ax.get_lines():
        if line.get_transform().contains_branch(ax.transData):
            data = np.asarray(line.get_xydata(), float)
            if data.size and not (len(data) == 2 and (data[0, 0] == data[1, 0] or data[0, 1] == data[1, 1])
                                  and line.get_linestyle() == "--"):
                xs.append(data[:, 0])
                ys.append(data[:, 1])
    for collection in ax.collections:
        offsets = np.asarray(collection.get_offsets(), float)
        if offsets.size and collection.get_transform().contains_branch(ax.transData) is False:
            offsets = np.asarray(collection.get_offset_transform().transform(offsets))
            offsets = ax.transData.inverted().transform(offsets)
        if offsets.size:
            xs.append(offsets[:, 0])
            ys.append(offsets[:, 1])
    x = np.concatenate(xs) if xs else np.array([])
    y = np.concatenate(ys) if ys else np.array([])
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def axis_problems(fig) -> list[str]:
    """What is wrong with a figure's axes: a training-step axis reaching below 0 or labelled with
    negative steps; a log axis spanning more than a decade beyond its data; a linear axis more
    than twice its data's span. Categorical axes (every tick labelled with a name, such as a row
    per method) are not judged by their data."""
    import numpy as np

    def categorical(axis) -> bool:
        formatter = axis.get_major_formatter()
        texts = [formatter(value, i).replace("\u2212", "-") for i, value in enumerate(axis.get_majorticklocs())]
        numeric = [t for t in texts if "$" in t or t.lstrip("-").replace(".", "", 1).isdigit()]  # mathtext: a number
        return bool(texts) and all(texts) and not numeric

    problems = []
    for ax in fig.axes:
        if not ax.get_visible() or not ax.has_data():
            continue
        x, y = data_of(ax)
        if not len(x):
            continue
        for name, values, limits, scale in (("x", x, ax.get_xlim(), ax.get_xscale()),
                                            ("y", y, ax.get_ylim(), ax.get_yscale())):
            if categorical(ax.xaxis if name == "x" else ax.yaxis):
                continue
            low, high = min(limits), max(limits)
            if name == "x" and "step" in ax.get_xlabel():
                ticks = [t for t in ax.get_xticks() if low <= t <= high]
                if low < 0 or any(t < 0 for t in ticks):
                    problems.append(f"{ax.get_title()!r}: training steps below 0 ({low:g}, ticks {ticks})")
            if scale == "log":
                positive = values[values > 0]
                if len(positive) and (np.log10(high / low) > np.log10(positive.max() / positive.min()) + 1.0):
                    problems.append(f"{ax.get_title()!r} {name}: log axis {low:.3g}–{high:.3g} for data "
                                    f"{positive.min():.3g}–{positive.max():.3g}")
            elif scale == "linear" and np.ptp(values) > 0 and (high - low) > 2.5 * np.ptp(values) + 1e-9:
                problems.append(f"{ax.get_title()!r} {name}: axis {low:.3g}–{high:.3g} for data "
                                f"{values.min():.3g}–{values.max():.3g}")
    return problems


def test_every_figure_takes_its_axes_from_its_data(finished_run):
    from mdl_slt.analysis import analyse
    from mdl_slt.report import figure_pages
    from mdl_slt.report.figures import plt

    home, work, path, first, _ = finished_run
    for title, caption, draw in figure_pages(analyse(work / "tiny.sqlite")):
        fig = draw()
        assert axis_problems(fig) == [], title
        assert len(caption) > 60
        plt.close(fig)


def test_the_axis_check_catches_the_two_old_bugs():
    """A symmetric-log step axis left to autoscale (ticks at −10¹ and −10⁰), and an ε-sweep axis
    from 10⁻¹⁰ to 10⁶ around data at 10²–10⁴: both are what the report once printed."""
    from mdl_slt.report.figures import plt

    fig, (steps, sweep) = plt.subplots(1, 2)
    steps.plot([0, 1, 2, 4, 64, 1000], [1.0, 1.1, 1.3, 2.0, 20.0, 45.0], marker="o")
    steps.set(xscale="symlog", xlabel="training step")
    sweep.scatter([20.0, 30.0, 45.0], [1e2, 3e3, 1e4])
    sweep.set(xscale="log", yscale="log", ylim=(1e-10, 1e6))
    fig.canvas.draw()
    problems = axis_problems(fig)
    assert any("training steps below 0" in p for p in problems)
    assert any("log axis 1e-10–1e+06" in p for p in problems)
    plt.close(fig)


def test_predict_from_the_saved_fit_matches_a_fresh_measurement(finished_run):
    """The fit file carries the settings of the rows it fits, so --verify re-measures exactly what
    the store holds."""
    import json

    import pandas as pd

    home, work, path, first, _ = finished_run
    fit = json.loads((work / "tiny-fit.json").read_text())
    across = pd.read_csv(work / "tiny-across-runs.csv")  # the answer across runs travels with the fit
    assert len(fit["across_runs"]) == len(across) and {r["scope"] for r in fit["across_runs"]} == set(across.scope)
    llc = fit["configs"][fit["lines"][0]["llc_config"]]["settings"]
    assert llc["llc"]["num_draws"] == 20 and llc["data"]["context_length"] == 32 and fit["versions"]["torch"]
    done = run_cli("predict", "--fit", work / "tiny-fit.json", "--model", "mdl-slt/tiny-a@step24", "--verify",
                   "--json", home=home)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    with open_existing(work / "tiny.sqlite") as store:
        table = store.table()
    stored = table[(table.revision == "step24") & (table.model == "mdl-slt/tiny-a")]
    assert answer["llc_mean"] == stored[stored.task == "llc"].llc_mean.item() and answer["settings_differ_from_fit"] == []
    critical = stored[stored.task == "critical"].set_index("epsilon").knob_interpolated
    assert [p["epsilon"] for p in answer["predictions"]] == [0.05, 0.2]
    ranges = {line["epsilon"]: line["knob_range"] for line in fit["lines"] if line["model"] == "mdl-slt/tiny-a"}
    for p in answer["predictions"]:
        assert p["basis"] == "model" and p["lower"] < p["predicted"] < p["upper"]
        assert p["measured"] == critical[p["epsilon"]]
        low, high = ranges[p["epsilon"]]
        assert low <= p["lower"] and p["upper"] <= high  # an interval never leaves the knob's range
    errors = stored[stored.task == "critical"].detail.map(lambda d: d["critical_se"])
    assert errors.notna().all() and (errors >= 0).all()
    bad = run_cli("predict", "--fit", work / "tiny.yaml", "--model", "mdl-slt/tiny-a@step24", home=home)
    assert bad.returncode == 2 and "is not a fit file" in bad.stderr


def test_every_csv_reads_with_pandas_and_every_column_is_documented(finished_run):
    """reports/README.md is the reference written from `report.columns`; each CSV of a report reads
    back, empty ones with their header, and holds no column the reference does not describe."""
    import pandas as pd

    from mdl_slt.report.columns import TABLES, columns, header, markdown

    home, work, path, first, _ = finished_run
    assert (Path(__file__).parent.parent / "reports" / "README.md").read_text() == markdown()
    for name in TABLES:
        frame = pd.read_csv(work / f"tiny-{name}.csv")  # an empty table would raise EmptyDataError without its header
        assert set(frame.columns) <= set(columns(name)), (name, set(frame.columns) - set(columns(name)))
        assert set(header(name)) <= set(frame.columns), name
    assert len(pd.read_csv(work / "tiny-robustness.csv")) == 0  # no robustness section: a header, no rows


def test_results_and_traces_in_python(finished_run):
    import arviz as az

    import mdl_slt

    home, work, path, first, _ = finished_run
    frame = mdl_slt.results(work / "tiny.sqlite")
    with open_existing(work / "tiny.sqlite") as store:
        table = store.table()
    assert len(frame) == (table.task == "critical").sum()  # a row per checkpoint × entry × ε
    assert {"llc_mean", "llc_std_error", "r_hat", "ess", "critical_value", "critical_se", "critical_dl_bits",
            "llc_dl_bits", "in_window"} <= set(frame.columns)
    llc = table[table.task == "llc"].set_index(["model", "revision"]).llc_mean
    assert all(llc[(r.model, r.revision)] == r.llc_mean for r in frame.itertuples())
    data = mdl_slt.traces(work / "tiny.sqlite")
    assert len(data.posterior.data_vars) == (table.task == "llc").sum()
    one = mdl_slt.traces(work / "tiny.sqlite", "mdl-slt/tiny-a@step24")
    (name,) = one.posterior.data_vars
    stored = table[(table.task == "llc") & (table.revision == "step24") & (table.model == "mdl-slt/tiny-a")]
    assert float(one.posterior[name].mean()) == pytest.approx(stored.llc_mean.item(), rel=1e-6)  # its mean is λ̂
    assert one.posterior[name].attrs["llc_mean"] == pytest.approx(stored.llc_mean.item())
    assert az.rhat(one)[name].item() == pytest.approx(stored.detail.item()["r_hat"], rel=1e-6)
