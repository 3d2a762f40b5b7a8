"""The settings and provenance page: what was measured, with which settings and package versions,
which rows of the store were left out and why, and how sure the critical values are. Needs no
torch.
"""

from __future__ import annotations

import json

import pandas as pd

from mdl_slt.analysis.regime import regime_summary
from mdl_slt.report.figures import short
from mdl_slt.report.pdf import heading, paragraph, table


def page(pdf, a) -> None:
    from mdl_slt.analysis.fitfile import versions

    exp = a.experiment
    pdf.add_page()
    heading(pdf, "Settings and provenance")
    rows = []
    for model, part in a.table.groupby("model", sort=False):
        steps = sorted(part.step.dropna().unique())
        inside = sorted(part.step[a.inside.reindex(part.index)].dropna().unique())
        span = f"steps {int(steps[0])} … {int(steps[-1])}" if steps else "local directories, no training step"
        rows.append([short(model), f"{int(part.num_params.iloc[0]):,}", str(part.revision.nunique()), span,
                     f"{len(inside)} (from {int(inside[0])})" if inside else "0"])
    table(pdf, ["model", "parameters", "checkpoints", "measured", "in the window"], rows, [55, 30, 28, 70, 40], 8.5)
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
        total = int(a.left_out.n_rows.sum())
        groups = "; ".join(f"{int(r.n_rows)} {r.task} rows of {r.experiment} (config {r.config_hash}: {r.why})"
                           for r in a.left_out.itertuples())
        paragraph(pdf, f"Left out: {total} rows of the store measured with other settings, by other experiments or "
                       f"on older bytes of a checkpoint ({groups}); they are in the store and in the left-out CSV, "
                       "not in any fit.", 8, 4)
    else:
        paragraph(pdf, "Every row of the store belongs to this experiment's settings: none left out.", 8, 4)
    paragraph(pdf, precision_line(a.table), 8, 4)
    paragraph(pdf, regime_summary(a.regime), 8, 4)


def precision_line(t: pd.DataFrame) -> str:
    """How sure the critical values are: their standard errors against each search's precision."""
    known = t[t.critical_se.notna()]
    if not len(known):
        return "Critical values' standard errors: not stored (measured before they were kept); rerun to get them."
    noisy = known[known.noisy]
    text = (f"Critical values' standard errors (bootstrap over the evaluation sequences): median {known.critical_se.median():.3g}, largest {known.critical_se.max():.3g} "
            "knob units. ")
    if not len(noisy):
        return text + "Every one is within its search precision."
    worst = noisy.n_sequences_needed.max()
    per = "; ".join(f"{c} {n}" for c, n in noisy.groupby("compressor").size().items())
    return text + (f"{len(noisy)} of {len(known)} exceed their search precision ({per}); the worst would need "
                   f"{int(worst):,} evaluation sequences to come under it (data.eval_sequences).")
