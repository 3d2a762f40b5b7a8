"""Executors: where units run. Whichever, task outcomes come back to this process, the one writer.

- in this process, one unit after another (`workers: 1`);
- a pool of worker processes (`workers: N`, or one per GPU on a machine with several);
- Ray tasks on a cluster (`executor: ray`), each unit asking for `threads` CPUs and
  `gpus_per_unit` GPUs.
Units are taken from a source as workers free up (`claims.Claims`, which shares a store's work
with other processes). Workers send each task's outcome the moment it is done
(through a queue), so a unit that dies half-way still leaves its finished tasks in the store. A
worker that dies outright fails the tasks it had not reported, with the reason.
"""

from __future__ import annotations

import queue as queues
import time
from pathlib import Path
from typing import Iterator

from mdl_slt.errors import UserError, one_line
from mdl_slt.plan.experiment import Experiment
from mdl_slt.plan.tasks import Task
from mdl_slt.plan.units import Unit
from mdl_slt.run.measure import Outcome, measure_unit, reason
from mdl_slt.store.claims import WAIT

POLL_S = 0.2
LATE_S = 60.0  # how long outcomes may trail their worker's return (a queue under load) before they count as lost
_OUTCOMES = None  # the worker's queue back to the writer, set by `_worker_init`


def execute(source, experiment: Experiment, home: Path) -> Iterator[Outcome]:
    """Run the units `source` hands out; yield each task's outcome as it arrives.

    `source.next()` gives (unit, tasks) to run now, `claims.WAIT` while the units left are held by
    other processes, or None when nothing is left; `len(source)`: the units it may still hand out
    (`claims.Claims`)."""
    if experiment.executor == "ray":
        yield from _on_ray(source, experiment, home)
        return
    gpus = _local_gpus(experiment)
    workers = gpus if gpus > 1 else experiment.workers
    if workers == 1 or len(source) <= 1:
        while (item := source.next()) is not None:
            if item == WAIT:
                time.sleep(POLL_S * 5)
                continue
            unit, tasks = item
            yield from measure_unit(unit, experiment, home, tasks)
        return
    yield from _in_pool(source, experiment, home, min(workers, len(source)), gpus)


def _local_gpus(experiment: Experiment) -> int:
    """CUDA devices the local executor spreads units over: one worker per GPU, one unit each."""
    if experiment.device != "cuda":
        return 0
    import torch

    return torch.cuda.device_count()


def _worker_init(outcomes, gpu_slots) -> None:
    """Pool worker start: remember the queue back to the writer; with several GPUs, take one free
    GPU index and see only that device (before CUDA starts)."""
    global _OUTCOMES
    _OUTCOMES = outcomes
    if gpu_slots is not None:
        import os

        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_slots.get())


def _send_outcomes(unit: Unit, experiment: Experiment, home: Path, tasks: list[Task], outcomes=None) -> int:
    """Worker side: measure one unit, sending each outcome back as soon as it is done."""
    sink = outcomes if outcomes is not None else _OUTCOMES
    count = 0
    for outcome in measure_unit(unit, experiment, home, tasks):
        sink.put(outcome)
        count += 1
    return count


def _collect(source, submit, get, finished, slots: int) -> Iterator[Outcome]:
    """Writer side: keep up to `slots` units running, taken from `source` as slots free, and yield
    their outcomes until the source is empty and every running unit has reported every task.

    `submit(unit, tasks)` starts a unit and returns its handle; `get(timeout)` returns the next
    outcome or None; `finished(handles)` → [(handle, error or None)] for units whose worker has
    returned. A unit whose worker failed has its unreported tasks failed with that error; a unit
    whose worker returned is read until its last outcome arrives (they may trail the return).
    """
    running, waiting, returned, exhausted = {}, {}, {}, False
    while True:
        while not exhausted and len(running) < slots:
            item = source.next()
            if item is None:
                exhausted = True
            if item is None or item == WAIT:
                break
            unit, tasks = item
            running[submit(unit, tasks)] = (unit, tasks)
            waiting[str(unit)] = {t.key: t for t in tasks}
        if exhausted and not running and not any(waiting.values()):
            return
        outcome = get(POLL_S)
        if outcome is not None:
            waiting[outcome.unit].pop(outcome.task.key, None)
            yield outcome
            continue
        for handle, error in finished(list(running)):
            unit = str(running.pop(handle)[0])
            if error is not None:  # nothing more will come from a dead worker
                for task in waiting[unit].values():
                    yield Outcome(unit, task, error=error)
                waiting[unit] = {}
            else:  # it sent an outcome per task: those not read yet are still on their way
                returned[unit] = time.monotonic()
        for unit, at in list(returned.items()):
            if waiting[unit] and time.monotonic() - at > LATE_S:
                for task in waiting[unit].values():
                    yield Outcome(unit, task, error=f"its outcome never arrived, {LATE_S:.0f} s after its worker returned")
                waiting[unit] = {}
            if not waiting[unit]:
                del returned[unit]


def _in_pool(source, experiment: Experiment, home: Path, workers: int, gpus: int) -> Iterator[Outcome]:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    context = get_context("spawn")
    outcomes = context.Queue()
    slots = None
    if gpus > 1:  # one worker per GPU, each pinned to its own
        slots = context.Queue()
        for gpu in range(gpus):
            slots.put(gpu)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init,
                             initargs=(outcomes, slots)) as pool:

        def submit(unit, tasks):
            return pool.submit(_send_outcomes, unit, experiment, home, tasks)

        def finished(futures):
            done = []
            for future in futures:
                if future.done():
                    error = future.exception()
                    done.append((future, None if error is None else f"the worker process died ({reason(error)})"))
            return done

        def get(timeout):
            try:
                return outcomes.get(timeout=timeout)
            except queues.Empty:
                return None

        yield from _collect(source, submit, get, finished, workers)


def _on_ray(source, experiment: Experiment, home: Path) -> Iterator[Outcome]:
    """Each unit a Ray task, as many running as the cluster has room for (its CPUs over `threads`);
    outcomes come back through a Ray queue to this process. The home (suite, token caches) must
    be on a filesystem every node sees."""
    try:
        import ray
        from ray.util.queue import Empty, Queue
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'mdl-slt[ray]'") from None
    try:
        ray.init(address=experiment.address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, **({} if experiment.address else {"num_cpus": experiment.workers * experiment.threads}))
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserError(f"cannot reach the Ray cluster at {experiment.address}: {one_line(error)} "
                        "— start one with `ray start --head`, or leave out --address") from None
    try:
        outcomes = Queue()
        task = ray.remote(_send_outcomes).options(num_cpus=experiment.threads, num_gpus=experiment.gpus_per_unit,
                                                  max_retries=0)
        room = max(1, int(ray.cluster_resources().get("CPU", 1) // experiment.threads))

        def submit(unit, tasks):
            return task.remote(unit, experiment, home, tasks, outcomes)

        def finished(refs):
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            done = []
            for ref in ready:
                try:
                    ray.get(ref)
                    done.append((ref, None))
                except ray.exceptions.RayError as error:  # the worker died or the task raised outside a task
                    cause = getattr(error, "cause", None) or error
                    done.append((ref, f"the Ray worker failed ({reason(cause)})"))
            return done

        def get(timeout):
            try:
                return outcomes.get(timeout=timeout)
            except Empty:
                return None

        yield from _collect(source, submit, get, finished, room)
    finally:
        ray.shutdown()
