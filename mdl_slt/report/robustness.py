"""Robustness to the sampler: λ̂ measured again at other sampler settings, and whether every fit
kept its answer; page 1's line and the page of its own. Needs no torch.
"""

from __future__ import annotations

import pandas as pd

from mdl_slt.report.figures import short
from mdl_slt.report.pdf import g, heading, paragraph, table


def sentence(robust: pd.DataFrame) -> str:
    """Page 1's line on robustness: did every fit keep its answer under every varied sampler setting?"""
    changed = robust[~robust.held]
    head = (f"Robustness to the sampler: λ̂ measured again at {len(robust)} other settings "
            f"({', '.join(robust.setting)}); ")
    if not len(changed):
        return head + "every fit kept its slope's sign and significance and its 'λ̂ beyond the loss' verdict under all of them."
    return head + "the answer did not hold under " + "; ".join(
        f"{r.setting} ({r.n_fits - r.n_slopes_kept} slopes and {r.n_fits - r.n_verdicts_kept} verdicts of {r.n_fits} "
        f"fits changed" + (f"; every chain diverged on {r.n_failed} checkpoints" if r.n_failed else "") + ")"
        for r in changed.itertuples()) + " (robustness page)."


def page(pdf, a) -> None:
    pdf.add_page()
    heading(pdf, "Robustness: the answer under other sampler settings")
    rows = [[r.setting, str(r.n_checkpoints), str(r.n_failed), g(r.tau_median, 2), g(r.tau_min, 2),
             f"{r.n_slopes_kept} / {r.n_fits}", f"{r.n_verdicts_kept} / {r.n_fits}", str(r.n_diverged_chains),
             str(r.n_unconverged), "yes" if r.held else "no"] for r in a.robust.itertuples()]
    table(pdf, ["setting (× main)", "measured", "all chains diverged", "Kendall τ (median)", "τ (least)",
                "slopes kept", "verdicts kept", "diverged chains", "unconverged", "answer held"], rows,
          [36, 20, 28, 28, 20, 24, 24, 26, 24, 22], 8)
    pdf.ln(1)
    fits = a.robust_fits.dropna(subset=["slope"]) if "slope" in a.robust_fits else a.robust_fits.iloc[0:0]
    rows = [[r.setting, short(r.model), r.compressor, f"{r.epsilon:g}", str(int(r.n)), g(r.tau, 2),
             f"{g(r.slope_main)} → {g(r.slope)}", f"{g(r.r2_main, 2)} → {g(r.r2, 2)}",
             f"{g(r.p_beyond_main, 2)} → {g(r.p_beyond, 2)}", "" if r.slope_kept and r.verdict_kept else "changed"]
            for r in fits.itertuples()]
    if rows:
        table(pdf, ["setting", "model", "method", "ε", "n", "τ", "slope: main → varied", "R²", "p(λ̂ | L)", ""],
              rows, [32, 36, 20, 10, 8, 12, 50, 30, 40, 18], 7)
    paragraph(pdf, "Each setting multiplies one of the main sampler settings; λ̂ is measured again on the checkpoints "
                   "the robustness section names, and each main fit is redone over its checkpoints in the window that "
                   "were measured again (at least 4), beside the main λ̂ on the same checkpoints. Kept: the slope's "
                   "sign and significance (95% interval, HC3) and the verdict of the HC3 test of λ̂ beyond the loss at "
                   "p < 0.05. Every figure is in the robustness CSV files.", 7, 3.6)
