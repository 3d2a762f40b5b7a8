"""The PDF report (fpdf2) and its CSV tables, built from a results store. Needs no torch."""

from __future__ import annotations

import math
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from mdl_slt.errors import UserError

PAGE_WIDTH_MM = 277  # A4 landscape minus margins


def _unicode_fonts(pdf) -> None:
    """DejaVu, shipped inside matplotlib, so λ, ε, ± and ² print without extra packages."""
    import matplotlib

    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    pdf.add_font("Sans", "", fonts / "DejaVuSans.ttf")
    pdf.add_font("Sans", "B", fonts / "DejaVuSans-Bold.ttf")
    pdf.add_font("Mono", "", fonts / "DejaVuSansMono.ttf")


def summary_lines(table: pd.DataFrame, fits: pd.DataFrame, min_step: int) -> list[str]:
    lines = []
    for model, part in table.groupby("model", sort=False):
        llc = part.drop_duplicates("step").sort_values("step")
        last = llc.iloc[-1]
        lines.append(f"{model} ({int(last.num_params):,} parameters, {len(llc)} checkpoints): base loss "
                     f"{llc.base_loss.iloc[0]:.3f} → {last.base_loss:.3f} nats/token; λ̂ "
                     f"{llc.llc_mean.iloc[0]:.1f} → {last.llc_mean:.1f} (final ± {last.llc_std_error:.1f} s.e.).")
        for _, f in fits[fits.model == model].iterrows():
            finals = part[(part.epsilon == f.epsilon) & (part.compressor == f.compressor)].sort_values("step")
            crit = finals.critical_bits.iloc[-1]
            if "slope" in f and not math.isnan(f.get("slope", math.nan)):
                lines.append(f"    {f.compressor}, ε={f.epsilon:g}: critical bits at last step {crit:.2f}; "
                             f"fit over {f.n} checkpoints (step ≥ {min_step}): slope {f.slope:.4f} ± "
                             f"{f.slope_se:.4f} bits per unit λ̂, R² = {f.r_squared:.2f}, Pearson r = {f.pearson_r:.2f}")
            else:
                lines.append(f"    {f.compressor}, ε={f.epsilon:g}: critical bits at last step {crit:.2f}; "
                             f"too few distinct points for a fit")
    return lines


def write_report(store_path: Path, output: Path, min_step: int = 0) -> dict:
    """Write the PDF to `output` and `<output>-records.csv`, `-measurements.csv`, `-fits.csv` beside it."""
    from fpdf import FPDF

    from mdl_slt import __version__, figures
    from mdl_slt.analysis import fit_relation, measurements
    from mdl_slt.store import open_existing

    with open_existing(store_path) as store:
        records, runs = store.table(), store.runs()
    if records.empty or not (records.task == "critical").any() or not (records.task == "llc").any():
        raise UserError(f"{store_path} holds no complete measurements yet: run the experiment first")
    table = measurements(records)
    fits = fit_relation(table, min_step)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    stem = output.with_suffix("")
    csvs = {"records": records.drop(columns="detail"), "measurements": table, "fits": fits}
    for name, frame in csvs.items():
        frame.to_csv(f"{stem}-{name}.csv", index=False)

    epsilons = sorted(table.epsilon.unique())
    pages = [
        ("Loss against bits", figures.loss_curves(records, epsilons)),
        ("LLC over training", figures.llc_over_training(table)),
        ("Critical bits over training", figures.critical_over_training(table)),
        ("Critical bits against LLC", figures.critical_vs_llc(table, fits, min_step)),
    ]
    pdf = FPDF(orientation="L", unit="mm", format="A4")
    _unicode_fonts(pdf)
    pdf.set_auto_page_break(auto=True, margin=10)
    pdf.add_page()
    pdf.set_font("Sans", "B", 18)
    experiment = runs.experiment.iloc[-1] if len(runs) else "experiment"
    pdf.cell(0, 12, f"mdl-slt report: {experiment}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Sans", "", 10)
    pdf.multi_cell(0, 5, f"Store {store_path}; mdl-slt {__version__}; written "
                         f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Critical bits b*(ε): the fewest "
                         f"bits per weight whose loss increase on held-out text stays within ε (nats/token). "
                         f"λ̂: SGLD estimate of the local learning coefficient, mean over chains.",
                   new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("Sans", "B", 12)
    pdf.cell(0, 8, "Summary", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Mono", "", 8)
    for line in summary_lines(table, fits, min_step):
        pdf.multi_cell(0, 4, line, new_x="LMARGIN", new_y="NEXT")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (title, fig) in enumerate(pages):
            image = Path(tmp) / f"figure{i}.png"
            fig.savefig(image, dpi=170)
            figures.plt.close(fig)
            pdf.add_page()
            pdf.set_font("Sans", "B", 13)
            pdf.cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
            pdf.image(str(image), w=PAGE_WIDTH_MM, keep_aspect_ratio=True, h=180)
        pdf.output(str(output))
    return {"pdf": str(output), "pages": pdf.page_no(), "csv": [f"{stem}-{n}.csv" for n in csvs],
            "fits": fits}
