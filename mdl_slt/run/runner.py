"""Running an experiment: plan → executor → store, resumable, with progress and a log.

The device is resolved first (it is part of every task's identity), the suite built if the
experiment names it, then every task not yet done in the store is handed to the executor, unit
by unit as each is claimed (`claims`): processes sharing one store share its work. Each
outcome is written the moment it arrives, one transaction per task; failures are recorded with
their reason and the rest goes on. A rerun measures only what is missing or failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from mdl_slt.errors import UserError
from mdl_slt.plan.experiment import Experiment
from mdl_slt.plan.tasks import Tasks
from mdl_slt.plan.units import plan, resolve_device
from mdl_slt.progress import tracking
from mdl_slt.run.executors import execute
from mdl_slt.store.claims import Claims
from mdl_slt.store.database import Store


@dataclass
class RunSummary:
    units: int = 0
    skipped: int = 0  # units with nothing left to measure
    measured: int = 0  # units whose every task is now done
    tasks_done: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (unit, task, reason)
    elapsed_s: float = 0.0

    @property
    def failed_units(self) -> int:
        return len({unit for unit, _, _ in self.failures})
    log: Path | None = None
    experiment: Experiment | None = None  # as run, its device resolved
    by_others: int = 0  # units measured by other processes on the same store meanwhile
    last: bool = True  # this process finished last of those sharing the store: it writes the report


def run_log(store: Path):
    """A logger appending to `<store>.log` beside the results store, one line per event."""
    import logging

    log = logging.getLogger(f"mdl_slt.run.{store}")
    log.setLevel(logging.INFO)
    log.propagate = False
    path = Path(store).with_suffix(".log")
    if not log.handlers:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
    return log, path


def ensure_suite(experiment: Experiment, home: Path, console) -> None:
    """Build first the embedded suite's runs the experiment names that are not built yet."""
    from mdl_slt.models.spec import SuiteSpec
    from mdl_slt.models.suite import build_suite, missing

    spec = SuiteSpec()
    todo = missing(home, spec, spec.find(m.id for m in experiment.models))
    if todo:
        console.print(f"Building {len(todo)} run(s) of the embedded micro-Pythia suite (once; reused afterwards)…",
                      highlight=False)
        build_suite(home, spec, todo, console=console)


def step_sizes(experiment: Experiment, units, home: Path, store: Store, console) -> Experiment:
    """With `llc.step_size: auto`, one step per model, held for all its checkpoints (the paper's
    caveat): the paper's for a Pythia size, else from λ_max of ∇²L at the model's latest planned
    checkpoint. Each choice is a `step_size` task run through the executor (the driver loads no
    model) and kept in the store, so reruns and added checkpoints keep it."""
    if experiment.llc.step_size != "auto":
        return experiment
    chosen_at = Tasks(experiment).step_size_tasks(units)  # their settings are recorded with every task's
    done = store.done()
    pending = [(unit, [task]) for unit, task in chosen_at if task.key not in done]
    for unit, _ in pending:
        console.print(f"choosing the SGLD step size of {unit.ref.model_id} at {unit.ref.revision or unit.ref.model_id}…",
                      highlight=False)
    with Claims(store, pending, experiment.lease_s) as claims:
        for outcome in execute(claims, experiment, home):
            task = outcome.task
            if outcome.error is None:
                store.write_task(task.key, outcome.unit, task.name, task.config_hash, outcome.records)
            else:
                store.fail_task(task.key, outcome.unit, task.name, task.config_hash, outcome.error)
            claims.release(outcome.unit)
        claims.finish()
    chosen, states = dict(experiment.llc_steps), store.task_states()
    for unit, task in chosen_at:
        found = store.detail(task.key)
        if found is None:
            raise UserError(f"choosing the step size of {unit} failed: {states.get(task.key, ('', 'unknown'))[1]}")
        chosen[unit.ref.model_id] = found["step_size"]
    return experiment.model_copy(update={"llc_steps": chosen})


def run_experiment(experiment: Experiment, home: Path, console) -> RunSummary:
    """Measure every task of the experiment not yet done in its store."""
    start = time.perf_counter()
    experiment = resolve_device(experiment)
    ensure_suite(experiment, home, console)
    units = plan(experiment, home)
    summary = RunSummary(units=len(units), experiment=experiment)
    with Store(experiment.store) as store:
        log, summary.log = run_log(experiment.store)
        store.record_checkpoints([(str(u), u.ref.model_id, u.ref.revision, u.identity) for u in units])
        experiment = summary.experiment = step_sizes(experiment, units, home, store, console)
        tasks = Tasks(experiment)
        store.log_run(experiment.name, experiment.model_dump(mode="json"))
        for found, kind, settings in tasks.configs():
            store.record_config(found, kind, settings)
        done = store.done()
        pending = [(u, with_inputs(todo, tasks.for_unit(u), done, store)) for u in units
                   if (todo := [t for t in tasks.for_unit(u) if t.key not in done])]
        summary.skipped = len(units) - len(pending)
        log.info(f"run {experiment.name} on {experiment.device}: {len(units)} checkpoints, {len(pending)} to measure, "
                 f"{experiment.workers} worker(s)")
        failed: dict[str, list[str]] = {}
        with tracking(console, "checkpoints", len(units), summary.skipped) as tracker, \
                Claims(store, pending, experiment.lease_s) as claims:
            left = claims.handed
            for outcome in execute(claims, experiment, home):
                task = outcome.task
                if outcome.error is None:
                    store.write_task(task.key, outcome.unit, task.name, task.config_hash, outcome.records,
                                     outcome.trace)
                    summary.tasks_done += 1
                    log.info(f"done {outcome.unit} {task.name}")
                else:
                    store.fail_task(task.key, outcome.unit, task.name, task.config_hash, outcome.error)
                    summary.failures.append((outcome.unit, task.name, outcome.error))
                    failed.setdefault(outcome.unit, []).append((task.name, outcome.error))
                    log.info(f"failed {outcome.unit} {task.name}: {outcome.error}")
                left[outcome.unit] -= 1
                if not left[outcome.unit]:
                    claims.release(outcome.unit)
                    if outcome.unit in failed:
                        console.print(f"failed {outcome.unit} {grouped(failed[outcome.unit])}", markup=False,
                                      highlight=False)
                        tracker.step(f"{outcome.unit}: {len(failed[outcome.unit])} task(s) failed")
                    else:
                        summary.measured += 1
                        tracker.step(f"done {outcome.unit}")
            summary.last = claims.finish()
        summary.by_others = len(pending) - summary.measured - summary.failed_units
    summary.elapsed_s = time.perf_counter() - start
    log.info(f"finished: {summary.measured} measured, {summary.skipped} already stored, "
             f"{summary.failed_units} failed ({len(summary.failures)} tasks), in {summary.elapsed_s:.0f} s")
    return summary


def with_inputs(todo: list, every: list, done: set, store: Store) -> list:
    """The tasks `todo`, each carrying the stored rows of the tasks it reads that an earlier run
    measured (those measured in this run reach it from its own unit)."""
    from dataclasses import replace

    keys = {t.name: t.key for t in every}
    return [replace(t, inputs=tuple((name, tuple(store.rows_of(keys[name]))) for name in t.needs
                                    if keys.get(name) in done)) if t.needs else t for t in todo]


def grouped(failures: list[tuple[str, str]]) -> str:
    """Failed tasks of one unit, those sharing a reason named together: `a, b: reason; c: other`."""
    by_reason: dict[str, list[str]] = {}
    for task, why in failures:
        by_reason.setdefault(why, []).append(task)
    return "; ".join(f"{', '.join(tasks)}: {why}" for why, tasks in by_reason.items())


def unit_status(experiment: Experiment, home: Path, store: Store) -> list[tuple[str, str, str]]:
    """(unit, done | failed | pending, detail) for every unit of a device-resolved experiment."""
    tasks = Tasks(experiment)
    states, unconverged = store.task_states(), store.unconverged()
    rows = []
    for unit in plan(experiment, home):
        own = tasks.for_unit(unit)
        failed = [(t.name, states[t.key][1]) for t in own if states.get(t.key, ("", ""))[0] == "failed"]
        missing = [t.name for t in own if t.key not in states]
        if failed:
            rows.append((str(unit), "failed", grouped(failed)))
        elif missing:
            rows.append((str(unit), "pending", "to measure: " + ", ".join(missing)))
        else:
            llc = next(t.key for t in own if t.kind == "llc")
            flag = "" if llc not in unconverged else _unconverged_text(*unconverged[llc])
            rows.append((str(unit), "done", flag))
    return rows


def _unconverged_text(r_hat, ess, steps, relaxation) -> str:
    """Why an LLC is not converged: R̂, ESS and, where short of it, the steps four relaxation times need."""
    from mdl_slt.llc.trace import RELAXATIONS

    needed = RELAXATIONS * (relaxation or 0)
    short = f", {steps:,} steps of the {needed:,.0f} that {RELAXATIONS} relaxation times need" if steps < needed else ""
    return f"LLC not converged (R̂ {r_hat:.3f}, ESS {ess:.0f}{short}): flagged in the report"
