"""Checks of the science on the embedded suite (in the cache home; the runs they need are trained
once, under the suite's lock, by whichever test comes first): the training variants part λ̂ from the
held-out loss by the criterion they were chosen by (docs/science.md, "Training variants"; 24 LLCs),
and λ̂'s stated standard errors match its spread across sampler seeds (20 LLCs)."""

import sys
from pathlib import Path

import pytest
import yaml

from mdl_slt.analysis.parting import checkpoints, criterion
from mdl_slt.store.database import open_existing
from tests.conftest import run_cli

pytestmark = pytest.mark.science  # left out of the quick tier
ROOT = Path(__file__).parent.parent
REFERENCE = "mdl-slt/micro-pythia-90k"
TAKEN = ["mdl-slt/micro-pythia-90k-lr6e-3", "mdl-slt/micro-pythia-90k-b64", "mdl-slt/micro-pythia-90k-seed1"]


def build_runs() -> None:
    """The four runs both tests need, trained by whichever test comes first, two at a time (the
    other waits on the suite's lock), so that no core idles while one run trains alone."""
    from mdl_slt.home.paths import resolve_home
    from mdl_slt.models.spec import SuiteSpec
    from mdl_slt.models.suite import build_suite

    build_suite(resolve_home(None), SuiteSpec(), SuiteSpec().find([REFERENCE, *TAKEN]))


def test_the_variants_in_the_main_job_part_llc_from_the_loss(tmp_path):
    design = yaml.safe_load((ROOT / "experiments" / "variants.yaml").read_text())
    assert design["models"][0]["id"] == REFERENCE
    design["models"] = [m for m in design["models"] if m["id"] in [REFERENCE, *TAKEN]]
    design["store"] = str(tmp_path / "variants.sqlite")
    path = tmp_path / "variants.yaml"
    path.write_text(yaml.safe_dump(design))
    build_runs()
    done = run_cli("run", path, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    with open_existing(tmp_path / "variants.sqlite") as store:
        runs, pool = criterion(checkpoints(store.table()), REFERENCE)
    assert set(runs.run[runs.chosen]) == set(TAKEN), runs.to_string()
    assert pool["meets"] and abs(pool["r"]) <= 0.8
    main_job = {m["id"] for m in yaml.safe_load((ROOT / "experiments" / "demo.yaml").read_text())["models"]}
    assert {REFERENCE, *TAKEN} <= main_job


def test_llc_standard_errors_are_honest_across_seeds_on_a_language_model():
    """20 sampler seeds on one suite checkpoint at the main job's settings: the spread of λ̂ across
    seeds is within 0.7–1.5 of the stated standard error (bench/llc_seeds.py; 271 s beside the
    variants test with the suite built, 2026-12-03), and the divergence check flags none of the 80
    chains (a false alarm would drop a sound chain)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from llc_seeds import seed_spread

    build_runs()
    figures = seed_spread(f"{REFERENCE}@step1000", 20)
    assert all(e.r_hat <= 1.05 for e in figures["estimates"])
    assert [(e.seed, e.flagged) for e in figures["estimates"] if e.flagged] == []
    assert 0.7 <= figures["ratio"] <= 1.5, figures
