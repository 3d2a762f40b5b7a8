"""The PDF's building blocks (fpdf2): fonts, headings, paragraphs, tables and figure pages. Needs no
torch.

A figure page draws its matplotlib figure as vector graphics filling the page, and keeps it as
files beside the PDF, `<folder>/<NN>-<name>.svg` and `.png`, named by the page it is on, for a
paper or slides.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable

import pandas as pd

PAGE_WIDTH_MM = 277  # A4 landscape minus margins
PER_PAGE = 4  # methods per page of a figure with a row or panel per method
PNG_DPI = 200


def document():
    """An empty landscape A4 document with DejaVu (shipped inside matplotlib), so λ, ε, ± and ² print
    without extra packages."""
    import logging

    import matplotlib
    from fpdf import FPDF

    logging.getLogger("fpdf.svg").setLevel(logging.ERROR)  # matplotlib's <metadata> tag, which fpdf2 skips
    pdf = FPDF(orientation="L", unit="mm", format="A4")
    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    pdf.add_font("Sans", "", fonts / "DejaVuSans.ttf")
    pdf.add_font("Sans", "B", fonts / "DejaVuSans-Bold.ttf")
    pdf.add_font("Mono", "", fonts / "DejaVuSansMono.ttf")
    pdf.set_auto_page_break(auto=True, margin=10)
    return pdf


def g(value, digits: int = 3) -> str:
    """A number in `digits` significant digits; – for a missing one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def heading(pdf, text: str, size: int = 14) -> None:
    pdf.set_font("Sans", "B", size)
    pdf.cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")


def paragraph(pdf, text: str, size: float = 9, height: float = 4.6) -> None:
    pdf.set_font("Sans", "", size)
    pdf.multi_cell(0, height, text, new_x="LMARGIN", new_y="NEXT")


def paragraph_height(pdf, text: str, size: float = 9, height: float = 4.6) -> float:
    """The height `paragraph` would take, without drawing it."""
    from fpdf.enums import MethodReturnValue

    pdf.set_font("Sans", "", size)
    return height * len(pdf.multi_cell(0, height, text, dry_run=True, output=MethodReturnValue.LINES))


def table(pdf, header: list[str], rows: list[list[str]], widths: list[float], size: float = 8) -> None:
    pdf.set_font("Sans", "", size)
    with pdf.table(col_widths=widths, text_align="RIGHT", line_height=size * 0.6, first_row_as_headings=True) as grid:
        grid.row(header)
        for row in rows:
            grid.row(row)


def in_order(frame: pd.DataFrame, a) -> pd.DataFrame:
    """Rows by model size, then compressor entry in the experiment's order, then ε."""
    entries = {c: i for i, c in enumerate(a.entries)}
    sizes = a.table.groupby("model").num_params.first()
    return frame.assign(_size=frame.model.map(sizes), _entry=frame.compressor.map(entries)) \
        .sort_values(["_size", "_entry", "epsilon"]).drop(columns=["_size", "_entry"])


def slug(title: str) -> str:
    """A file name from a page title: lower case, words joined by hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower().replace("λ̂", "llc").replace("ε", "eps")).strip("-")[:60]


def save_figure(fig, folder: Path, name: str) -> Path:
    """Write `fig` as `<folder>/<name>.svg` (vector) and `.png` ({PNG_DPI} dpi); return the SVG."""
    from mdl_slt.report.figures import plt

    folder.mkdir(parents=True, exist_ok=True)
    svg = folder / f"{name}.svg"
    fig.savefig(svg, format="svg")
    fig.savefig(folder / f"{name}.png", format="png", dpi=PNG_DPI)
    plt.close(fig)
    return svg


def figure_page(pdf, title: str, caption: str, fig, folder: Path) -> None:
    """A page of its own: title, caption, and the figure filling the rest, kept in `folder` under
    the page's number and title."""
    pdf.add_page()
    svg = save_figure(fig, folder, f"{pdf.page_no():02d}-{slug(title)}")
    heading(pdf, title, 13)
    paragraph(pdf, caption, 8.5, 4.2)
    pdf.image(str(svg), x=pdf.l_margin, w=PAGE_WIDTH_MM, h=pdf.h - pdf.b_margin - pdf.get_y(), keep_aspect_ratio=True)


def paged(title: str, caption: str, draw: Callable, style, per_page: int = PER_PAGE) -> list[tuple[str, str, Callable]]:
    """A figure with a row or panel per method, drawn for `per_page` methods at a time."""
    import functools

    return [(title, caption, functools.partial(draw, part)) for part in style.pages(per_page)]


def number_runs(pages: list[tuple[str, str, Callable]]) -> list[tuple[str, str, Callable]]:
    """Titles shared by consecutive pages numbered "(k of n)"."""
    titles = [title for title, _, _ in pages]
    numbered, seen = [], {}
    for title, caption, fig in pages:
        seen[title] = seen.get(title, 0) + 1
        count = titles.count(title)
        numbered.append((f"{title} ({seen[title]} of {count})" if count > 1 else title, caption, fig))
    return numbered
