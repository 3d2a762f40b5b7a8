"""The rows of the studies a checkpoint can take beyond its base loss, LLC and critical searches:
the layer study's refined λ̂ and tolerances per weight group, the sensitivity measures, and the
allocations they buy (`measure.measure_unit` runs each as a task of its own)."""

from __future__ import annotations

import time

from mdl_slt.compute.loss import sequence_losses
from mdl_slt.data.tokens import TokenSets
from mdl_slt.llc.sampling import estimate_llc
from mdl_slt.llc.trace import LLCResult
from mdl_slt.models.checkpoints import Checkpoint
from mdl_slt.plan.tasks import Task
from mdl_slt.store.records import Record


def group_tolerances(model, experiment) -> dict[float, float]:
    """Each group's tolerance → the whole model's ε it stands for: ε/G with G the model's weight
    groups (`layers.tolerance: share`), or ε itself (`whole`)."""
    from compressors.groups import weight_groups

    share = len(weight_groups(model)) if experiment.layers.tolerance == "share" else 1
    return {epsilon / share: epsilon for epsilon in experiment.critical.epsilons}


def group_llc(ckpt: Checkpoint, tokens: TokenSets, experiment, group: str) -> LLCResult:
    """The refined λ̂ of weight group `group`: only its parameters sampled, every other held at w*,
    with the model's sampler settings."""
    from compressors.groups import select_groups

    (found,) = select_groups(ckpt.model, [group])
    config = experiment.llc_for(ckpt.ref.model_id).model_copy(update={"parameters": [n for n, _ in found.params]})
    return estimate_llc(ckpt.model, tokens.train, config)


def sensitivity_records(ckpt: Checkpoint, tokens: TokenSets, experiment, task: Task, entries: dict,
                        common: dict) -> list[Record]:
    """The rows of one sensitivity measure (`mdl_slt.measures.sensitivity`) for the whole model, and each weight
    group where the experiment measures per group: on the held-out sequences, or for hawq the
    calibration tokens its compressor reads."""
    from compressors.groups import weight_groups
    from mdl_slt.measures.sensitivity import measure

    name = task.name.split(":")[1]
    entry = entries.get(task.entry)
    data = tokens.train if name == "hawq" else tokens.eval
    groups = weight_groups(ckpt.model)
    sizes = {g.name: g.size for g in groups} | {None: sum(g.size for g in groups)}
    rows, seconds = measure(name, ckpt.model, data, groups, experiment.sensitivity, entry,
                            per_group=experiment.measured_per_group(name))
    return [Record("sensitivity", task_key=task.key, config_hash=task.config_hash, measure=r.quantity,
                   weight_group=r.group, value=r.value, value_se=r.se, knob=r.knob,
                   compressor=entry.key if entry is not None else None, elapsed_s=seconds,
                   detail={"measure": name, "parameters": sizes[r.group], **r.detail}, **common) for r in rows]


def allocation_records(ckpt: Checkpoint, tokens: TokenSets, experiment, task: Task, entry, base, known: dict,
                       common: dict) -> list[Record]:
    """Per method and ε, the most compressing per-group allocation of `entry` within ε on the measured
    loss of the whole model (`mdl_slt.measures.allocation`), its bits with their standard error, and the
    knob value of every group."""
    from mdl_slt.measures import allocation

    start = time.perf_counter()
    settings = experiment.allocation
    method = entry.build()
    low, high = settings.ranges.get(entry.key, (method.knob.low, method.knob.high))
    least, most = (high, low) if method.knob.more_compression == "lower" else (low, high)
    grid = [least + (most - least) * i / (settings.grid - 1) for i in range(settings.grid)]
    model = ckpt.model
    groups = allocation.groups_for(model, entry, tokens.train.to(next(model.parameters()).device), grid)
    other = ckpt.num_params - sum(sum(t.original.numel() for t in g.prepared.targets) for g in groups)
    per_weight = _per_weight(known, groups)
    options = {}
    for name in settings.methods:
        if name == "uniform":
            options[name] = allocation.uniform(groups, grid)
            continue
        if name == "oracle":
            costs = [_measured_curve(model, tokens, g, base, experiment.critical.numerics) for g in groups]
        else:
            costs = [[0.5 * per_weight[name][g.name] * d for d in g.delta2] for g in groups]
        options[name] = allocation.frontier([g.bits for g in groups], costs)
    epsilons = settings.epsilons or experiment.critical.epsilons
    results = [result for name, found in options.items() for result in
               allocation.judge(model, tokens.eval, base, groups, found, epsilons, other, name,
                                experiment.critical.numerics)]
    elapsed = time.perf_counter() - start
    return [Record("allocation", task_key=task.key, config_hash=task.config_hash, compressor=entry.key,
                   method=entry.name, measure=r.method, epsilon=r.epsilon, bits=r.bits,
                   loss=None if r.delta_loss is None else float(base.mean()) + r.delta_loss, base_loss=float(base.mean()),
                   value=r.bits, value_se=r.bits_se, elapsed_s=elapsed,
                   detail={"allocation": r.allocation, "evaluations": r.evaluations, "frontier": r.frontier,
                           "grid": grid}, **common) for r in results]


def _per_weight(known: dict, groups) -> dict:
    """method → group → its measure per weight: tr(H_g)/d_g (hawq), F_g/d_g (fisher), λ̂_g/d_g (llc)."""
    found = {"hawq": {}, "fisher": {}, "llc": {}}
    for rows in known.values():
        for row in rows:
            group = row.get("weight_group")
            if row.get("task") == "sensitivity" and row.get("measure") in ("hessian_trace", "fisher") and group:
                found["hawq" if row["measure"] == "hessian_trace" else "fisher"][group] = \
                    row["value"] / row["detail"]["parameters"]
            elif row.get("task") == "llc_group":
                found["llc"][group] = row["llc_mean"] / row["detail"]["num_params"]
    return found


def _measured_curve(model, tokens, group, base, numerics: str) -> list[float]:
    """The oracle's costs: the measured loss increase with `group` alone at each of its values."""
    found = []
    for value in group.values:
        with group.method.applied(model, group.prepared, value):
            found.append(float((sequence_losses(model, tokens.eval, numerics=numerics) - base).mean()))
    return found
