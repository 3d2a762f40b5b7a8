"""The batch runner: one unit of work per (model, checkpoint), run in order, resumable.

Each unit loads its checkpoint once and measures base loss, LLC, and per compressor the loss
curve with the critical compression at each ε. Units run in this process, in a pool of worker
processes, or as Ray tasks on a cluster; whichever, their records come back to this process,
the one writer, which stores each task's rows in one transaction. On a rerun, stored tasks
are skipped and a unit with nothing left to do is not even loaded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from mdl_slt import pythia
from mdl_slt.checkpoints import CheckpointRef
from mdl_slt.errors import UserError
from mdl_slt.experiment import Experiment
from mdl_slt.home import hub_cache
from mdl_slt.hubcache import list_revisions
from mdl_slt.store import Record, Store, record_key
from mdl_slt.suite import SuiteSpec, build_suite, is_built


@dataclass(frozen=True)
class Unit:
    ref: CheckpointRef


def unit_status(experiment: Experiment, home: Path, store: Store) -> list[tuple[str, str, str]]:
    """(unit, done | failed | pending, detail) for every unit of the experiment's plan."""
    keys = TaskKeys(experiment)
    failures = store.failures()
    rows = []
    for unit in plan(experiment, home):
        missing = keys.missing(unit.ref, store)
        if not missing:
            rows.append((str(unit.ref), "done", ""))
        elif str(unit.ref) in failures:
            rows.append((str(unit.ref), "failed", failures[str(unit.ref)]))
        else:
            rows.append((str(unit.ref), "pending", "to measure: " + ", ".join(sorted(missing))))
    return rows


@dataclass
class RunSummary:
    units: int = 0
    skipped: int = 0
    measured: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    log: Path | None = None


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


def plan(experiment: Experiment, home: Path) -> list[Unit]:
    """One unit per (model, revision); `all` means every revision in the cache, or, for a suite
    model not built yet, every revision the suite will have."""
    spec = SuiteSpec()
    future = {spec.model_id(m): [f"step{s}" for s in spec.schedule()] for m in spec.models}
    units = []
    for entry in experiment.models:
        revisions = entry.listed_revisions()
        if revisions is None:
            if Path(entry.id).is_dir():
                units.append(Unit(CheckpointRef(entry.id)))
                continue
            revisions = list_revisions(hub_cache(home), entry.id) or future.get(entry.id, [])
            if not revisions:
                raise UserError(f"no revisions of {entry.id} in the local cache: list them under "
                                f"`revisions:` or `steps:` in the experiment file, or build the suite "
                                f"(`mdl-slt suite build`)")
        for revision in revisions:
            pythia.check_revision(entry.id, revision)
        units.extend(Unit(CheckpointRef(entry.id, r)) for r in revisions)
    return units


class TaskKeys:
    """The record keys a unit's tasks complete, from the experiment's settings."""

    def __init__(self, experiment: Experiment):
        self.experiment = experiment
        self.base = experiment.hash_of("data")
        self.llc = experiment.hash_of("data", "llc")
        self.critical = {c.name: experiment.hash_of("data", "critical", extra=c.model_dump(mode="json"))
                         for c in experiment.critical.compressors}

    def base_key(self, ref) -> str:
        return record_key("base_loss", ref.model_id, ref.revision, self.base)

    def llc_key(self, ref) -> str:
        return record_key("llc", ref.model_id, ref.revision, self.llc)

    def critical_key(self, ref, name: str) -> str:
        # the search's rows are written together, so the largest ε stands for all of them
        eps = max(self.experiment.critical.epsilons)
        return record_key("critical", ref.model_id, ref.revision, self.critical[name], name, None, eps)

    def missing(self, ref, store: Store) -> set[str]:
        """The tasks of `ref` not yet in `store`: base_loss, llc, critical:<compressor>."""
        wanted = {"base_loss": self.base_key(ref), "llc": self.llc_key(ref),
                  **{f"critical:{n}": self.critical_key(ref, n) for n in self.critical}}
        return {task for task, key in wanted.items() if not store.has(key)}


def ensure_suite(experiment: Experiment, home: Path, console) -> None:
    """Build the embedded suite first if the experiment names one of its models and it is missing."""
    spec = SuiteSpec()
    suite_ids = {spec.model_id(m) for m in spec.models}
    if any(m.id in suite_ids for m in experiment.models) and not is_built(home, spec):
        console.print("[bold]Building the embedded micro-Pythia suite (once; reused afterwards)…[/]")
        build_suite(home, spec, console=console)


def run_experiment(experiment: Experiment, home: Path, console) -> RunSummary:
    """Measure every unit not yet stored: in this process, or in `experiment.workers` processes.

    Workers return a unit's records; this process alone writes them, one transaction per task.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    import compressors

    start = time.perf_counter()
    for c in experiment.critical.compressors:
        compressors.get(c.name, **c.options)  # refuse a bad name or option before any work
    ensure_suite(experiment, home, console)
    units = plan(experiment, home)
    keys = TaskKeys(experiment)
    summary = RunSummary(units=len(units))
    with Store(experiment.store) as store:
        log, summary.log = run_log(experiment.store)
        store.log_run(experiment.name, experiment.model_dump(mode="json"))
        todo = {u: keys.missing(u.ref, store) for u in units}
        pending = [u for u in units if todo[u]]
        summary.skipped = len(units) - len(pending)
        log.info(f"run {experiment.name}: {len(units)} checkpoints, {len(pending)} to measure, "
                 f"{experiment.workers} worker(s)")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
        with Progress(*columns, console=console) as bars:
            overall = bars.add_task("checkpoints", total=len(units), completed=summary.skipped)
            tasks = bars.add_task("tasks", total=sum(len(t) for t in todo.values()))
            for unit, outcome in _measure_all(pending, experiment, home, todo):
                if isinstance(outcome, Exception):
                    reason = str(outcome) if isinstance(outcome, UserError) else f"{type(outcome).__name__}: {outcome}"
                    reason = " ".join(reason.split())
                    summary.failures.append((str(unit.ref), reason))
                    store.record_failure(str(unit.ref), reason)
                    log.info(f"failed {unit.ref}: {reason}")
                    console.print(f"[red]failed[/] {unit.ref}: {reason}")
                else:
                    for task_records in outcome:
                        store.write(task_records)
                    store.clear_failure(str(unit.ref))
                    log.info(f"done {unit.ref}: {', '.join(sorted(todo[unit]))}")
                    summary.measured += 1
                bars.update(overall, advance=1, description=f"done {unit.ref}")
                bars.update(tasks, advance=len(todo[unit]))
    summary.elapsed_s = time.perf_counter() - start
    log.info(f"finished: {summary.measured} measured, {summary.skipped} already stored, "
             f"{len(summary.failures)} failed, in {summary.elapsed_s:.0f} s")
    return summary


def _measure_all(pending: list[Unit], experiment: Experiment, home: Path, todo: dict):
    """Yield (unit, records-per-task or the exception it raised), as units finish."""
    if experiment.executor == "ray":
        yield from _measure_on_ray(pending, experiment, home, todo)
        return
    if not pending:
        return
    gpus = _local_gpus(experiment)
    workers = gpus if gpus > 1 else experiment.workers
    if workers == 1 or len(pending) == 1:
        for unit in pending:
            try:
                yield unit, measure_unit(unit, experiment, home, todo[unit])
            except Exception as error:  # noqa: BLE001  a failed unit is reported; the others go on
                yield unit, error
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    context = get_context("spawn")
    pinning = {}
    if gpus > 1:  # one worker per GPU, each pinned to its own
        slots = context.Queue()
        for gpu in range(gpus):
            slots.put(gpu)
        pinning = {"initializer": _claim_gpu, "initargs": (slots,)}
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, **pinning) as pool:
        futures = {pool.submit(measure_unit, u, experiment, home, todo[u]): u for u in pending}
        for future in as_completed(futures):
            error = future.exception()
            yield futures[future], error if error is not None else future.result()


def _local_gpus(experiment: Experiment) -> int:
    """CUDA devices the local executor spreads units over: one worker per GPU, one unit each."""
    if experiment.device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count()


def _claim_gpu(slots) -> None:
    """Worker initializer: take one free GPU index and see only that device (before CUDA starts)."""
    import os

    os.environ["CUDA_VISIBLE_DEVICES"] = str(slots.get())


def _measure_on_ray(pending: list[Unit], experiment: Experiment, home: Path, todo: dict):
    """Each unit a Ray task asking for `threads` CPUs and `gpus_per_unit` GPUs; results come back
    here to the one writer. The home (suite, token caches) must be on a filesystem every node sees."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'mdl-slt[ray]'") from None
    if not pending:
        return
    try:
        ray.init(address=experiment.address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, **({} if experiment.address else {"num_cpus": experiment.workers * experiment.threads}))
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserError(f"cannot reach the Ray cluster at {experiment.address}: {' '.join(str(error).split())[:160]} "
                        "— start one with `ray start --head`, or leave out --address") from None
    try:
        task = ray.remote(measure_unit).options(num_cpus=experiment.threads, num_gpus=experiment.gpus_per_unit,
                                                max_retries=0)
        running = {task.remote(u, experiment, home, todo[u]): u for u in pending}
        while running:
            (ready,), _ = ray.wait(list(running), num_returns=1)
            unit = running.pop(ready)
            try:
                yield unit, ray.get(ready)
            except ray.exceptions.RayTaskError as error:  # the task raised: report its own exception
                yield unit, error.cause if error.cause is not None else error
            except ray.exceptions.RayError as error:  # the worker died
                yield unit, error
    finally:
        ray.shutdown()


def measure_unit(unit: Unit, experiment: Experiment, home: Path, todo: set[str]) -> list[list[Record]]:
    """Measure the tasks in `todo` for one checkpoint; returns one list of records per task."""
    import compressors

    from mdl_slt.checkpoints import load_checkpoint
    from mdl_slt.data import token_sets
    from mdl_slt.device import resolve_device
    from mdl_slt.lm_loss import evaluate_loss
    from mdl_slt.measure import measure_critical, measure_llc
    from mdl_slt.threads import set_threads

    set_threads(experiment.threads)
    keys = TaskKeys(experiment)
    ckpt = load_checkpoint(unit.ref, home, resolve_device(experiment.device))
    tokens = token_sets(home, ckpt.tokenizer, experiment.data)
    common = dict(model=unit.ref.model_id, revision=unit.ref.revision, step=ckpt.step,
                  num_params=ckpt.num_params, tokens_seen=ckpt.tokens_seen, experiment=experiment.name)
    done = []
    t0 = time.perf_counter()
    base_loss = evaluate_loss(ckpt.model, tokens.eval)
    if "base_loss" in todo:
        done.append([Record("base_loss", config_hash=keys.base, loss=base_loss, base_loss=base_loss,
                            elapsed_s=time.perf_counter() - t0, **common)])
    if "llc" in todo:
        result = measure_llc(ckpt, tokens, experiment.llc)
        detail = {key: value for key, value in result.to_dict().items()
                  if key not in ("llc_mean", "llc_std_error", "init_loss", "config", "elapsed_s")}
        detail["step_size"] = result.config["step_size"]  # resolved, where the config says auto
        done.append([Record("llc", config_hash=keys.llc, loss=result.init_loss, base_loss=base_loss,
                            llc_mean=result.llc_mean, llc_std_error=result.llc_std_error, detail=detail,
                            elapsed_s=result.elapsed_s, seed=experiment.llc.seed, **common)])
    for entry in experiment.critical.compressors:
        if f"critical:{entry.name}" in todo:
            compressor = compressors.get(entry.name, **entry.options)
            found = measure_critical(ckpt, tokens, compressor, base_loss, experiment.critical)
            done.append(critical_records(found, keys.critical[entry.name], base_loss, common))
    return done


def critical_records(found, config_hash: str, base_loss: float, common: dict) -> list[Record]:
    """The loss curve (one row per evaluated knob value) and one row per ε with its critical value."""
    rows = [Record("loss_curve", config_hash=config_hash, compressor=found.compressor, knob=p.knob,
                   loss=p.loss, base_loss=base_loss, bits=p.bits, bits_entropy=p.bits_entropy, **common)
            for p in found.curve]
    for point in found.search.points:
        at = found.bits_at(point.value) if point.value is not None else None
        rows.append(Record(
            "critical", config_hash=config_hash, compressor=found.compressor, epsilon=point.epsilon,
            knob=point.value, loss=point.loss, base_loss=base_loss,
            bits=at.bits if at else None, bits_entropy=at.bits_entropy if at else None,
            elapsed_s=found.elapsed_s,
            detail={"knob_name": found.knob_name, "beyond": point.beyond, "monotone": point.monotone,
                    "evaluations": found.search.num_evaluations, "precision": found.search.precision,
                    "uncompressed_bits": found.uncompressed_bits},
            **common))
    return rows
