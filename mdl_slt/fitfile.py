"""Saved fits: the lines `predict` uses, with the provenance to reproduce them. Needs no torch.

A JSON file: the per-(model, compressor entry, ε) lines of critical compression on λ̂, the pooled
lines on λ̂/d per (compressor, ε) for model sizes the fit never saw, the checkpoints behind each
line, the analysis settings (window, critical value), and the settings of the measurements
themselves, looked up by the config hashes of the rows each line fits (data and sampler of its
LLC task, data, compressor and search of its critical task): a prediction must estimate λ̂
exactly as the fitted checkpoints were. Also the versions of the packages involved.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from mdl_slt.analysis.lines import LineFit
from mdl_slt.analysis.tables import GROUP
from mdl_slt.errors import UserError

FORMAT = "mdl-slt-fit/2"
PACKAGES = ("mdl-slt", "torch", "transformers", "numpy", "pandas", "scipy", "statsmodels")


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def build_fit_file(lines: dict, pooled: dict, configs: dict, analysis: dict, experiment: str, store: Path,
                   loss_lines: dict | None = None, across_runs=None) -> dict:
    """The payload of a fit file from the analysis's per-size lines, pooled λ̂/d lines and lines on
    the held-out loss (as `fits.fit_lines`, `fits.pooled_lines` and `fits.loss_lines` give them),
    the store's configs (config hash → {kind, settings}) and, when given, the answer across runs
    (`pooled.across_runs`: each predictor's fit and leave-one-run-out error, one row per scope,
    method and ε)."""
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
    per_param = [{"compressor": key[0], "epsilon": key[1], "models": sorted(group.model.unique()),
                  "llc_config": group.llc_config.iloc[0], "fit": fit.to_dict(), **_knob_range(group)}
                 for key, (fit, group) in pooled.items()]
    return {"format": FORMAT, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "experiment": experiment, "store": str(store), "analysis": analysis,
            "configs": {h: configs[h] for h in sorted(used) if h in configs},
            "versions": versions(), "lines": saved, "pooled_per_param": per_param,
            "across_runs": [] if across_runs is None else [
                {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
                for row in across_runs.to_dict(orient="records")]}


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
    compressor: str
    epsilon: float
    predicted: float
    lower: float
    upper: float
    basis: str  # "model" (this size's line) or "λ/d" (the pooled line across sizes)
    loo_rmse: float | None = None  # the line's leave-one-checkpoint-out error
    loss_predicted: float | None = None  # from the line on the held-out loss instead (this size only)
    loss_lower: float | None = None
    loss_upper: float | None = None
    loss_loo_rmse: float | None = None


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
        """Critical compression for every (compressor, ε): this size's line when the fit has one,
        else the pooled line on λ̂/d; with the checkpoint's held-out loss, also the prediction of
        the same size's line on the loss, so λ̂ is seen against the baseline it must beat."""
        own = [line for line in self.payload["lines"] if line["model"] == model]
        if own:
            chosen = [(line, llc, llc_se, "model") for line in own]
        else:
            chosen = [(line, llc / num_params, llc_se / num_params, "λ/d") for line in self.payload["pooled_per_param"]]
        if not chosen:
            known = sorted({line["model"] for line in self.payload["lines"]})
            raise UserError(f"{self.path} has no line for {model} and no pooled line across sizes: "
                            f"it covers {', '.join(known) or 'no model'}")
        predictions = []
        for line, x, x_se, basis in chosen:
            fit = LineFit.from_dict(line["fit"])
            inside = _within(line.get("knob_range"))
            found = Prediction(line["compressor"], line["epsilon"], *inside(fit.predict(x, x_se)), basis, fit.loo_rmse)
            if base_loss is not None and basis == "model" and "loss_fit" in line:
                on_loss = LineFit.from_dict(line["loss_fit"])
                found.loss_predicted, found.loss_lower, found.loss_upper = inside(on_loss.predict(base_loss))
                found.loss_loo_rmse = on_loss.loo_rmse
            predictions.append(found)
        return sorted(predictions, key=lambda p: (p.compressor, p.epsilon))
