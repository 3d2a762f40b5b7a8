"""Saved fits: the lines `predict` uses, with the provenance to reproduce them. Needs no torch.

A JSON file: the per-(model, compressor entry, ε) lines of critical compression on λ̂ and on the
held-out loss, the answer across runs with its lines on λ̂, on the loss and on both (for runs the
fit never saw), the checkpoints behind each line, the analysis settings (window, critical
value), and the settings of the measurements themselves, looked up by the config hashes of the rows each line fits (data and sampler of its
LLC task, data, compressor and search of its critical task): a prediction must estimate λ̂
exactly as the fitted checkpoints were. Also the versions of the packages involved.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from mdl_slt.analysis.lines import LineFit
from mdl_slt.analysis.tables import GROUP
from mdl_slt.errors import UserError

FORMAT = "mdl-slt-fit/3"
PACKAGES = ("mdl-slt", "torch", "transformers", "numpy", "pandas", "scipy", "statsmodels")


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def build_fit_file(lines: dict, configs: dict, analysis: dict, experiment: str, store: Path,
                   loss_lines: dict | None = None, across_runs=None, across_lines: dict | None = None) -> dict:
    """The payload of a fit file from the analysis's per-run lines and lines on the held-out loss
    (as `fits.fit_lines` and `fits.loss_lines` give them), the store's configs (config hash →
    {kind, settings}) and, when given, the answer across runs (`pooled.across_runs`: each
    predictor's figures per scope, method and ε, and the lines on λ̂, on the loss and on both that
    `predict` uses for a run the fit never saw, with the runs and sizes they pool)."""
    saved, used = [], set()
    for key, (fit, group) in lines.items():
        if fit is None:
            continue
        llc, critical = group.llc_config.iloc[0], group.critical_config.iloc[0]
        used |= {llc, critical}
        loss_fit = (loss_lines or {}).get(key, (None,))[0]
        saved.append({**dict(zip(GROUP, key)), "method": group.method.iloc[0], "llc_config": llc,
                      "critical_config": critical, "steps": sorted(int(s) for s in group.step.dropna()),
                      **_knob_range(group),
                      "fit": fit.to_dict(), **({"loss_fit": loss_fit.to_dict()} if loss_fit is not None else {})})
    across = []
    for row in ([] if across_runs is None else across_runs.to_dict(orient="records")):
        forms, group = (across_lines or {}).get((row["scope"], row["compressor"], row["epsilon"]), ({}, None))
        extra = {} if group is None else {"models": sorted(group.model.unique()), **_knob_range(group),
                                          "sizes": sorted(int(d) for d in group.llc_params.unique()),
                                          "lines": {form: line.to_dict() for form, line in forms.items()}}
        across.append({**{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}, **extra})
    return {"format": FORMAT, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "experiment": experiment, "store": str(store), "analysis": analysis,
            "configs": {h: configs[h] for h in sorted(used) if h in configs},
            "versions": versions(), "lines": saved, "across_runs": across}


def _knob_range(group) -> dict:
    """{"knob_range": [low, high]} of a line's critical records, where they stored it."""
    if "knob_low" not in group or not group.knob_low.notna().iloc[0]:
        return {}
    return {"knob_range": [float(group.knob_low.iloc[0]), float(group.knob_high.iloc[0])]}


def _within(knob_range):
    """Clips (prediction, lower, upper) to the knob's range, where every critical value lies (as it
    is without a range: fit files written before ranges were saved)."""
    if not knob_range:
        return lambda found: found
    low, high = knob_range
    return lambda found: tuple(min(max(v, low), high) for v in found)


@dataclass
class Prediction:
    """One (compressor, ε): λ̂'s line, beside it the line on the held-out loss and, across runs, the
    line on both, each with its 95% prediction interval and its error on what it never saw
    (leave-one-checkpoint-out within a run, leave-one-run-out across runs)."""

    compressor: str
    epsilon: float
    predicted: float
    lower: float
    upper: float
    basis: str  # "model" (the run's own line) or the pool of runs across runs ("runs of d = …", "all runs")
    rmse_unseen: float | None = None
    loss_predicted: float | None = None
    loss_lower: float | None = None
    loss_upper: float | None = None
    loss_rmse_unseen: float | None = None
    both_predicted: float | None = None  # λ̂ and the loss together (across runs)
    both_lower: float | None = None
    both_upper: float | None = None
    both_rmse_unseen: float | None = None
    best: str | None = None  # of "llc", "loss", "llc_loss": the line with the least error on what it never saw


class FitFile:
    def __init__(self, payload: dict, path: Path):
        self.payload, self.path = payload, path

    @classmethod
    def load(cls, path: str | Path) -> "FitFile":
        path = Path(path)
        try:
            payload = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"no fit file at {path}: `mdl-slt report` writes one beside each PDF "
                            "(<report>-fit.json)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"{path} is not a fit file ({type(error).__name__}): write one with `mdl-slt report`") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise UserError(f"{path} is not a {FORMAT} fit file: write one with `mdl-slt report`")
        return cls(payload, path)

    def measured_with(self) -> dict:
        """The settings the fitted measurements used: data, sampler, device, numerics and, per
        compressor entry, its compressor and search (from the config hashes of the fitted rows)."""
        configs = self.payload["configs"]
        llc = {json.dumps(configs[line["llc_config"]]["settings"]["llc"], sort_keys=True) for line in self.payload["lines"]}
        if len(llc) > 1:
            raise UserError(f"{self.path} fits lines measured with {len(llc)} different sampler settings: "
                            "predict from one experiment's fit")
        first = configs[self.payload["lines"][0]["llc_config"]]["settings"] if self.payload["lines"] else None
        if first is None:
            raise UserError(f"{self.path} holds no fitted line (too few checkpoints in the window)")
        entries = {}
        for line in self.payload["lines"]:
            settings = configs[line["critical_config"]]["settings"]
            entries[line["compressor"]] = {"id": line["compressor"], **settings["compressor"],
                                           "epsilons": settings["epsilons"], "numerics": settings["numerics"]}
        return {"data": first["data"], "llc": first["llc"], "device": first["device"], "compressors": entries}

    def predict(self, model: str, llc: float, llc_se: float, num_params: int,
                base_loss: float | None = None) -> list[Prediction]:
        """Critical compression for every (compressor, ε): the run's own line when the fit has one,
        beside the same checkpoints' line on the held-out loss; for a run the fit never saw, the
        lines across runs of its size's pool when the fit has one, else of all runs (with log d)."""
        own = [line for line in self.payload["lines"] if line["model"] == model]
        if own:
            return sorted((self._own(line, llc, llc_se, base_loss) for line in own),
                          key=lambda p: (p.compressor, p.epsilon))
        pools = [row for row in self.payload.get("across_runs", []) if row.get("lines")]
        scope = f"runs of d = {num_params:,}" if any(r["scope"] == f"runs of d = {num_params:,}" for r in pools) \
            else "all runs"
        chosen = [row for row in pools if row["scope"] == scope]
        if not chosen:
            known = sorted({line["model"] for line in self.payload["lines"]})
            raise UserError(f"{self.path} has no line for {model} and no lines across runs (it pools fewer than two "
                            f"runs): it covers {', '.join(known) or 'no model'}")
        values = {"const": 1.0, "llc": llc, "loss": base_loss, "log_d": math.log(num_params)}
        return sorted((self._across(row, values, llc_se) for row in chosen), key=lambda p: (p.compressor, p.epsilon))

    @staticmethod
    def _own(line: dict, llc: float, llc_se: float, base_loss: float | None) -> Prediction:
        fit = LineFit.from_dict(line["fit"])
        inside = _within(line.get("knob_range"))
        found = Prediction(line["compressor"], line["epsilon"], *inside(fit.predict(llc, llc_se)), "model",
                           fit.rmse_loco)
        errors = {"llc": fit.rmse_loco}
        if base_loss is not None and "loss_fit" in line:
            on_loss = LineFit.from_dict(line["loss_fit"])
            found.loss_predicted, found.loss_lower, found.loss_upper = inside(on_loss.predict(base_loss))
            found.loss_rmse_unseen = errors["loss"] = on_loss.rmse_loco
        found.best = _least(errors)
        return found

    @staticmethod
    def _across(row: dict, values: dict, llc_se: float) -> Prediction:
        from mdl_slt.analysis.lines import Regression

        lines = {form: Regression.from_dict(found) for form, found in row["lines"].items()}
        inside = _within(row.get("knob_range"))

        def at(form):
            line = lines.get(form)
            if line is None or any(values.get(c) is None for c in line.columns):
                return (None, None, None), None
            return inside(line.predict(values, llc_se)), line.rmse_loro

        (mean, low, high), error = at("llc")
        found = Prediction(row["compressor"], row["epsilon"], mean, low, high, row["scope"], error)
        (found.loss_predicted, found.loss_lower, found.loss_upper), found.loss_rmse_unseen = at("loss")
        (found.both_predicted, found.both_lower, found.both_upper), found.both_rmse_unseen = at("llc_loss")
        found.best = _least({"llc": found.rmse_unseen, "loss": found.loss_rmse_unseen, "llc_loss": found.both_rmse_unseen})
        return found


def _least(errors: dict) -> str | None:
    """The name of the finite least error, or None."""
    finite = {k: v for k, v in errors.items() if v is not None and math.isfinite(v)}
    return min(finite, key=finite.get) if finite else None
