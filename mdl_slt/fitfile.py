"""Saved fits: the lines `predict` uses, with the provenance to reproduce them. Needs no torch.

A JSON file: the per-(model, compressor, ε) lines of critical compression on λ̂, the pooled
lines on λ̂/d per (compressor, ε) for model sizes the fit never saw, the data, sampler and
critical-search settings the measurements used (a prediction must estimate λ̂ the same way),
the checkpoints behind each line, and the versions of the packages involved.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

from mdl_slt.analysis import GROUP, LineFit, fit_line, fit_lines, usable
from mdl_slt.errors import UserError

FORMAT = "mdl-slt-fit/1"
PACKAGES = ("mdl-slt", "torch", "transformers", "numpy", "pandas", "scipy", "statsmodels")


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def build_fit_file(table: pd.DataFrame, config: dict, min_step: int, store: Path) -> dict:
    """The payload of a fit file from the measurements table and the run's resolved config."""
    lines = [{**dict(zip(GROUP, key)), "steps": sorted(int(s) for s in group.step), "fit": fit.to_dict()}
             for key, (fit, group) in fit_lines(table, min_step).items() if fit is not None]
    pooled = []
    for key, group in usable(table, min_step).groupby(["compressor", "epsilon"]):
        fit = fit_line(group.llc_mean / group.llc_params, group.critical_value,
                       (group.llc_std_error / group.llc_params).to_numpy())
        if fit is not None and group.model.nunique() >= 2:
            pooled.append({"compressor": key[0], "epsilon": key[1], "models": sorted(group.model.unique()),
                           "fit": fit.to_dict()})
    return {"format": FORMAT, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "experiment": config.get("name"), "store": str(store), "min_step": min_step,
            "data": config["data"], "llc": config["llc"], "critical": config["critical"],
            "versions": versions(), "lines": lines, "pooled_per_param": pooled}


@dataclass
class Prediction:
    compressor: str
    epsilon: float
    predicted: float
    lower: float
    upper: float
    basis: str  # "model" (this size's line) or "λ/d" (the pooled line across sizes)


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
        except json.JSONDecodeError as error:
            raise UserError(f"{path} is not a fit file (invalid JSON at line {error.lineno})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise UserError(f"{path} is not a {FORMAT} fit file: write one with `mdl-slt report`")
        return cls(payload, path)

    def settings(self):
        """(DataConfig, LLCConfig, CriticalConfig) the fit's measurements used."""
        from mdl_slt.experiment import CriticalConfig, DataConfig
        from mdl_slt.sgld import LLCConfig

        p = self.payload
        return (DataConfig.model_validate(p["data"]), LLCConfig.model_validate(p["llc"]),
                CriticalConfig.model_validate(p["critical"]))

    def predict(self, model: str, llc: float, llc_se: float, num_params: int) -> list[Prediction]:
        """Critical compression for every (compressor, ε): this size's line when the fit has one,
        else the pooled line on λ̂/d."""
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
            mean, low, high = LineFit.from_dict(line["fit"]).predict(x, x_se)
            predictions.append(Prediction(line["compressor"], line["epsilon"], mean, low, high, basis))
        return sorted(predictions, key=lambda p: (p.compressor, p.epsilon))
