"""The PDF report (fpdf2), its CSV tables and its fit file, built from a results store. Needs no torch.

Page 1: what was measured and the answer in one table (size × method × ε: R², slope with its
interval, leave-one-out error, n, converged share). Page 2: settings and provenance, and any rows
of the store the analysis left out. Then one figure per page, each with a title and a caption
saying what to look for, as vector graphics filling the page. Last, an appendix of the fits with
and without the analysis window and the tests across sizes; every table is also a CSV beside the
PDF, with the leave-one-out predictions and every record.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd

from mdl_slt.analysis import Analysis
from mdl_slt.figures import short

PAGE_WIDTH_MM = 277  # A4 landscape minus margins
BEST = {"llc": "λ̂", "loss": "loss", "tokens": "tokens", "llc_per_param": "λ̂/d", "redundancy": "λ̂·ln n"}


def _unicode_fonts(pdf) -> None:
    """DejaVu, shipped inside matplotlib, so λ, ε, ± and ² print without extra packages."""
    import matplotlib

    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    pdf.add_font("Sans", "", fonts / "DejaVuSans.ttf")
    pdf.add_font("Sans", "B", fonts / "DejaVuSans-Bold.ttf")
    pdf.add_font("Mono", "", fonts / "DejaVuSansMono.ttf")


def _g(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


PER_PAGE = 4  # methods per page of a figure with a row per method
SWEEP_PER_PAGE = 6  # and of the ε sweep's panels


def figure_pages(a: Analysis) -> list[tuple[str, str, Callable]]:
    """(title, two-line caption, a function drawing its matplotlib figure) for every figure page, in
    order; a figure with a row or panel per method takes as many pages as its methods need."""
    from mdl_slt import figures

    style = figures.Style(a.table, a.entries)
    window = "filled: in the analysis window; hollow: outside it" if (~a.inside).any() else "every checkpoint is in the window"
    pages = [
        ("The methods side by side: how well does λ̂ predict each?",
         "Per ε, method and model size, R², the slope in units of its standard error (HC3; dashed ±2: beyond them "
         "the slope is clear of zero) and the leave-one-out error, over the window. Look for: which family has high "
         "R² and a clear positive slope at every size.",
         lambda: figures.methods_compared(a.fits, style)),
        ("Critical description lengths of every method on one axis",
         "The compressed model's size at the critical point (kB, log axis), a row per method, most compressing "
         "first; per size a line through its checkpoints in the window in order of λ̂, the arrow at the largest; "
         "dotted: the size in fp32, where inside the axis. Look for: which method compresses furthest, and arrows "
         "pointing right: the size rising with λ̂ within a model.",
         lambda: figures.description_lengths_vs_llc(a.table, a.inside, style)),
        *paged("Critical compression against the LLC, per method and ε",
               f"Lines: per-size OLS fits with their R². {window}. Bars: ±2 standard errors of λ̂ (across) and of the "
               "critical value (along the knob axis, from a bootstrap over the evaluation sequences). Look for: "
               "straight, tight lines with the points outside the window off them if anywhere.",
               lambda part: figures.critical_vs_llc(a.table, a.fits, a.inside, part), style),
        *paged("Residuals of the per-size fits",
               "Residual of each checkpoint in the window from its line. Look for: no curvature and no trend; a "
               "bow means the relation is not linear over the window.",
               lambda part: figures.residuals(a.table, a.fits, a.inside, part), style),
        ("The LLC over training and whether its chains converged",
         "λ̂ with ±2 standard errors (Monte-Carlo and between chains), split R̂ and pooled ESS. Look for: R̂ at "
         "or below 1.05 everywhere; a checkpoint above it is flagged in the tables and counted on page 1.",
         lambda: figures.llc_over_training(a.table, style)),
    ]
    if a.traces:
        pages.append(("SGLD chains, every step",
                      "nβ·(L_B − L(w*)) of each chain at the first, middle and last checkpoints; shaded: the burn-in "
                      "read from the trace; dashed: λ̂. Look for: a rise, a level plateau, chains that agree.",
                      lambda: figures.chain_traces(a.traces, style)))
    pages += paged("Critical compression over training",
                   "Each method's critical value at each ε over training. Look for: less compression where λ̂ is "
                   "higher (more bits and more rank kept, fewer heads removed), as the compressibility paper finds "
                   "over training.", lambda part: figures.critical_over_training(a.table, part), style)
    pages += paged("Every evaluated point of every critical search",
                   "Loss increase against the knob, darker for later checkpoints; dashed: the tolerances ε. Look for: "
                   "monotone curves (a bump makes the critical value ambiguous; such searches are flagged).",
                   lambda part: figures.loss_curves(a.records, a.table, part), style)
    for part in style.pages(SWEEP_PER_PAGE) if len(a.sweep) else []:
        sweep = a.sweep[a.sweep.compressor.isin(part.methods)]
        edge = figures.sweep_edge(sweep)
        pages.append(("ε sweep: description-length slope against λ̂",
                      f"Per checkpoint, the slope of the critical description length per halving of ε; dashed: slope "
                      f"= λ̂. {edge} of {len(sweep)} points lie beyond the axes (triangles at the edge, or ≤ 0). "
                      "Look for: whether the slope tracks λ̂.", functools.partial(figures.eps_sweep, sweep, part)))
    pages += paged("Description lengths over training",
                   "The LLC's redundancy λ̂·log n (n = tokens seen, m = 1) beside each method's critical description "
                   "length (faint: smaller ε). Look for: how far the two MDL figures are apart, and their trends.",
                   lambda part: figures.description_lengths(a.table, part), style)
    return number_runs(pages)


def paged(title: str, caption: str, draw: Callable, style) -> list[tuple[str, str, Callable]]:
    """A figure with a row or panel per method, drawn for PER_PAGE methods at a time."""
    return [(title, caption, functools.partial(draw, part)) for part in style.pages(PER_PAGE)]


def number_runs(pages: list[tuple[str, str, Callable]]) -> list[tuple[str, str, Callable]]:
    """Titles shared by consecutive pages numbered "(k of n)"."""
    titles = [title for title, _, _ in pages]
    numbered, seen = [], {}
    for title, caption, fig in pages:
        seen[title] = seen.get(title, 0) + 1
        count = titles.count(title)
        numbered.append((f"{title} ({seen[title]} of {count})" if count > 1 else title, caption, fig))
    return numbered


def _heading(pdf, text: str, size: int = 14) -> None:
    pdf.set_font("Sans", "B", size)
    pdf.cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")


def _paragraph(pdf, text: str, size: float = 9, height: float = 4.6) -> None:
    pdf.set_font("Sans", "", size)
    pdf.multi_cell(0, height, text, new_x="LMARGIN", new_y="NEXT")


def _table(pdf, header: list[str], rows: list[list[str]], widths: list[float], size: float = 8) -> None:
    pdf.set_font("Sans", "", size)
    with pdf.table(col_widths=widths, text_align="RIGHT", line_height=size * 0.6, first_row_as_headings=True) as grid:
        grid.row(header)
        for row in rows:
            grid.row(row)


def _in_order(fits: pd.DataFrame, a: Analysis) -> pd.DataFrame:
    """Fits by model size, then compressor entry in the experiment's order, then ε."""
    entries = {c: i for i, c in enumerate(a.entries)}
    sizes = a.table.groupby("model").num_params.first()
    return fits.assign(_size=fits.model.map(sizes), _entry=fits.compressor.map(entries)) \
        .sort_values(["_size", "_entry", "epsilon"]).drop(columns=["_size", "_entry"])


def _answer_page(pdf, a: Analysis, stamp: str) -> None:
    from mdl_slt import __version__

    exp, t = a.experiment, a.table
    pdf.add_page()
    _heading(pdf, f"mdl-slt report: {exp.name}", 18)
    _paragraph(pdf, f"Written {stamp} by mdl-slt {__version__} from {exp.store}; device {exp.device}.", 8)
    pdf.ln(1)
    models = ", ".join(f"{short(m)} ({int(g.num_params.iloc[0]):,} parameters, {g.step.nunique()} checkpoints)"
                       for m, g in t.groupby("model", sort=False))
    methods = ", ".join(f"{c} ({g.method.iloc[0]}, knob {g.knob_name.iloc[0]})" for c, g in t.groupby("compressor", sort=False))
    first = {short(m): g.step[a.inside.reindex(g.index)].min() for m, g in t.groupby("model")}
    _paragraph(pdf, (f"Measured: {models}. For each checkpoint, the LLC λ̂ by SGLD and the critical compression c*(ε), "
                     f"the most compression whose held-out loss increase stays within ε, of {methods}, at ε = "
                     f"{', '.join(f'{e:g}' for e in sorted(t.epsilon.unique()))} nats/token. Fitted: c* = α + β·λ̂ by "
                     f"OLS with HC3 errors per size, method and ε, over the analysis window fixed in advance: "
                     f"{a.window_text} (first step in it: "
                     f"{', '.join(f'{m} {_g(s)}' for m, s in first.items())}). c* is the "
                     f"{'critical value interpolated in log ΔL between the bracketing evaluations' if a.settings.critical == 'interpolated' else 'passing end of the bracket'}."),
               8.5, 4.2)
    base = a.baselines.set_index(["model", "compressor", "epsilon"]) if len(a.baselines) else None
    if base is not None:
        decided = base[base.best_out_of_sample.notna()]
        _paragraph(pdf, (f"Within each run, the same lines on the held-out loss and on log tokens seen, "
                         f"over the same checkpoints: λ̂ predicts best out of sample in {int((decided.best_out_of_sample == 'llc').sum())} "
                         f"of {len(decided)} fits (the loss in {int((decided.best_out_of_sample == 'loss').sum())}, "
                         f"tokens seen in {int((decided.best_out_of_sample == 'tokens').sum())}); λ̂ adds to a line in "
                         f"the loss at p < 0.05 in {int((decided.p_llc_beyond_loss < 0.05).sum())}; in "
                         f"{int(decided.collinear.sum())} the two correlate beyond |r| = 0.9, and those checkpoints cannot "
                         "separate them."), 8.5, 4.2)
    if len(a.robust):
        _paragraph(pdf, _robust_sentence(a.robust), 8.5, 4.2)
    pdf.ln(1)
    if len(a.across_runs):
        _across_runs_table(pdf, a)
        pdf.add_page()
        _heading(pdf, "Per run: critical compression on λ̂", 13)
    _per_run_table(pdf, a, base)


def _across_runs_table(pdf, a: Analysis) -> None:
    """Page 1's answer: per scope, method and ε, λ̂ against the loss across runs."""
    rows = []
    for _, r in a.across_runs.iterrows():
        rows.append([r.scope, r.compressor, f"{r.epsilon:g}", f"{int(r.n)} ({int(r.runs)})",
                     f"{r.r_llc_loss:.2f}{' collinear' if r.collinear else ''}", _g(r.p_llc_beyond_loss, 2),
                     _g(r.p_loss_beyond_llc, 2), _g(r.loro_llc), _g(r.loro_loss), _g(r.loro_tokens),
                     BEST.get(r.best_across_runs, "–")])
    _paragraph(pdf, "Across runs: does λ̂ predict the critical compression beyond the loss?", 10, 5)
    _paragraph(pdf, " ".join(_scope_sentence(scope, part) for scope, part in a.across_runs.groupby("scope", sort=False)),
               8.5, 4.2)
    _table(pdf, ["runs pooled", "method", "ε", "n (runs)", "r(λ̂, L)", "p(λ̂ | L)", "p(L | λ̂)", "LORO λ̂",
                 "LORO loss", "LORO tokens", "best on unseen runs"], rows,
           [44, 24, 10, 18, 26, 18, 18, 18, 20, 22, 30], size=7.5 if len(rows) > 12 else 8)
    pdf.ln(1)
    _paragraph(pdf, "Each method and ε fitted once over the pooled runs' checkpoints in the window: c* on λ̂, on the "
                    "held-out loss L and on log tokens seen, each with log d where the pool holds several sizes. "
                    "p(λ̂ | L): HC3 Wald test of λ̂'s coefficient in c* = α + β_L·L + β_λ·λ̂ (+ γ·log d); p(L | λ̂) the "
                    "converse. LORO: root-mean-square error (knob units) of each run's checkpoints predicted from the "
                    "other runs; best on unseen runs also weighs λ̂/d and λ̂·ln n. collinear: |r| > 0.9, these "
                    "checkpoints cannot separate λ̂ from the loss. Every figure is in the across-runs CSV.", 7, 3.6)


def _robust_sentence(robust: pd.DataFrame) -> str:
    """Page 1's line on robustness: did every fit keep its answer under every varied sampler setting?"""
    changed = robust[~robust.held]
    head = (f"Robustness to the sampler: λ̂ measured again at {len(robust)} other settings "
            f"({', '.join(robust.setting)}); ")
    if not len(changed):
        return head + "every fit kept its slope's sign and significance and its 'λ̂ beyond the loss' verdict under all of them."
    return head + "the answer did not hold under " + "; ".join(
        f"{r.setting} ({r.fits - r.slopes_kept} slopes and {r.fits - r.verdicts_kept} verdicts of {r.fits} fits changed"
        + (f"; every chain diverged on {r.failed} checkpoints" if r.failed else "") + ")"
        for r in changed.itertuples()) + " (robustness page)."


def _robust_page(pdf, a: Analysis) -> None:
    pdf.add_page()
    _heading(pdf, "Robustness: the answer under other sampler settings")
    rows = [[r.setting, str(r.checkpoints), str(r.failed), _g(r.tau_median, 2), _g(r.tau_min, 2),
             f"{r.slopes_kept} / {r.fits}", f"{r.verdicts_kept} / {r.fits}", str(r.diverged_chains), str(r.unconverged),
             "yes" if r.held else "no"] for r in a.robust.itertuples()]
    _table(pdf, ["setting (× main)", "measured", "all chains diverged", "Kendall τ (median)", "τ (least)",
                 "slopes kept", "verdicts kept", "diverged chains", "unconverged", "answer held"], rows,
           [36, 20, 28, 28, 20, 24, 24, 26, 24, 22], 8)
    pdf.ln(1)
    fits = a.robust_fits.dropna(subset=["slope"]) if "slope" in a.robust_fits else a.robust_fits.iloc[0:0]
    rows = [[r.setting, short(r.model), r.compressor, f"{r.epsilon:g}", str(int(r.n)), _g(r.tau, 2),
             f"{_g(r.slope_main)} → {_g(r.slope)}", f"{_g(r.r2_main, 2)} → {_g(r.r2, 2)}",
             f"{_g(r.p_beyond_main, 2)} → {_g(r.p_beyond, 2)}", "" if r.slope_kept and r.verdict_kept else "changed"]
            for r in fits.itertuples()]
    if rows:
        _table(pdf, ["setting", "model", "method", "ε", "n", "τ", "slope: main → varied", "R²", "p(λ̂ | L)", ""],
               rows, [32, 36, 20, 10, 8, 12, 50, 30, 40, 18], 7)
    _paragraph(pdf, "Each setting multiplies one of the main sampler settings; λ̂ is measured again on the checkpoints "
                    "the robustness section names, and each main fit is redone over its checkpoints in the window that "
                    "were measured again (at least 4), beside the main λ̂ on the same checkpoints. Kept: the slope's "
                    "sign and significance (95% interval, HC3) and the verdict of the HC3 test of λ̂ beyond the loss at "
                    "p < 0.05. Every figure is in the robustness CSV files.", 7, 3.6)


def _scope_sentence(scope: str, part: pd.DataFrame) -> str:
    """One pooled scope's answer in words: who predicts unseen runs best, and whether λ̂ adds to the loss."""
    decided = part[part.best_across_runs.notna()]
    wins = ", ".join(f"{BEST[k]} in {n}" for k, n in decided.best_across_runs.value_counts().items())
    collinear = " (collinear: these checkpoints cannot separate them)" if part.collinear.any() else ""
    return (f"Pooling {scope} (r(λ̂, L) = {part.r_llc_loss.iloc[0]:.2f}{collinear}), of {len(part)} method × ε: best "
            f"on unseen runs {wins or 'undefined'}; λ̂ adds to the loss at p < 0.05 in "
            f"{int((part.p_llc_beyond_loss < 0.05).sum())}, the loss to λ̂ in {int((part.p_loss_beyond_llc < 0.05).sum())}.")


def _per_run_table(pdf, a: Analysis, base) -> None:
    rows = []
    for _, f in _in_order(a.fits, a).iterrows():
        fitted = "slope" in f and pd.notna(f.slope)
        b = base.loc[(f.model, f.compressor, f.epsilon)] if base is not None else None
        against = "–" if b is None or pd.isna(b.best_out_of_sample) else (
            f"{BEST[b.best_out_of_sample]}; {_g(b.p_llc_beyond_loss, 2)}{' (r ' + format(b.r_llc_loss, '.2f') + ')' if b.collinear else ''}")
        eiv = fitted and pd.notna(f.get("eiv_slope"))
        rows.append([short(f.model), f.compressor, f"{f.epsilon:g}", str(int(f.n)),
                     f"{f.r_squared:.2f}" if fitted else "too few",
                     f"{f.slope:.3g} [{f.slope_ci_low:.3g}, {f.slope_ci_high:.3g}]" if fitted else "–",
                     f"{f.eiv_slope:.3g} [{f.eiv_slope_ci_low:.3g}, {f.eiv_slope_ci_high:.3g}]" if eiv else "–",
                     _g(f.loo_rmse) if fitted else "–", against, f"{f.converged_share:.0%}"])
    _table(pdf, ["model", "method", "ε", "n", "R²", "slope β [95% CI]", "errors in both [95% CI]", "LOO error",
                 "best LOO; p(λ̂ | loss)", "converged"], rows, [34, 20, 10, 8, 12, 50, 50, 18, 48, 18],
           size=7 if len(rows) > 24 else 8)
    pdf.ln(1)
    _paragraph(pdf, "R²: of critical compression on λ̂; slope in knob units per unit of λ̂ (OLS, HC3 interval); errors in "
                    "both: York's slope with the standard errors of λ̂ and of each critical value, its interval scaled "
                    "by the scatter beyond them; LOO error: root-mean-square "
                    "error of each checkpoint predicted from a line through the others (knob units); best LOO: the "
                    "predictor (λ̂, the held-out loss, log tokens seen) with the smallest such error; p(λ̂ | loss): HC3 "
                    "Wald test of λ̂'s coefficient in c* = α + β_L·L + β_λ·λ̂, with r(λ̂, L) where |r| > 0.9 (collinear); "
                    "converged: share of the fitted checkpoints whose chains reached split R̂ ≤ 1.05 and the ESS target. "
                    "Every fit, with and without the window, and every baseline are in the appendix and in the CSV files "
                    "beside this PDF.", 7, 3.6)


def _settings_page(pdf, a: Analysis) -> None:
    from mdl_slt.fitfile import versions

    exp = a.experiment
    pdf.add_page()
    _heading(pdf, "Settings and provenance")
    rows = []
    for model, part in a.table.groupby("model", sort=False):
        steps = sorted(part.step.dropna().unique())
        inside = sorted(part.step[a.inside.reindex(part.index)].dropna().unique())
        span = f"steps {int(steps[0])} … {int(steps[-1])}" if steps else "local directories, no training step"
        rows.append([short(model), f"{int(part.num_params.iloc[0]):,}", str(part.revision.nunique()), span,
                     f"{len(inside)} (from {int(inside[0])})" if inside else "0"])
    _table(pdf, ["model", "parameters", "checkpoints", "measured", "in the window"], rows, [55, 30, 28, 70, 40], 8.5)
    pdf.ln(2)
    pdf.set_font("Mono", "", 7)
    entries = [{"id": e.key, "name": e.name, **({"options": e.options} if e.options else {}),
                **({"precision": e.precision} if e.precision else {})} for e in exp.critical.compressors]
    blocks = {"data": exp.data.model_dump(mode="json", exclude_defaults=True) or {"source": "embedded"},
              "llc": {k: v for k, v in exp.llc.model_dump(mode="json").items() if v is not None},
              "llc steps chosen (step_size: auto)": exp.llc_steps or None,
              "critical": {"compressors": entries, "epsilons": exp.critical.epsilons,
                           "numerics": exp.critical.numerics},
              "analysis": a.settings.model_dump(mode="json"), "versions": versions()}
    for name, block in blocks.items():
        if block:
            pdf.multi_cell(0, 3.6, f"{name}: {json.dumps(block)}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    if len(a.left_out):
        total = int(a.left_out.rows.sum())
        groups = "; ".join(f"{int(r.rows)} {r.task} rows of {r.experiment} (config {r.config_hash}: {r.why})"
                           for r in a.left_out.itertuples())
        _paragraph(pdf, f"Left out: {total} rows of the store measured with other settings, by other experiments or "
                        f"on older bytes of a checkpoint ({groups}); they are in the store and in the left-out CSV, "
                        "not in any fit.", 8, 4)
    else:
        _paragraph(pdf, "Every row of the store belongs to this experiment's settings: none left out.", 8, 4)
    _paragraph(pdf, _precision_line(a.table), 8, 4)


def _precision_line(t: pd.DataFrame) -> str:
    """How sure the critical values are: their standard errors against each search's precision."""
    known = t[t.critical_se.notna()]
    if not len(known):
        return "Critical values' standard errors: not stored (measured before they were kept); rerun to get them."
    noisy = known[known.noisy]
    text = (f"Critical values' standard errors (bootstrap over the evaluation sequences): median {known.critical_se.median():.3g}, largest {known.critical_se.max():.3g} "
            "knob units. ")
    if not len(noisy):
        return text + "Every one is within its search precision."
    worst = noisy.sequences_needed.max()
    per = "; ".join(f"{c} {n}" for c, n in noisy.groupby("compressor").size().items())
    return text + (f"{len(noisy)} of {len(known)} exceed their search precision ({per}); the worst would need "
                   f"{int(worst):,} evaluation sequences to come under it (data.eval_sequences).")


def _figure_page(pdf, title: str, caption: str, fig, directory: Path, number: int) -> None:
    from mdl_slt.figures import plt

    path = directory / f"figure{number}.svg"
    fig.savefig(path, format="svg")
    plt.close(fig)
    pdf.add_page()
    _heading(pdf, title, 13)
    _paragraph(pdf, caption, 8.5, 4.2)
    pdf.image(str(path), x=pdf.l_margin, w=PAGE_WIDTH_MM, h=pdf.h - pdf.b_margin - pdf.get_y(),
              keep_aspect_ratio=True)


def _appendix(pdf, a: Analysis) -> None:
    pdf.add_page()
    _heading(pdf, "Appendix: fits inside the window and over every checkpoint")
    both = a.fits.merge(a.fits_all, on=["model", "compressor", "epsilon"], suffixes=("", "_all"), how="outer")
    rows = []
    for _, f in _in_order(both, a).iterrows():
        rows.append([short(f.model), f.compressor, f"{f.epsilon:g}"] + [
            _g(f.get(f"{k}{s}")) if k != "n" else str(int(f.get(f"n{s}")))
            for s in ("", "_all") for k in ("n", "r_squared", "slope", "spearman_rho", "loo_rmse")])
    _table(pdf, ["model", "method", "ε", "n", "R²", "β", "ρ", "LOO", "n (all)", "R² (all)", "β (all)", "ρ (all)",
                 "LOO (all)"], rows, [34, 26, 12, 10, 16, 22, 16, 18, 16, 18, 22, 18, 20], 7)
    if len(a.baselines):
        pdf.add_page()
        _heading(pdf, "Appendix: λ̂ against the loss and training progress, over the same checkpoints")
        rows = []
        for _, b in _in_order(a.baselines, a).iterrows():
            rows.append([short(b.model), b.compressor, f"{b.epsilon:g}", str(int(b.n))]
                        + [_g(b[f"{k}_{p}"]) for p in ("llc", "loss", "tokens") for k in ("r2", "loo")]
                        + [_g(b.r_llc_loss, 2), _g(b.p_llc_beyond_loss, 2), _g(b.p_loss_beyond_llc, 2)])
        _table(pdf, ["model", "method", "ε", "n", "R² λ̂", "LOO λ̂", "R² loss", "LOO loss", "R² tokens", "LOO tokens",
                     "r(λ̂, L)", "p λ̂ | L", "p L | λ̂"], rows, [32, 26, 12, 10, 18, 20, 18, 20, 20, 22, 20, 20, 20], 7)
        _paragraph(pdf, "Lines of c* on each predictor alone (OLS, HC3; LOO: leave-one-checkpoint-out RMSE in knob "
                        "units); p λ̂ | L and p L | λ̂: HC3 Wald tests of each coefficient in c* = α + β_L·L + β_λ·λ̂. "
                        "Where |r(λ̂, L)| > 0.9 the checkpoints cannot separate the two.", 7, 3.6)
    if "p_same_line" in a.pooled:
        pdf.ln(3)
        _heading(pdf, "Across sizes: does one line serve all?", 11)
        rows = [[p.compressor, f"{p.epsilon:g}", str(int(p.n)), str(int(p.models)), _g(p.get("r2_common")),
                 _g(p.get("r2_separate")), _g(p.get("p_same_line")), _g(p.get("p_same_slope")),
                 _g(p.get("r2_per_param"))] for _, p in a.pooled.iterrows()]
        _table(pdf, ["method", "ε", "n", "sizes", "R² one line", "R² per size", "p (one line)", "p (equal slopes)",
                     "R² on λ̂/d"], rows, [30, 14, 14, 14, 28, 28, 28, 30, 28], 8)
        _paragraph(pdf, "p (one line): F test of one common line against one per size; p (equal slopes): HC3 Wald "
                        "test of the size × λ̂ interactions; λ̂/d: the LLC per sampled parameter.", 7, 3.6)


def _across_runs_appendix(pdf, a: Analysis) -> None:
    from mdl_slt.analysis.pooled import FORMS

    pdf.add_page()
    _heading(pdf, "Appendix: every form across runs, judged on runs left out")
    rows = [[r.scope, r.compressor, f"{r.epsilon:g}", str(int(r.n))]
            + [f"{_g(r[f'r2_{f}'], 2)} / {_g(r[f'loro_{f}'])}" for f in FORMS] for _, r in a.across_runs.iterrows()]
    _table(pdf, ["runs pooled", "method", "ε", "n"] + [f"{label}: R² / LORO" for label in FORMS.values()], rows,
           [44, 24, 10, 12] + [37] * len(FORMS), 7)
    _paragraph(pdf, "OLS with HC3 errors over the pooled checkpoints in the window; log d (d the sampled parameters) "
                    "joins λ̂, the loss and log tokens where the pool holds several sizes; λ̂·ln n is the LLC's "
                    "description length in bits (n tokens seen). LORO: each run's checkpoints predicted from the "
                    "others (knob units). The coefficients and their 95% intervals are in the across-runs CSV.", 7, 3.6)


def write_report(store_path: Path, output: Path | None = None, overrides: dict | None = None) -> dict:
    """Write the PDF to `output`; beside it `<stem>-<table>.csv` for every table and `<stem>-fit.json`."""
    import logging

    from fpdf import FPDF

    logging.getLogger("fpdf.svg").setLevel(logging.ERROR)  # matplotlib's <metadata> tag, which fpdf2 skips

    from mdl_slt.analysis import analyse
    from mdl_slt.fitfile import build_fit_file

    a = analyse(store_path, overrides)
    output = Path(output or a.experiment.report or Path(store_path).with_suffix(".pdf"))
    output.parent.mkdir(parents=True, exist_ok=True)
    stem = output.with_suffix("")
    tables = {"records": a.records.drop(columns="detail"), "measurements": a.table.assign(in_window=a.inside),
              "fits": a.fits, "fits-all": a.fits_all, "baselines": a.baselines, "pooled": a.pooled,
              "across-runs": a.across_runs, "robustness": a.robust, "robustness-fits": a.robust_fits,
              "eps-sweep": a.sweep, "predictions": a.loo,
              "left-out": a.left_out}
    for name, frame in tables.items():
        frame.to_csv(f"{stem}-{name}.csv", index=False)
    fit_path = Path(f"{stem}-fit.json")
    fit_path.write_text(json.dumps(build_fit_file(a.lines, a.pooled_lines, a.configs, a.settings.model_dump(mode="json"),
                                                  a.experiment.name, store_path, a.loss_lines, a.across_runs),
                                   indent=1))

    pdf = FPDF(orientation="L", unit="mm", format="A4")
    _unicode_fonts(pdf)
    pdf.set_auto_page_break(auto=True, margin=10)
    _answer_page(pdf, a, f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    _settings_page(pdf, a)
    if len(a.robust):
        _robust_page(pdf, a)
    with tempfile.TemporaryDirectory() as tmp:
        for number, (title, caption, draw) in enumerate(figure_pages(a)):
            _figure_page(pdf, title, caption, draw(), Path(tmp), number)
        _appendix(pdf, a)
        if len(a.across_runs):
            _across_runs_appendix(pdf, a)
        pdf.output(str(output))
    return {"pdf": str(output), "pages": pdf.page_no(), "csv": [f"{stem}-{n}.csv" for n in tables],
            "fit": str(fit_path), "fits": a.fits}
