"""`predict`: a new checkpoint's critical compression from its LLC and a saved fit, and, with
`verify`, the critical compression measured beside it; beside each prediction from λ̂, the one
from the line on the held-out loss (and, for a run the fit never saw, the line on both, fitted
across runs), each line with its error on what it never saw, so a user sees whether λ̂ earned
its cost.

The LLC is estimated with the fit's own data and sampler settings (or an experiment file's, whose
differences from the fit's are named: the fit's lines hold for its own settings); verification
runs each fitted compressor entry's search exactly as the run did (`measure.measure_entry`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from mdl_slt.llc.trace import LLCResult
from mdl_slt.models.checkpoints import CheckpointRef


@dataclass
class CheckpointPrediction:
    ref: CheckpointRef
    llc: LLCResult
    rows: list[dict]  # per (compressor, ε): the Prediction's fields, with `measured` and `inside` when verified
    settings_differ: list[str]  # settings of the measurement that differ from the fit's


def differences(ours: dict, theirs: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested settings."""
    found = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}")
    return found


def with_fit_settings(experiment, fitted: dict, own_file: bool, device: str | None):
    """(the experiment to measure with, the settings that differ from the fit's): an experiment
    file's own settings, or the fit's data, sampler and device (unless `device` is given) put into
    the defaults."""
    if own_file:
        return experiment, differences({"data": experiment.data.model_dump(mode="json"),
                                        "llc": experiment.llc.model_dump(mode="json")},
                                       {"data": fitted["data"], "llc": fitted["llc"]})
    return experiment.model_copy(update={"data": type(experiment.data).model_validate(fitted["data"]),
                                         "llc": type(experiment.llc).model_validate(fitted["llc"]),
                                         "device": device or fitted["device"]}), []


def predict_checkpoint(fit_path: Path, ref: str, experiment, home: Path, own_file: bool, verify: bool,
                       device: str | None = None) -> CheckpointPrediction:
    """Estimate λ̂ of `ref`, predict every fitted (compressor, ε) and, with `verify`, measure it;
    `experiment` is an experiment file's (`own_file`) or the defaults, `device` the one asked for."""
    from mdl_slt.analysis.fitfile import FitFile
    from mdl_slt.compute.device import resolve_device
    from mdl_slt.compute.loss import evaluate_loss
    from mdl_slt.measures.critical import CompressorEntry
    from mdl_slt.run.measure import load, measure_entry, measure_llc

    saved = FitFile.load(fit_path)
    fitted = saved.measured_with()
    experiment, differ = with_fit_settings(experiment, fitted, own_file, device)
    ckpt, tokens = load(ref, experiment, home, resolve_device(experiment.device))
    result = measure_llc(ckpt, tokens, experiment.llc)
    numerics = next(iter(fitted["compressors"].values()), {}).get("numerics", "fp32")
    base_loss = evaluate_loss(ckpt.model, tokens.eval, numerics=numerics)  # for the loss baseline's prediction
    predictions = saved.predict(ckpt.ref.model_id, result.llc_mean, result.llc_std_error or 0.0, result.num_params,
                                base_loss)
    measured = {}
    if verify:
        for key, entry in fitted["compressors"].items():
            chosen = CompressorEntry(id=key, name=entry["name"], options=entry["options"], precision=entry["precision"])
            found = measure_entry(ckpt, tokens, chosen, entry["epsilons"], entry["numerics"])
            measured.update({(key, p.epsilon): p.interpolated for p in found.search.points})
    import compressors

    knobs = {key: compressors.get(entry["name"], **entry["options"]).knob for key, entry in fitted["compressors"].items()}
    rows = []
    for p in predictions:
        knob = knobs.get(p.compressor)
        row = {**asdict(p), "knob": knob.name if knob else None, "knob_unit": knob.unit if knob else None}
        if verify:
            value = measured.get((p.compressor, p.epsilon))
            row["measured"] = value
            for prefix in ("", "loss_", "both_"):  # each line's interval judged on the measured value
                low, high = row[f"{prefix}lower"], row[f"{prefix}upper"]
                row[f"{prefix}inside"] = None if low is None else value is not None and low <= value <= high
        rows.append(row)
    return CheckpointPrediction(ckpt.ref, result, rows, differ)
