"""The PDF report (fpdf2), its CSV tables, its figures as files and its fit file, built from a results
store. Needs no torch. One module per part of the report, each holding its analysis-to-page path:

    answer       page 1: the answer across runs as a picture, a sentence per family; the across-runs
                 table after it; the appendix of every form across runs
    per_run      the per-run table, the methods side by side, critical compression against λ̂ and its
                 residuals; the appendix of every fit and baseline
    layers       inside checkpoints: each weight group's critical value against its refined λ̂
    measures     the field's sensitivity measures beside λ̂, their cost, and the allocations they buy
    settings     settings and provenance, rows left out, how sure the critical values are
    robustness   the answer under other sampler settings
    chains       the LLC over training and its chains
    compression  each method's description lengths, its critical value over training, every search
    pdf          the building blocks: fonts, headings, tables, figure pages
    figures      what the figures share: style, sizes, axes, markers

Every table is also a CSV beside the PDF (`<stem>-<table>.csv`), every figure an SVG and a PNG in
`<stem>-figures/`, named by its page.

May import: errors, llc (the trace's burn-in), analysis.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mdl_slt.analysis import Analysis


def figure_pages(a: Analysis) -> list[tuple[str, str, Callable]]:
    """(title, caption, a function drawing its matplotlib figure) for every figure page, in order; a
    figure with a row or panel per method takes as many pages as its methods need."""
    from mdl_slt.report import chains, compression, layers, measures, per_run
    from mdl_slt.report.figures import Style
    from mdl_slt.report.pdf import number_runs

    style = Style(a.table, a.entries)
    side_by_side, *fits = per_run.figure_pages(a, style)
    return number_runs([side_by_side, compression.one_axis_page(a, style), *fits, *layers.figure_pages(a, style),
                        *measures.figure_pages(a, style),
                        *chains.figure_pages(a, style), *compression.figure_pages(a, style)])


RECORD_NAMES = {"bits": "dl_bits", "bits_entropy": "dl_entropy_bits", "bits_interpolated": "dl_interpolated_bits"}


def tables(a: Analysis) -> dict:
    """Every table the report writes as a CSV, by its name in the file name (reports/README.md has
    every column); a table with no rows keeps its header."""
    return {"records": a.records.drop(columns="detail").rename(columns=RECORD_NAMES),
            "measurements": a.table.assign(in_window=a.inside), "fits": a.fits, "fits-all": a.fits_all,
            "baselines": a.baselines, "pooled": a.pooled, "across-runs": a.across_runs, "groups": a.groups,
            "layers": a.layers, "layers-predictors": a.layer_predictors, "measures": a.measures,
            "measures-predictors": a.measure_predictors, "allocations": a.allocations, "costs": a.costs,
            "robustness": a.robust, "robustness-fits": a.robust_fits, "eps-sweep": a.sweep, "regime": a.regime,
            "scale": a.scale, "predictions": a.loo,
            "left-out": a.left_out}


def write_report(store_path: Path, output: Path | None = None, overrides: dict | None = None) -> dict:
    """Write the PDF to `output`; beside it `<stem>-<table>.csv` for every table, `<stem>-fit.json` and
    the figures in `<stem>-figures/`."""
    from mdl_slt.analysis import analyse
    from mdl_slt.analysis.fitfile import build_fit_file
    from mdl_slt.report import answer, layers, measures, per_run, robustness, settings
    from mdl_slt.report.columns import header
    from mdl_slt.report.pdf import document, figure_page

    a = analyse(store_path, overrides)
    output = Path(output or a.experiment.report or Path(store_path).with_suffix(".pdf"))
    output.parent.mkdir(parents=True, exist_ok=True)
    stem = output.with_suffix("")
    written = tables(a)
    for name, frame in written.items():
        documented = list(dict.fromkeys([*header(name), *frame.columns]))  # every table keeps its documented header
        frame.reindex(columns=documented).to_csv(f"{stem}-{name}.csv", index=False)
    fit_path = Path(f"{stem}-fit.json")
    fit_path.write_text(json.dumps(build_fit_file(a.lines, a.configs, a.settings.model_dump(mode="json"),
                                                  a.experiment.name, store_path, a.loss_lines, a.across_runs,
                                                  a.across_lines), indent=1))
    folder = Path(f"{stem}-figures")
    for old in folder.glob("*.*"):  # a report written again replaces its figures
        old.unlink()
    pdf = document()
    answer.first_page(pdf, a, f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", folder)
    if len(a.across_runs):
        answer.across_runs_page(pdf, a)
    per_run.table_page(pdf, a, summary=not len(a.across_runs))
    settings.page(pdf, a)
    if len(a.robust):
        robustness.page(pdf, a)
    if len(a.layers):
        layers.table_page(pdf, a)
    if len(a.measures) or len(a.allocations):
        measures.page(pdf, a)
    for title, caption, draw in figure_pages(a):
        figure_page(pdf, title, caption, draw(), folder)
    per_run.appendix(pdf, a)
    if len(a.across_runs):
        answer.appendix(pdf, a)
    pdf.output(str(output))
    return {"pdf": str(output), "pages": pdf.page_no(), "csv": [f"{stem}-{n}.csv" for n in written],
            "fit": str(fit_path), "figures": str(folder), "fits": a.fits}
