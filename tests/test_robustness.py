"""The robustness certificate: λ̂ measured again at varied sampler settings as tasks of their own,
every main fit redone with it, on the report's pages; and `mdl-slt llc --robustness`."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from mdl_slt.analysis.robustness import per_fit, summary
from mdl_slt.errors import UserError
from mdl_slt.llc.config import LLCConfig
from mdl_slt.plan.experiment import RobustnessConfig, vary
from mdl_slt.store.database import open_existing
from tests.conftest import run_cli
from tests.test_runner_report import EXPERIMENT


def test_a_setting_is_multiplied_one_at_a_time_and_the_minibatch_stays_whole():
    config = LLCConfig(step_size=1e-4, n_beta=30, localization=100, batch_size=8)
    assert vary(config, "step_size", 3).step_size == pytest.approx(3e-4) and vary(config, "step_size", 3).n_beta == 30
    assert vary(config, "batch_size", 0.33).batch_size == 3 and vary(config, "batch_size", 0.01).batch_size == 1
    with pytest.raises(UserError, match="cannot vary step_size = 'auto'"):
        vary(LLCConfig(step_size="auto"), "step_size", 3)
    with pytest.raises(ValueError, match="not 1"):
        RobustnessConfig(step_size=[1.0])
    assert RobustnessConfig(n_beta=[3, 0.33], batch_size=[4]).variations() == [("n_beta", 0.33), ("n_beta", 3.0),
                                                                                 ("batch_size", 4.0)]


def test_a_refit_keeps_or_changes_the_answer_as_the_varied_llc_says():
    rng = np.random.default_rng(0)
    llc = np.linspace(20, 40, 8)
    group = pd.DataFrame({"model": "m", "revision": [f"step{i}" for i in range(8)], "llc_mean": llc,
                          "base_loss": 5 - 0.01 * llc + rng.normal(0, 0.05, 8),
                          "critical_value": 0.1 * llc + rng.normal(0, 0.05, 8)})
    lines = {("m", "rtn", 0.05): (None, group)}
    measured = pd.concat([
        pd.DataFrame({"setting": "step_size×3", "model": "m", "revision": group.revision, "varied_llc": 1.1 * llc,
                      "converged": True, "diverged": 0}),
        pd.DataFrame({"setting": "n_beta×0.33", "model": "m", "revision": group.revision,
                      "varied_llc": rng.permutation(llc), "converged": [True] * 7 + [False], "diverged": [0] * 7 + [2]})])
    fits = per_fit(measured, lines).set_index("setting")
    kept, lost = fits.loc["step_size×3"], fits.loc["n_beta×0.33"]
    assert kept.tau == pytest.approx(1.0) and kept.slope == pytest.approx(kept.slope_main / 1.1) and kept.slope_kept
    assert lost.tau < 0.6 and not lost.slope_kept
    table = group.assign(compressor="rtn", epsilon=0.05)
    failed = pd.DataFrame({"setting": ["localization×0.33"] * 2, "unit": ["m@step0", "m@step1"],
                           "reason": "all 4 chains diverged"})
    found = summary(measured, table, per_fit(measured, lines), failed).set_index("setting")
    assert found.loc["step_size×3"].held and not found.loc["n_beta×0.33"].held
    assert found.loc["n_beta×0.33"].n_diverged_chains == 2 and found.loc["n_beta×0.33"].n_unconverged == 1
    lost = found.loc["localization×0.33"]  # every chain diverged everywhere: nothing measured, not held
    assert lost.n_failed == 2 and lost.n_checkpoints == 0 and not lost.held


def test_varied_settings_are_tasks_of_their_own_and_reach_the_report(tiny_suite, tmp_path):
    home, _ = tiny_suite
    path = tmp_path / "tiny.yaml"
    text = EXPERIMENT.format(store=tmp_path / "tiny.sqlite", report=tmp_path / "tiny.pdf")
    path.write_text(text.replace("  - id: mdl-slt/tiny-a\n", "") + "robustness: {step_size: [3]}\n")
    first = run_cli("run", path, home=home)
    assert first.returncode == 0, first.stderr
    with open_existing(tmp_path / "tiny.sqlite") as store:
        table = store.table()
    main = table[table.task == "llc"].set_index("revision").llc_mean
    varied = table[table.task == "llc_robust"]
    assert len(varied) == 3 and set(varied.task_key).isdisjoint(table[table.task == "llc"].task_key)
    assert varied.detail.map(lambda d: d["variation"]).tolist() == [{"parameter": "step_size", "multiplier": 3.0}] * 3
    assert varied.detail.map(lambda d: d["config"]["step_size"]).tolist() == pytest.approx([3e-4] * 3)
    path.write_text(path.read_text().replace("robustness: {step_size: [3]}", "robustness: {step_size: [3], n_beta: [0.5]}"))
    again = run_cli("run", path, home=home)  # one setting added: only its λ̂ are measured, the main λ̂ are kept
    assert again.returncode == 0, again.stderr
    with open_existing(tmp_path / "tiny.sqlite") as store:
        after = store.table()
    assert (after.task == "llc_robust").sum() == 6 and after[after.task == "llc"].set_index("revision").llc_mean.equals(main)
    report = pd.read_csv(tmp_path / "tiny-robustness.csv")
    assert sorted(report.setting) == ["n_beta×0.5", "step_size×3"] and (report.n_checkpoints == 3).all()
    text = subprocess.run(["pdftotext", str(tmp_path / "tiny.pdf"), "-"], capture_output=True, text=True).stdout
    assert "Robustness to the sampler: λ̂ measured again at 2 other settings" in text
    assert "Robustness: the answer under other sampler settings" in text


def test_one_shot_robustness_prints_each_setting_beside_the_main(tiny_suite, tmp_path):
    home, _ = tiny_suite
    path = tmp_path / "one.yaml"
    path.write_text("name: one\nstore: one.sqlite\nmodels: [{id: mdl-slt/tiny-a}]\n"
                    "data: {context_length: 32, eval_sequences: 16, llc_sequences: 64}\n"
                    "llc: {step_size: 1.0e-4, num_chains: 2, num_draws: 20, num_burnin: 5, batch_size: 8}\n"
                    "robustness: {step_size: [3], batch_size: [2]}\n")
    done = run_cli("llc", "mdl-slt/tiny-a@step24", "--robustness", "--json", "--experiment", path, home=home)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [r["setting"] for r in out["robustness"]] == ["step_size×3", "batch_size×2"]
    # each setting's λ̂ is the λ̂ measured at that setting on its own (same seed): the setting was applied
    for row, flag in zip(out["robustness"], (["--step-size", repr(1.0e-4 * 3)], ["--batch-size", "16"])):
        alone = run_cli("llc", "mdl-slt/tiny-a@step24", "--json", "--experiment", path, *flag, home=home)
        assert alone.returncode == 0, alone.stderr
        assert row["llc_mean"] == json.loads(alone.stdout)["llc_mean"] != out["llc_mean"]
        assert row["ratio"] == pytest.approx(row["llc_mean"] / out["llc_mean"]) and row["llc_std_error"] > 0
    text = run_cli("llc", "mdl-slt/tiny-a@step24", "--robustness", "--experiment", path, home=home)
    assert text.returncode == 0 and "step_size×3" in text.stdout and "× the main λ̂" in text.stdout
