"""Every file a report writes and every column of its CSV tables: name, unit, meaning. The reference
in reports/README.md is written from here (`markdown`), an empty table keeps the header given here
(`header`), and a test holds the CSVs of a report to it. Needs no torch.

One naming scheme across files: a quantity, then the predictor or form it belongs to
(`coef_llc`, `r2_loss`); a 95% interval as `<quantity>_ci_low` / `_ci_high`; a prediction interval
as `pi_low` / `pi_high`; an error on what a fit never saw as `rmse_loco` (a checkpoint left out),
`rmse_loro` (a run) or `rmse_logo` (a weight group); a description length in bits as `…dl_bits`; a
count as `n_…` (or `num_params`). Predictor codes: `llc` λ̂, `llc_per_param` λ̂/d, `redundancy`
λ̂·ln n/ln 2, `loss` the held-out loss, `tokens` log tokens seen, `llc_loss` λ̂ and the loss
together, `log_params` log d_g, and the sensitivity measures by name.
"""

from __future__ import annotations

KEY = {"model": ("", "the model id (ORG/NAME) or local directory"),
       "revision": ("", "the checkpoint's revision (e.g. step1000)"),
       "step": ("steps", "its training step"),
       "compressor": ("", "the compressor entry's id"),
       "method": ("", "the registered compressor the entry runs"),
       "epsilon": ("nats/token", "the tolerance ε of the whole model's held-out loss increase")}


def _pick(*names: str) -> dict:
    return {n: KEY[n] for n in names}


FIGURES = {"r2": ("", "R² of the fit"), "coef": ("knob units per unit of the predictor", "the predictor's coefficient"),
           "coef_ci_low": ("as coef", "its 95% interval, HC3 errors, t"), "coef_ci_high": ("as coef", "")}
MEASURES = {"fisher": ("nats²/token² per weight", "the empirical Fisher trace per weight, F/d (when measured)"),
            "hessian_trace": ("nats/token per weight²", "the held-out loss Hessian's trace per weight, tr(H)/d "
                                                         "(Hutchinson; when measured)"),
            "kurtosis": ("", "excess kurtosis of the weights (when measured)"),
            "max_over_rms": ("", "max|w|/rms of the weights (when measured)"),
            "hawq": ("knob units", "the critical value HAWQ-V2's Ω predicts at ε (when measured)")}
FORMS = {"llc": "λ̂ (+ log d)", "loss": "the held-out loss (+ log d)", "tokens": "log tokens seen (+ log d)",
         "llc_loss": "λ̂ and the loss together (+ log d): coef is λ̂'s at equal loss",
         "llc_per_param": "λ̂/d (pools of several sizes only)", "redundancy": "λ̂·ln n / ln 2, bits"}
TOURNAMENT = {"predictor": ("", "the predictor's code (module docstring)"), **FIGURES,
              "p_llc_beside": ("", "HC3 Wald test of λ̂ added beside the predictor"),
              "llc_coef_beside": ("knob units per unit of λ̂", "λ̂'s coefficient beside it"),
              "llc_coef_beside_ci_low": ("as llc_coef_beside", "its 95% interval"),
              "llc_coef_beside_ci_high": ("as llc_coef_beside", "")}
ANSWER = {"best": ("", "the predictor of least error on unseen units"),
          "best_other": ("", "the best that is not λ̂ in one of its forms"),
          "llc_adds": ("", "whether λ̂ beside best_other lowers its error on unseen units"),
          "llc_direction_beside": ("", "λ̂'s coefficient beside best_other against the theory's sign: as theory, "
                                       "against theory, unclear (interval across 0)"),
          "theory_sign": ("", "+1 where less compression is a higher knob value (bits, kept rank), −1 where lower"),
          "llc_direction": ("", "λ̂'s own coefficient against the theory's sign")}
LINE = {"intercept": ("knob units", "α of c* = α + β·λ̂ (OLS)"), "slope": ("knob units per unit of λ̂", "β"),
        "scale": ("knob units²", "residual variance s²"), "df_resid": ("", "residual degrees of freedom"),
        "r_squared": ("", "R²"), "pearson_r": ("", "Pearson r of c* and λ̂"), "spearman_rho": ("", "Spearman ρ"),
        "slope_ci_low": ("as slope", "95% interval, HC3 errors, t"), "slope_ci_high": ("as slope", ""),
        "intercept_ci_low": ("knob units", "95% interval of α"), "intercept_ci_high": ("knob units", ""),
        "bootstrap_slope_ci_low": ("as slope", "bootstrap over checkpoints, each λ̂ redrawn from its error"),
        "bootstrap_slope_ci_high": ("as slope", ""),
        "rmse_loco": ("knob units", "RMSE of each checkpoint predicted from a line through the others"),
        "coverage_loco": ("", "share of left-out checkpoints inside their 95% prediction interval"),
        "eiv_slope": ("as slope", "York's slope with the errors of both λ̂ and the critical value"),
        "eiv_slope_ci_low": ("as slope", "its 95% interval"), "eiv_slope_ci_high": ("as slope", ""),
        "slope_se": ("as slope", "HC3 standard error of the slope")}

TABLES = {
    "records": ("every row of the store the analysis used (one per measurement)", {
        "key": ("", "the row's key: its task's key and what tells the task's rows apart"),
        "task_key": ("", "task | model | revision | checkpoint identity | config hash"),
        "checkpoint_id": ("", "what names the checkpoint's bytes (snapshot commit, or sha256 of a directory)"),
        "experiment": ("", "the experiment that measured it"),
        "task": ("", "base_loss, llc, llc_robust, critical, loss_curve, llc_group, critical_group, "
                     "loss_curve_group, sensitivity, allocation, step_size"),
        **_pick("model", "revision", "step"), "num_params": ("", "the checkpoint's parameters"),
        "tokens_seen": ("tokens", "training tokens seen"), **_pick("compressor", "method"),
        "knob": ("knob units", "a loss curve's knob value; a critical row's bracket end (passing)"),
        "knob_interpolated": ("knob units", "a critical row's interpolated crossing"), "epsilon": KEY["epsilon"],
        "loss": ("nats/token", "held-out loss of the row (L(w*) for an LLC)"),
        "base_loss": ("nats/token", "the uncompressed checkpoint's held-out loss"),
        "dl_bits": ("bits", "description length of the compressed model at `knob`"),
        "dl_entropy_bits": ("bits", "the same with an entropy-coded payload"),
        "dl_interpolated_bits": ("bits", "description length at the interpolated crossing"),
        "llc_mean": ("", "λ̂"), "llc_std_error": ("", "its standard error (MCSE)"),
        "weight_group": ("", "the weight group a row measures alone (empty: the whole model)"),
        "measure": ("", "a sensitivity row's quantity, an allocation row's method"),
        "value": ("", "a sensitivity measure's value (an allocation's bits)"),
        "value_se": ("", "its standard error"), "elapsed_s": ("s", "the task's time"),
        "config_hash": ("", "hash of the settings the task depends on"), "device": ("", "cpu or cuda"),
        "numerics": ("", "fp32 or bf16-autocast"), "seed": ("", "the sampler's seed"),
        "package_version": ("", "mdl-slt's version"), "created_at": ("UTC", "when the row was written")}),
    "measurements": ("one row per checkpoint × compressor entry × ε: the critical value beside λ̂ and the loss "
                     "(`mdl_slt.results` returns it)", {
        **_pick("model", "revision", "compressor", "method", "epsilon"),
        "critical_bracket": ("knob units", "the most compressing evaluated knob value within ε"),
        "critical_bracket_dl_bits": ("bits", "the description length there"),
        "critical_bracket_dl_entropy_bits": ("bits", "the same, payload entropy-coded"),
        "knob_name": ("", "the knob (bits, rank_fraction, fraction, …)"),
        "monotone": ("", "whether the evaluations were monotone around ε"),
        "wide": ("", "whether the bracket is wider than the search precision"),
        "interpolation": ("", "log-linear, linear, end or none"),
        "n_evaluations": ("", "loss evaluations of the search"),
        "critical_se": ("knob units", "standard error of the critical value (bootstrap over held-out sequences)"),
        "search_precision": ("knob units", "the search's precision"),
        "n_sequences_needed": ("", "held-out sequences that would bring critical_se under the precision"),
        "knob_low": ("knob units", "the knob's range"), "knob_high": ("knob units", ""),
        "device": ("", "cpu or cuda"), "numerics": ("", "of the loss evaluations"),
        "critical_config": ("", "config hash of the critical task"), "step": KEY["step"],
        "num_params": ("", "the checkpoint's parameters"), "tokens_seen": ("tokens", "training tokens seen"),
        "llc_mean": ("", "λ̂"), "llc_std_error": ("", "its standard error"), "r_hat": ("", "split R̂ of the chains"),
        "ess": ("", "pooled bulk ESS"), "converged": ("", "whether the chains met R̂, ESS and relaxation targets"),
        "llc_params": ("", "d, the parameters λ̂ sampled"), "llc_numerics": ("", "numerics of the sampling"),
        "llc_config": ("", "config hash of the LLC task"), "base_loss": ("nats/token", "held-out loss"),
        "uniform_loss": ("nats/token", "ln V, a uniform prediction's loss"),
        "critical_value": ("knob units", "the critical value fitted (critical_rule)"),
        "noisy": ("", "critical_se above the search precision"),
        "critical_dl_bits": ("bits", "description length at critical_value"),
        "critical_rule": ("", "interpolated (log ΔL linear to ε inside the bracket) or bracket"),
        "llc_dl_bits": ("bits", "the LLC's redundancy, λ̂·ln n / ln 2 (n tokens seen)"), **MEASURES,
        "in_window": ("", "inside the analysis window")}),
    "fits": ("per model × compressor entry × ε, c* = α + β·λ̂ over the analysis window", {
        **_pick("model", "compressor", "method", "epsilon"), "n": ("", "checkpoints fitted"),
        "num_params": ("", "the model's parameters"), "converged_share": ("", "share of them with converged chains"),
        "first_step": ("steps", "the first step fitted"), **LINE}),
    "fits-all": ("the same over every checkpoint", "fits"),
    "baselines": ("per fit, the same line on the held-out loss and on log tokens seen, and the nested tests", {
        **_pick("model", "compressor", "epsilon"), "n": ("", "checkpoints"),
        **{f"{k}_{p}": v for p in ("llc", "loss", "tokens") for k, v in
           {"r2": ("", "R² of c* on the predictor alone"), "slope": ("knob units per unit", "slope"),
            "slope_ci_low": ("", "95% interval"), "slope_ci_high": ("", ""),
            "rmse_loco": ("knob units", "leave-one-checkpoint-out RMSE")}.items()},
        "r_llc_loss": ("", "Pearson r of λ̂ and the loss"), "collinear": ("", "|r| > 0.9: they cannot be separated"),
        "coef_llc_beyond_loss": ("knob units per unit of λ̂", "β_λ in c* = α + β_L·L + β_λ·λ̂: λ̂'s coefficient at "
                                                             "equal loss"),
        "p_llc_beyond_loss": ("", "HC3 Wald test of β_λ = 0"),
        "coef_loss_beyond_llc": ("knob units per nat", "β_L in the same: the loss's coefficient at equal λ̂"),
        "p_loss_beyond_llc": ("", "HC3 Wald test of β_L = 0"),
        "best_out_of_sample": ("", "llc, loss or tokens: the least rmse_loco")}),
    "pooled": ("per compressor entry × ε, across sizes: does one line serve all?", {
        **_pick("compressor", "epsilon"), "n": ("", "checkpoints"), "n_models": ("", "models"),
        "r2_common": ("", "R² of one line"), "r2_separate": ("", "R² of a line per size"),
        "p_same_line": ("", "F test of one line against one per size"),
        "p_same_slope": ("", "HC3 Wald test of equal slopes"), "r2_per_param": ("", "R² of one line on λ̂/d"),
        "slope_per_param": ("knob units per unit of λ̂/d", "its slope"), "slope_per_param_se": ("", "HC3 error")}),
    "across-runs": ("per pool of runs × compressor entry × ε, each form fitted across runs, judged on runs left out", {
        "scope": ("", "all runs, or runs of d = … (one size)"), **_pick("compressor", "epsilon"),
        "n": ("", "checkpoints"), "n_runs": ("", "runs"), "n_sizes": ("", "sizes"),
        **{f"{k}_{form}": (u, f"{m} — {label}" if k == "r2" else m) for form, label in FORMS.items()
           for k, (u, m) in {**FIGURES, "rmse_loro": ("knob units", "leave-one-run-out RMSE")}.items()},
        "r_llc_loss": ("", "Pearson r of λ̂ and the loss"), "collinear": ("", "|r| > 0.9"),
        "p_llc_beyond_loss": ("", "HC3 Wald test of λ̂ beyond the loss (+ log d): of coef_llc_loss = 0"),
        "coef_loss_beyond_llc": ("knob units per nat", "the loss's coefficient in the llc_loss form"),
        "p_loss_beyond_llc": ("", "of the loss beyond λ̂"),
        "best_across_runs": ("", "the form of least rmse_loro (llc_loss aside)"),
        "theory_sign": ANSWER["theory_sign"],
        "llc_direction": ("", "coef_llc_loss against the theory's sign"),
        "llc_adds_out_of_sample": ("", "rmse_loro_llc_loss below rmse_loro_loss")}),
    "groups": ("the layer study: per checkpoint × entry × ε × weight group, its critical value beside its "
               "refined λ̂", {
        **_pick("model", "revision", "step", "compressor", "method", "epsilon"),
        "weight_group": ("", "embed, unembed, block<i>.attn.in / attn.out / mlp.in / mlp.out"),
        "knob_name": ("", "the knob"), "critical_value": ("knob units", "the group's own critical value"),
        "critical_se": ("knob units", "its standard error"),
        "tolerance": ("nats/token", "the group's tolerance (ε / G, or ε)"),
        "critical_dl_bits": ("bits", "description length there"), "llc_mean": ("", "λ̂_g, the refined LLC"),
        "llc_std_error": ("", "its standard error"), "group_params": ("", "d_g"), "r_hat": ("", "split R̂"),
        "converged": ("", "the group's chains converged"), "llc_per_param": ("", "λ̂_g / d_g"),
        "log_params": ("", "ln d_g"), **{k: (u, m.replace("/d", "_g/d_g")) for k, (u, m) in MEASURES.items()}}),
    "layers": ("the answer inside checkpoints: per run × scope (a checkpoint, or its checkpoints pooled with an "
               "offset each) × entry × ε", {
        **_pick("model", "step", "compressor", "epsilon"), "scope": ("", "a revision, or pooled"),
        "n_checkpoints": ("", "checkpoints"), "n_groups": ("", "weight groups"), "n": ("", "rows fitted"), **ANSWER}),
    "layers-predictors": ("per predictor of each: c*_g on it over the groups", {
        **_pick("model", "step", "compressor", "epsilon"), "scope": ("", "a revision, or pooled"),
        "n_checkpoints": ("", "checkpoints"), **TOURNAMENT,
        "rmse_logo": ("knob units", "leave-one-group-out RMSE"),
        "rmse_logo_beside_log_params": ("knob units", "the same with log d_g beside the predictor"),
        "rmse_logo_with_llc": ("knob units", "the same with λ̂_g/d_g beside it")}),
    "measures": ("the answer across runs with the sensitivity measures: per pool × entry × ε", {
        "scope": ("", "all runs, or runs of one size"), **_pick("compressor", "epsilon"), "n": ("", "checkpoints"),
        "n_runs": ("", "runs"), **ANSWER}),
    "measures-predictors": ("per predictor of each: c* on it across runs (with log d where several sizes)", {
        "scope": ("", "all runs, or runs of one size"), **_pick("compressor", "epsilon"), **TOURNAMENT,
        "rmse_loro": ("knob units", "leave-one-run-out RMSE"),
        "rmse_loro_beside_loss": ("knob units", "the same with the loss beside the predictor"),
        "rmse_loro_with_llc": ("knob units", "the same with λ̂ beside it")}),
    "allocations": ("per checkpoint × entry × ε × method: the most compressing per-group allocation within ε on "
                    "the measured loss", {
        **_pick("model", "revision", "step", "compressor", "epsilon"),
        "allocation_method": ("", "uniform, hawq, llc, fisher or oracle"),
        "dl_bits": ("bits", "its description length (empty: no allocation of the method passes)"),
        "dl_bits_se": ("bits", "bootstrap standard error over the held-out sequences"),
        "delta_loss": ("nats/token", "its measured loss increase"), "n_evaluations": ("", "loss evaluations"),
        "allocation": ("", "each group's knob value"), "dl_vs_uniform": ("", "dl_bits / uniform's"),
        "dl_vs_oracle": ("", "dl_bits / the oracle's")}),
    "costs": ("what each measure cost on this machine", {
        "measure": ("", "llc, loss, llc_group, llc_scale, a sensitivity measure, or critical:<compressor> (its "
                        "search at every ε)"), "seconds": ("s", "median seconds"),
        "per": ("", "checkpoint, or group for the refined λ̂")}),
    "robustness": ("per varied sampler setting: did the answer hold?", {
        "setting": ("", "parameter×multiplier"), "n_checkpoints": ("", "measured again"),
        "n_failed": ("", "checkpoints where every chain diverged"),
        "tau_median": ("", "Kendall τ of the checkpoints' order by λ̂ against the main (median over models)"),
        "tau_min": ("", "the least"), "n_fits": ("", "main fits redone"),
        "n_slopes_kept": ("", "fits whose slope kept its sign and significance"),
        "n_verdicts_kept": ("", "fits whose test of λ̂ beyond the loss kept its verdict"),
        "n_diverged_chains": ("", "chains stopped"), "n_unconverged": ("", "estimates not converged"),
        "held": ("", "every fit kept both and no checkpoint failed")}),
    "robustness-fits": ("per varied setting × main fit: the fit redone with that λ̂", {
        "setting": ("", "parameter×multiplier"), **_pick("model", "compressor", "epsilon"),
        "n": ("", "checkpoints"), "tau": ("", "Kendall τ against the main λ̂"),
        "slope_main": ("knob units per unit of λ̂", "the main λ̂'s slope"), "slope": ("", "the varied λ̂'s"),
        "slope_ci_low": ("", "its 95% interval"), "slope_ci_high": ("", ""), "r2_main": ("", "R²"), "r2": ("", ""),
        "p_beyond_main": ("", "HC3 test of λ̂ beyond the loss"), "p_beyond": ("", ""),
        "slope_kept": ("", "sign and significance kept"), "verdict_kept": ("", "verdict kept at p < 0.05")}),
    "eps-sweep": ("per checkpoint × entry: the slope of the critical description length per halving of ε", {
        **_pick("model", "step", "compressor"), "n_epsilons": ("", "tolerances"),
        "eps_slope_bits": ("bits per halving of ε", "the slope"), "llc_mean": ("", "λ̂"),
        "llc_std_error": ("", ""), "num_params": ("", "parameters")}),
    "regime": ("per checkpoint: where its λ̂ was sampled, against the tolerances and the trace limit", {
        **_pick("model", "revision", "step"), "llc_mean": ("", "λ̂"), "n_beta": ("", "nβ"),
        "localization": ("", "γ"), "excess_loss": ("nats/token", "E[ΔL] = λ̂/nβ, the posterior's mean height above w*"),
        "excess_over_eps_min": ("", "E[ΔL] over the smallest ε"), "excess_over_eps_max": ("", "over the largest"),
        "hessian_trace": ("nats/token per weight²", "tr(H) of the held-out loss (the hessian_trace measure; NaN "
                                                    "when not measured)"),
        "trace_limit": ("", "T = nβ·tr(H)/(2γ), λ̂ when localization dominates every direction"),
        "trace_ratio": ("", "λ̂/T"), "half_d": ("", "d/2, λ̂ when no direction is localized"),
        "slope": ("", "d log λ̂ / d log nβ between the robustness section's nβ multipliers nearest 1 (NaN "
                      "without one on each side)"),
        "regime": ("", "trace limit, crossover or volume law by the slope (≥ 0.75, between, ≤ 0.25), else trace "
                       "limit when λ̂/T is within 1.25× of 1")}),
    "scale": ("per checkpoint × ε of the `scale` section: λ(ε), the LLC at the scale of the tolerance", {
        **_pick("model", "revision", "step", "epsilon"),
        "llc_at_scale": ("", "λ(ε): λ̂ at the nβ whose posterior sits ε above w*, on the divergence from w*"),
        "llc_at_scale_se": ("", "its standard error"), "n_beta": ("", "nβ_ε, the last rung's"),
        "excess_loss": ("nats/token", "E[D] = λ(ε)/nβ_ε, within 5% of ε when found"),
        "found": ("", "E[D] within 5% of ε"), "converged": ("", "the last rung's chains met the convergence rules"),
        "rungs": ("", "rungs of nβ sampled"), "why": ("", "why not found"),
        "dl_lambda_bits": ("bits", "DL_λ(ε) = ∫ λ d log₂(1/s) from the widest tolerance found on the checkpoint "
                                   "(NaN when not found)"),
        "llc_mean": ("", "the main λ̂"), "over_llc": ("", "λ(ε)/λ̂")}),
    "predictions": ("each checkpoint predicted from its run's line through the others", {
        **_pick("model", "compressor", "epsilon", "step"), "llc_mean": ("", "λ̂"),
        "measured": ("knob units", "its critical value"), "predicted": ("knob units", "the prediction"),
        "pi_low": ("knob units", "95% prediction interval"), "pi_high": ("knob units", ""),
        "inside": ("", "measured inside it")}),
    "left-out": ("rows of the store no fit used, and why", {
        "task": ("", ""), "config_hash": ("", ""), "why": ("", "other settings or experiment, or older bytes"),
        "experiment": ("", ""), "n_models": ("", ""), "n_rows": ("", ""), "created": ("UTC", "the latest")}),
}
OPTIONAL = set(MEASURES)  # columns present only when measured
FILES = [("<name>.pdf", "the report"), ("<name>-<table>.csv", "every table below"),
         ("<name>-fit.json", "the fitted lines `mdl-slt predict --fit` reads, with the settings they hold for"),
         ("<name>-figures/NN-<title>.svg, .png", "every figure of the report, numbered by its page"),
         ("<name>.sqlite", "the results store a rerun resumes from (the experiment's `store`)"),
         ("<name>.log", "the run's log, beside the store")]


def columns(table: str) -> dict:
    """The documented columns of a table: name → (unit, meaning)."""
    spec = TABLES[table][1]
    return TABLES[spec][1] if isinstance(spec, str) else spec


def header(table: str) -> list[str]:
    """The columns an empty table is written with: every documented one but those present only when measured."""
    return [c for c in columns(table) if c not in OPTIONAL]


def markdown() -> str:
    """The reference of reports/README.md."""
    lines = ["# reports/", "", "Generated output lands here and is ignored by git (but for this file, which "
             "`mdl-slt` writes from `mdl_slt/report/columns.py`). A run writes, beside its store:", ""]
    lines += [f"- `{name}`: {what}" for name, what in FILES]
    lines += ["", (__doc__ or "").split("\n\n", 1)[1].strip(), ""]
    for table, (what, _) in TABLES.items():
        lines += [f"## `<name>-{table}.csv`", "", what[0].upper() + what[1:] + ".", "", "| column | unit | meaning |",
                  "|---|---|---|"]
        lines += [f"| `{c}` | {u} | {m.replace('|', chr(92) + '|')} |" for c, (u, m) in columns(table).items()]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m mdl_slt.report.columns > reports/README.md
    print(markdown(), end="")
