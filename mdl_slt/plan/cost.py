"""What an experiment's units can cost at most, before anything runs (`mdl-slt validate` prints it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mdl_slt.llc.scale import MAX_RUNGS
from mdl_slt.plan.experiment import Experiment
from mdl_slt.plan.units import Unit


def search_budget(entry, epsilons) -> int:
    """The most loss evaluations one critical search of `entry` can make: a bracket (2) and a bisection
    per ε down to its precision, times its evaluations per knob value."""
    method = entry.build()
    knob, precision = method.knob, entry.search_precision(method)
    searches = 2 + len(epsilons) * max(1, math.ceil(math.log2((knob.high - knob.low) / precision)))
    return searches * method.cost().evaluations


@dataclass(frozen=True)
class Cost:
    """The most work an experiment's units can take, before anything runs."""

    sgld_steps: int  # every chain's step budget, over all checkpoints
    evaluations: int  # held-out loss evaluations, over all checkpoints
    notes: list[str] = field(default_factory=list)  # per entry, work beyond the evaluations


def estimated_cost(experiment: Experiment, units: list[Unit]) -> Cost:
    """Per checkpoint: each chain's step budget, one base-loss evaluation and, per compressor entry,
    a bracket (2 evaluations) and a bisection per ε down to its precision, times the compressor's
    evaluations per knob value."""
    evaluations, notes = 1, []
    for entry in experiment.critical.compressors:
        evaluations += search_budget(entry, experiment.critical.epsilons)
        note = entry.build().cost().note
        if note:
            notes.append(f"{entry.key}: {note} per knob value")
    varied = sum(experiment.robust_at(u.ref.model_id, u.ref.revision) for u in units) * len(experiment.robustness.variations())
    if varied:
        notes.append(f"{varied} λ̂ at varied sampler settings (robustness)")
    groups = sum(len(u.groups) for u in units)
    if groups:
        notes.append(f"{groups} refined λ̂ and up to {groups * len(experiment.layer_entries())} critical searches of "
                     "single weight groups (layers)")
    measured = sum(experiment.sensitivity_at(u.ref.model_id, u.ref.revision) for u in units)
    if measured:
        notes.append(f"{', '.join(experiment.sensitivity.measures)} on {measured} checkpoints (sensitivity)")
    allocated = sum(experiment.allocation_at(u.ref.model_id, u.ref.revision) for u in units)
    if allocated:
        notes.append(f"{len(experiment.allocation.methods)} allocations of {', '.join(experiment.allocation.compressors)} "
                     f"on {allocated} checkpoints, the oracle's {experiment.allocation.grid} evaluations per group "
                     "(allocation)")
    scaled = sum(experiment.scale_at(u.ref.model_id, u.ref.revision) for u in units) * len(experiment.scale.epsilons)
    if scaled:
        steps = experiment.scale_llc(units[0].ref.model_id).max_steps
        notes.append(f"{scaled} λ(ε), each up to {MAX_RUNGS} rungs of nβ of up to {steps} steps a chain (scale)")
    return Cost((len(units) + varied + groups) * experiment.llc.num_chains * experiment.llc.max_steps,
                len(units) * evaluations, notes)
