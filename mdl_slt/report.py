"""The PDF report (fpdf2), its CSV tables and its fit file, built from a results store. Needs no torch.

Pages: title; summary of the findings in numbers; fit tables; then one figure per page
(loss curves per compressor, LLC with R̂, SGLD traces, critical compression over training and
against λ̂, residuals, ε sweep, description lengths); last, the leave-one-out prediction table.
"""

from __future__ import annotations

import json
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


def _g(value, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def summary_lines(table: pd.DataFrame, fits: pd.DataFrame, pooled: pd.DataFrame, sweep: pd.DataFrame,
                  min_step: int) -> list[str]:
    """The findings in numbers: per model its training span, each fit, then across sizes."""
    lines = []
    for model in table.groupby("model").num_params.first().sort_values().index:  # smallest first
        part = table[table.model == model]
        llc = part.drop_duplicates("step").sort_values("step")
        last = llc.iloc[-1]
        unhealthy = int((llc.r_hat > 1.1).sum())
        lines.append(f"{model} ({int(last.num_params):,} parameters, {len(llc)} checkpoints): base loss "
                     f"{llc.base_loss.iloc[0]:.3f} → {last.base_loss:.3f} nats/token; λ̂ "
                     f"{llc.llc_mean.iloc[0]:.1f} → {last.llc_mean:.1f} (final ± {last.llc_std_error:.1f} s.e.); "
                     f"R̂ > 1.1 at {unhealthy} of {len(llc)} checkpoints.")
        for _, f in fits[fits.model == model].iterrows():
            head = f"  {f.compressor} ε={f.epsilon:g}:"
            if pd.isna(f.get("slope")):
                lines.append(f"{head} {f.n} checkpoints with step ≥ {min_step}: too few for a fit")
                continue
            lines.append(f"{head} R² = {f.r_squared:.2f}, Pearson r = {f.pearson_r:.2f}, Spearman ρ = "
                         f"{_g(f.spearman_rho, 2)}, slope {f.slope:.4f} [{f.slope_ci_low:.4f}, {f.slope_ci_high:.4f}] "
                         f"per unit λ̂ (bootstrap with λ̂ errors [{_g(f.bootstrap_slope_ci_low)}, "
                         f"{_g(f.bootstrap_slope_ci_high)}]), leave-one-out error {_g(f.loo_rmse)} "
                         f"(coverage {_g(f.loo_coverage, 2)}), n = {f.n}")
    for _, p in pooled.iterrows():
        if pd.notna(p.get("p_same_line")):
            lines.append(f"Across {p.models} sizes, {p.compressor} ε={p.epsilon:g}: one common line R² = "
                         f"{p.r2_common:.2f} against a line per size R² = {p.r2_separate:.2f} (F test p = "
                         f"{p.p_same_line:.2g}; equal slopes p = {p.p_same_slope:.2g}); on λ̂/d R² = {p.r2_per_param:.2f}.")
    for comp, part in sweep.groupby("compressor"):
        ok = part.dropna(subset=["eps_slope_bits", "llc_mean"])
        if len(ok) >= 3:
            r = ok[["eps_slope_bits", "llc_mean"]].corr().iloc[0, 1]
            ratio = (ok.eps_slope_bits / ok.llc_mean).median()
            lines.append(f"ε sweep, {comp}: description-length slope per halving of ε against λ̂ over {len(ok)} "
                         f"checkpoints, Pearson r = {r:.2f}, median slope / λ̂ = {ratio:.3g}.")
    return lines


def _table_page(pdf, title: str, frame: pd.DataFrame, columns: dict, note: str = "") -> None:
    """A page holding `frame`'s `columns` ({column: header}) as a table, numbers to 4 significant digits."""
    pdf.add_page()
    pdf.set_font("Sans", "B", 13)
    pdf.cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
    if note:
        pdf.set_font("Sans", "", 8)
        pdf.multi_cell(0, 4, note, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Sans", "", 6.5 if len(columns) > 10 else 7.5)
    with pdf.table(text_align="RIGHT", line_height=3.6, first_row_as_headings=True) as grid:
        grid.row(list(columns.values()))
        for _, record in frame.iterrows():
            grid.row([record[c].split("/")[-1] if isinstance(record[c], str) else
                      _g(record[c], 4) if isinstance(record[c], float) else str(record[c]) for c in columns])


def write_report(store_path: Path, output: Path | None = None, overrides: dict | None = None) -> dict:
    """Write the PDF to `output`; beside it `<stem>-<table>.csv` for every table and `<stem>-fit.json`."""
    from fpdf import FPDF

    from mdl_slt import figures
    from mdl_slt.analysis import eps_sweep, fit_relation, loo_predictions, measurements, pooled_fits, select, window
    from mdl_slt.experiment import Experiment
    from mdl_slt.fitfile import build_fit_file, versions
    from mdl_slt.store import open_existing

    with open_existing(store_path) as store:
        records, config, configs = store.table(), store.last_config(), store.configs()
    if config is None or records.empty:
        raise UserError(f"{store_path} holds no measurements yet: run the experiment first")
    experiment = Experiment.model_validate(config)
    analysis = experiment.analysis.model_copy(update={k: v for k, v in (overrides or {}).items() if v is not None})
    records, left_out = select(records, config)
    if not (records.task == "critical").any() or not (records.task == "llc").any():
        raise UserError(f"{store_path} holds no complete measurements of its experiment yet: run it first")
    table = measurements(records, analysis.critical)
    inside = window(table, analysis.window, analysis.min_step)
    min_step = analysis.min_step or 0
    fits, pooled = fit_relation(table, inside), pooled_fits(table, inside)
    sweep, loo = eps_sweep(table), loo_predictions(table, inside)
    output = Path(output or experiment.report or Path(store_path).with_suffix(".pdf"))
    output.parent.mkdir(parents=True, exist_ok=True)
    stem = output.with_suffix("")
    tables = {"records": records.drop(columns="detail"), "measurements": table.assign(in_window=inside),
              "fits": fits, "pooled": pooled, "eps-sweep": sweep, "predictions": loo, "left-out": left_out}
    for name, frame in tables.items():
        frame.to_csv(f"{stem}-{name}.csv", index=False)
    fit_path = Path(f"{stem}-fit.json")
    fit_path.write_text(json.dumps(build_fit_file(table, inside, configs, analysis.model_dump(mode="json"),
                                                  experiment.name, store_path), indent=1))

    pdf = FPDF(orientation="L", unit="mm", format="A4")
    _unicode_fonts(pdf)
    pdf.set_auto_page_break(auto=True, margin=10)
    _title_page(pdf, experiment.name, table, config, store_path, versions())

    pdf.add_page()
    pdf.set_font("Sans", "B", 13)
    pdf.cell(0, 8, "Summary", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Sans", "", 8)
    pdf.multi_cell(0, 4, f"Critical compression c*(ε): the most compression whose loss increase on held-out text stays "
                         f"within ε (nats/token); for rtn, bits per weight. Fits over checkpoints with step ≥ "
                         f"{min_step}: OLS with HC3 errors, 95% intervals.", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("Mono", "", 7.5)
    for line in summary_lines(table, fits, pooled, sweep, min_step):
        pdf.multi_cell(0, 3.8, line, new_x="LMARGIN", new_y="NEXT")

    if "slope" in fits:
        _table_page(pdf, "Fits per model size: critical compression = α + β·λ̂", fits, {
            "model": "model", "compressor": "method", "epsilon": "ε", "n": "n", "slope": "β",
            "slope_ci_low": "β low", "slope_ci_high": "β high", "bootstrap_slope_ci_low": "boot low",
            "bootstrap_slope_ci_high": "boot high", "intercept": "α", "r_squared": "R²", "pearson_r": "r",
            "spearman_rho": "ρ", "loo_rmse": "LOO err", "loo_coverage": "LOO cover"},
            "boot: bootstrap over checkpoints with each λ̂ redrawn from its standard error. LOO err: root mean "
            "square error of leave-one-checkpoint-out predictions, in knob units; LOO cover: share inside their 95% "
            "prediction interval.")
    if "p_same_line" in pooled:
        _table_page(pdf, "Across model sizes: does one line serve all?", pooled, {
            "compressor": "method", "epsilon": "ε", "n": "n", "models": "sizes", "r2_common": "R² one line",
            "r2_separate": "R² line per size", "p_same_line": "p (F, one line)", "p_same_slope": "p (equal slopes)",
            "r2_per_param": "R² on λ̂/d", "slope_per_param": "β on λ̂/d"},
            "p (F, one line): F test of one common line against one line per size. p (equal slopes): HC3 Wald test "
            "of the size × λ̂ interactions. λ̂/d: the LLC per sampled parameter.")

    pages = [(f"{comp}: loss against knob", figures.loss_curves(records, sorted(table.epsilon.unique()), comp,
                                                                   part.knob_name.iloc[0] or "knob"))
             for comp, part in table.groupby("compressor")]
    pages += [("LLC over training, with chain agreement", figures.llc_over_training(table)),
              ("SGLD chains", figures.chain_traces(records)),
              ("Critical compression over training", figures.critical_over_training(table))]
    for comp, part in table.groupby("compressor"):
        pages.append((f"{comp}: critical compression against LLC",
                      figures.critical_vs_llc(part, fits[fits.compressor == comp], min_step)))
    pages += [("Residuals", figures.residuals(table, fits, min_step))]
    if len(sweep):
        pages.append(("ε sweep", figures.eps_sweep(sweep)))
    pages.append(("Description lengths", figures.description_lengths(table)))
    with tempfile.TemporaryDirectory() as tmp:
        for i, (title, fig) in enumerate(pages):
            image = Path(tmp) / f"figure{i}.png"
            fig.savefig(image, dpi=150)
            figures.plt.close(fig)
            pdf.add_page()
            pdf.set_font("Sans", "B", 13)
            pdf.cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
            pdf.image(str(image), w=PAGE_WIDTH_MM, keep_aspect_ratio=True, h=180)
        if len(loo):
            shown = loo.groupby(["model", "compressor", "epsilon"]).tail(3)
            _table_page(pdf, "Predictions: each checkpoint from a fit on the others", shown, {
                "model": "model", "compressor": "method", "epsilon": "ε", "step": "step", "llc_mean": "λ̂",
                "measured": "measured", "predicted": "predicted", "lower": "95% low", "upper": "95% high",
                "inside": "inside"},
                f"The last three fitted checkpoints per model, method and ε; all {len(loo)} rows are in "
                f"{Path(f'{stem}-predictions.csv').name}. Intervals add the left-out λ̂'s own standard error.")
        pdf.output(str(output))
    return {"pdf": str(output), "pages": pdf.page_no(), "csv": [f"{stem}-{n}.csv" for n in tables],
            "fit": str(fit_path), "fits": fits}


def _title_page(pdf, experiment: str, table: pd.DataFrame, config: dict | None, store_path: Path,
                versions: dict) -> None:
    from mdl_slt import __version__

    pdf.add_page()
    pdf.set_font("Sans", "B", 22)
    pdf.ln(20)
    pdf.cell(0, 14, f"mdl-slt report: {experiment}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Sans", "", 11)
    pdf.cell(0, 7, f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by mdl-slt {__version__}, from "
                   f"{store_path}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Sans", "B", 12)
    pdf.cell(0, 8, "Models", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Sans", "", 10)
    for model, part in table.groupby("model", sort=False):
        steps = sorted(part.step.dropna().unique())
        pdf.cell(0, 6, f"{model}: {int(part.num_params.iloc[0]):,} parameters, {len(steps)} checkpoints "
                       f"(steps {int(steps[0])} … {int(steps[-1])})", new_x="LMARGIN", new_y="NEXT")
    if config:
        pdf.ln(3)
        pdf.set_font("Sans", "B", 12)
        pdf.cell(0, 8, "Settings", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Mono", "", 8)
        for part in ("data", "llc", "critical"):
            shown = {k: v for k, v in config[part].items() if v not in (None, [], {})}
            pdf.multi_cell(0, 4, f"{part}: {json.dumps(shown)}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("Sans", "B", 12)
    pdf.cell(0, 8, "Versions", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Mono", "", 8)
    pdf.multi_cell(0, 4, ", ".join(f"{k} {v}" for k, v in versions.items() if v), new_x="LMARGIN", new_y="NEXT")
