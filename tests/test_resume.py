"""A store that never loses or mixes a result: per-task durability, failures recorded, status,
compressor entries with ids, keys that cover only what a task depends on, resume after SIGKILL."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from mdl_slt.analysis.frames import results
from tests.conftest import TINY, run_cli

EXPERIMENT = """
name: resume
store: {store}
models:
  - id: mdl-slt/tiny-a
    revisions: {revisions}
data: {{context_length: 32, eval_sequences: 16, llc_sequences: 64}}
llc: {{step_size: {step_size}, num_chains: 2, num_draws: 40, num_burnin: 10, batch_size: 8}}
critical: {{compressors: [{{name: rtn, precision: 0.1}}], epsilons: [0.05, 0.2]}}
"""


def write(tmp_path, name, revisions, step_size="1.0e-4"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(EXPERIMENT.format(store=tmp_path / f"{name}.sqlite", revisions=revisions, step_size=step_size))
    return path


def records(store):
    """key → measured values; {} while the store or its table does not exist yet."""
    try:
        with sqlite3.connect(store) as db:
            rows = db.execute("SELECT key, loss, knob, bits, llc_mean FROM records ORDER BY key").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {row[0]: row[1:] for row in rows}


def test_failed_unit_is_recorded_and_the_others_go_on(tiny_suite, tmp_path):
    home, _ = tiny_suite
    path = write(tmp_path, "partial", "[step8, step999, step24]")
    done = run_cli("run", path, home=home)
    assert done.returncode == 1, done.stderr
    assert "2 measured, 0 already stored, 1 failed" in " ".join(done.stderr.split())
    status = run_cli("status", tmp_path / "partial.sqlite", home=home)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert any(line.startswith("failed") and "step999" in line and "mdl-slt/tiny-a has no revision step999: the suite holds "
               "step0, step1, step2, step4, step8, step16, step24" in line for line in lines)
    assert lines[-1] == "resume: 2 done, 1 failed, 0 pending of 3"
    keys = records(tmp_path / "partial.sqlite")
    assert keys and not any("step999" in k for k in keys)  # nothing half-written for the failed unit
    log = (tmp_path / "partial.log").read_text()
    assert "failed mdl-slt/tiny-a@step999 base_loss: mdl-slt/tiny-a has no revision step999" in log
    assert "done mdl-slt/tiny-a@step24 critical:rtn" in log
    # the run's output is a log, not a terminal: one plain line per finished checkpoint, with counts and an ETA
    progress = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 3 and progress[0].startswith("[1/3 checkpoints] done mdl-slt/tiny-a@step") and "eta" in progress[0]


def test_validate_prints_the_plan_without_running(tiny_suite, tmp_path):
    home, _ = tiny_suite
    path = write(tmp_path, "plan", "all")
    done = run_cli("validate", path, home=home)
    assert done.returncode == 0, done.stderr
    assert f"{len(TINY.schedule())} checkpoints" in done.stdout
    assert "SGLD steps" in done.stdout and "critical:rtn" in done.stdout
    assert "(2 chains × 50 steps per checkpoint)" in done.stdout
    assert not (tmp_path / "plan.sqlite").exists()
    overridden = run_cli("validate", path, "--set", "llc.num_chains=3", "--set", "models.0.revisions=[step8]", home=home)
    assert "1 checkpoints" in overridden.stdout and "(3 chains × 50 steps per checkpoint)" in overridden.stdout


def test_sigkill_then_rerun_gives_exactly_the_uninterrupted_records(tiny_suite, tmp_path):
    """The rerun takes the killed run's checkpoint over at once: its holder died on this machine, so
    the hour-long lease is not waited out."""
    home, _ = tiny_suite
    revisions = "[step1, step4, step8, step24]"
    whole = write(tmp_path, "whole", revisions)
    assert run_cli("run", whole, home=home).returncode == 0
    expected = records(tmp_path / "whole.sqlite")

    killed = write(tmp_path, "killed", revisions)
    killed.write_text(killed.read_text().replace("name: resume", "name: resume\nlease_s: 3600"))
    store = tmp_path / "killed.sqlite"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MDL_SLT_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "mdl_slt.cli", "run", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if store.exists() and 0 < len(records(store)) < len(expected):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = records(store)
    assert 0 < len(partial) < len(expected)
    assert all(partial[k] == expected[k] for k in partial)  # what was stored is whole and right

    again = run_cli("run", killed, home=home)
    assert again.returncode == 0, again.stderr
    assert records(store) == expected  # none lost, none duplicated, identical values


DRIVER_LOADS_NO_MODEL = """
import sys
import transformers

def refuse(*args, **kwargs):
    raise AssertionError("the driver process loaded a model")

transformers.AutoModelForCausalLM.from_pretrained = refuse  # Ray's workers are other processes
sys.argv[0] = "mdl-slt"
from mdl_slt.cli import main
main()
"""


def test_ray_executor_gives_the_records_of_the_local_one(tiny_suite, tmp_path):
    """A real local Ray cluster (`ray start --head`), joined by address, measures what the local executor
    does, the step-size choice included, with a driver that cannot load a model."""
    import socket
    import sysconfig

    home, _ = tiny_suite
    local = write(tmp_path, "local", "[step1, step24]", "auto")
    assert run_cli("run", local, home=home).returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray = [str(Path(sysconfig.get_path("scripts")) / "ray")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run([*ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                              "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        remote = write(tmp_path, "remote", "[step1, step24]", "auto")
        done = subprocess.run([sys.executable, "-c", DRIVER_LOADS_NO_MODEL, "run", str(remote), "--executor", "ray",
                               "--address", f"127.0.0.1:{port}"], capture_output=True, text=True,
                              env={**env, "MDL_SLT_HOME": str(home)}, timeout=300)
        assert done.returncode == 0, done.stderr
    finally:
        subprocess.run([*ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
    expected = records(tmp_path / "local.sqlite")
    assert len(expected) > 10 and records(tmp_path / "remote.sqlite") == expected
    assert sum(key.startswith("step_size|mdl-slt/tiny-a|") for key in expected) == 1  # chosen once, as a task


def test_outcomes_that_trail_their_workers_return_are_read_and_a_dead_workers_are_failed(monkeypatch):
    """A queue under load can deliver a unit's outcomes after its worker has returned: they are
    still read; a worker that died fails what it had not reported; outcomes that never come, once late."""
    from types import SimpleNamespace

    from mdl_slt.run import executors
    from mdl_slt.run.measure import Outcome

    tasks = {unit: [SimpleNamespace(key=f"{unit}/{i}") for i in range(2)] for unit in ("trails", "dies", "loses")}
    source = SimpleNamespace(next=lambda: handed.pop(0) if handed else None)
    handed = list(tasks.items())
    queue, polls = [], []

    def submit(unit, unit_tasks):  # the worker runs at once; `dies` reports one task, `loses` none
        if unit == "dies":
            queue.insert(0, (0, Outcome(unit, unit_tasks[0])))  # readable at the first poll
        if unit == "trails":
            queue.extend((3, Outcome(unit, t)) for t in unit_tasks)  # readable only after 3 polls
        return unit

    def get(timeout):
        polls.append(1)
        if queue and len(polls) > queue[0][0]:
            return queue.pop(0)[1]
        return None

    def finished(handles):  # every worker has returned by the first check; `dies` with an error
        return [(h, "the worker process died (killed)" if h == "dies" else None) for h in handles]

    monkeypatch.setattr(executors, "LATE_S", 0.5)
    outcomes = list(executors._collect(source, submit, get, finished, slots=3))
    by_key = {o.task.key: o.error for o in outcomes}
    assert len(outcomes) == 6 and by_key["trails/0"] is None and by_key["trails/1"] is None
    assert by_key["dies/0"] is None and by_key["dies/1"] == "the worker process died (killed)"
    assert all("never arrived" in by_key[f"loses/{i}"] for i in range(2))


def test_unloadable_checkpoints_are_failures_with_their_reason(tiny_suite, tmp_path):
    """A corrupt checkpoint directory and a hub model while offline fail alone, in one line each."""
    import shutil

    home, _ = tiny_suite
    repo = home / "hub" / "models--mdl-slt--tiny-a"
    snapshot = repo / "snapshots" / (repo / "refs" / "step24").read_text().strip()
    corrupt = tmp_path / "corrupt-checkpoint"
    shutil.copytree(snapshot, corrupt, symlinks=False)
    (corrupt / "model.safetensors").write_bytes((corrupt / "model.safetensors").read_bytes()[:1000])
    path = tmp_path / "broken.yaml"
    more = f"  - id: {corrupt}\n  - id: EleutherAI/pythia-14m\n    revisions: [step1000]\ndata:"
    path.write_text(EXPERIMENT.format(step_size="1.0e-4", store=tmp_path / "broken.sqlite", revisions="[step24]")
                    .replace("data:", more))
    done = run_cli("run", path, home=home)
    assert done.returncode == 1, done.stderr
    failed = {line.split()[1]: line for line in run_cli("status", tmp_path / "broken.sqlite", home=home).stdout.splitlines()
              if line.startswith("failed")}
    assert "is corrupt or incomplete (SafetensorError" in failed[str(corrupt)]
    assert "hub is unreachable (offline)" in failed["EleutherAI/pythia-14m@step1000"]
    keys = records(tmp_path / "broken.sqlite")
    assert keys and all("mdl-slt/tiny-a|step24" in k for k in keys)  # nothing of the failed units


def rows_of(store):
    """key → (created_at, values) of every row."""
    with sqlite3.connect(store) as db:
        return {r[0]: r[1:] for r in db.execute("SELECT key, created_at, loss, knob, bits, llc_mean FROM records")}


def test_adding_a_compressor_measures_only_it(tiny_suite, tmp_path):
    home, _ = tiny_suite
    path = write(tmp_path, "grow", "[step8, step24]")
    assert run_cli("run", path, home=home).returncode == 0
    before = rows_of(tmp_path / "grow.sqlite")
    path.write_text(path.read_text().replace("compressors: [{name: rtn, precision: 0.1}]",
                                             "compressors: [{name: rtn, precision: 0.1}, {name: svd}]"))
    time.sleep(1.1)  # timestamps have one-second resolution
    done = run_cli("run", path, home=home)
    assert done.returncode == 0, done.stderr
    after = rows_of(tmp_path / "grow.sqlite")
    assert {k: v for k, v in after.items() if k in before} == before  # rtn, LLC, base loss: same rows, same times
    added = {k for k in after if k not in before}
    assert added and all(k.startswith("critical:svd|") for k in added)
    log = (tmp_path / "grow.log").read_text().split("run resume")[-1]  # the second run's lines
    assert "critical:svd" in log and "critical:rtn" not in log and " llc" not in log


def test_two_entries_of_one_compressor_keep_their_own_rows_and_lines(tiny_suite, tmp_path):
    home, _ = tiny_suite
    path = write(tmp_path, "twins", "[step4, step8, step16, step24]")
    text = path.read_text()
    path.write_text(text.replace("compressors: [{name: rtn, precision: 0.1}]",
                                 "compressors: [{name: rtn}, {name: rtn, options: {granularity: channel}}]"))
    for command in ("validate", "run"):
        refused = run_cli(command, path, home=home)
        assert refused.returncode == 2 and "compressor ids must be unique, but 'rtn' appears more than once" in refused.stderr
    path.write_text(text.replace("compressors: [{name: rtn, precision: 0.1}]",
                                 "compressors: [{name: rtn}, {id: rtn-channel, name: rtn, options: {granularity: channel}}]")
                    .replace("name: resume", "name: twins\nreport: " + str(tmp_path / "twins.pdf")))
    assert "critical:rtn, critical:rtn-channel" in run_cli("validate", path, home=home).stdout
    done = run_cli("run", path, home=home)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "twins.sqlite") as db:
        counts = dict(db.execute("SELECT compressor, COUNT(*) FROM records WHERE task = 'critical' GROUP BY compressor"))
        hashes = dict(db.execute("SELECT DISTINCT compressor, config_hash FROM records WHERE task = 'critical'"))
    assert counts == {"rtn": 4 * 2, "rtn-channel": 4 * 2} and hashes["rtn"] != hashes["rtn-channel"]
    import pandas as pd

    fits = pd.read_csv(tmp_path / "twins-fits.csv")
    assert sorted(set(fits.compressor)) == ["rtn", "rtn-channel"] and set(fits.method) == {"rtn"}


def test_a_task_that_raises_fails_alone_and_a_rerun_measures_only_it(tiny_suite, tmp_path, monkeypatch):
    """Per-task durability, in process: a compressor raising inside `apply` leaves each checkpoint's
    base loss, LLC and other compressors stored; the rerun measures only the failed task."""
    from rich.console import Console

    import compressors.prune
    from mdl_slt.plan.experiment import load_experiment
    from mdl_slt.run.runner import run_experiment

    home, _ = tiny_suite
    path = write(tmp_path, "raises", "[step8, step24]")
    path.write_text(path.read_text().replace("compressors: [{name: rtn, precision: 0.1}]",
                                             "compressors: [{name: rtn, precision: 0.1}, {name: magnitude}]"))
    experiment = load_experiment(path)
    original = compressors.prune.Magnitude.apply

    def boom(self, *args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(compressors.prune.Magnitude, "apply", boom)
    first = run_experiment(experiment, home, Console(file=open(os.devnull, "w")))
    assert sorted(first.failures) == [(f"mdl-slt/tiny-a@{r}", "critical:magnitude",
                                       "RuntimeError: out of memory (simulated)") for r in ("step24", "step8")]
    kept = rows_of(tmp_path / "raises.sqlite")
    assert {k.split("|")[0] for k in kept} == {"base_loss", "llc", "critical:rtn"}
    status = run_cli("status", tmp_path / "raises.sqlite", home=home).stdout
    assert "critical:magnitude: RuntimeError: out of memory (simulated)" in status
    monkeypatch.setattr(compressors.prune.Magnitude, "apply", original)
    second = run_experiment(experiment, home, Console(file=open(os.devnull, "w")))
    assert second.failures == [] and second.tasks_done == 2 and second.measured == 2
    after = rows_of(tmp_path / "raises.sqlite")
    assert {k: v for k, v in after.items() if k in kept} == kept
    assert {k.split("|")[0] for k in after if k not in kept} == {"critical:magnitude"}


def test_a_run_over_local_model_directories_writes_its_report(tiny_suite, tmp_path):
    import shutil

    home, _ = tiny_suite
    repo = home / "hub" / "models--mdl-slt--tiny-b"
    dirs = []
    for step in (4, 8, 16, 24):
        snapshot = repo / "snapshots" / (repo / "refs" / f"step{step}").read_text().strip()
        dirs.append(tmp_path / f"ckpt-{step}")
        shutil.copytree(snapshot, dirs[-1])
    path = tmp_path / "local.yaml"
    models = "\n".join(f"  - id: {d}" for d in dirs)
    path.write_text(EXPERIMENT.format(step_size="1.0e-4", store=tmp_path / "local.sqlite", revisions="[x]")
                    .replace("  - id: mdl-slt/tiny-a\n    revisions: [x]", models)
                    .replace("name: resume", f"name: local\nreport: {tmp_path}/local.pdf"))
    done = run_cli("run", path, home=home)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "local.pdf").read_bytes().startswith(b"%PDF") and "report" in done.stderr
    # the same bytes under the suite's names measure the same: a directory is a checkpoint like any other
    named = tmp_path / "named.yaml"
    named.write_text(EXPERIMENT.format(step_size="1.0e-4", store=tmp_path / "named.sqlite",
                                       revisions="[step4, step8, step16, step24]").replace("tiny-a", "tiny-b"))
    assert run_cli("run", named, home=home).returncode == 0
    columns = ["step", "epsilon", "base_loss", "llc_mean", "llc_std_error", "critical_value", "critical_dl_bits"]
    local = results(tmp_path / "local.sqlite")
    assert sorted(local.model.unique()) == sorted(str(d) for d in dirs) and sorted(local.step.unique()) == [4, 8, 16, 24]
    assert local[columns].notna().all().all() and len(local) == 8  # 4 checkpoints × 2 ε
    by_name = results(tmp_path / "named.sqlite")
    pd.testing.assert_frame_equal(local.sort_values(["step", "epsilon"])[columns].reset_index(drop=True),
                                  by_name.sort_values(["step", "epsilon"])[columns].reset_index(drop=True))
    text = subprocess.run(["pdftotext", str(tmp_path / "local.pdf"), "-"], capture_output=True, text=True).stdout
    assert all(d.name in text for d in dirs)  # each directory is named in the report


def test_a_checkpoint_rebuilt_with_other_bytes_is_measured_again(tiny_suite, tmp_path):
    """Keys follow the bytes: a revision whose snapshot changed (a suite rebuilt, a hub `main` that
    moved) is measured again on the rerun, its old rows kept apart and never fitted."""
    import shutil
    import tempfile

    import torch

    from mdl_slt.home.hub import write_snapshot
    from mdl_slt.models.checkpoints import load_checkpoint

    home = tmp_path / "home"
    shutil.copytree(tiny_suite[0], home, symlinks=True)
    path = write(tmp_path, "rebuilt", "[step24]")
    first = run_cli("run", path, home=home)
    assert first.returncode == 0, first.stderr
    again = run_cli("run", path, home=home)
    assert "0 measured, 1 already stored" in " ".join(again.stderr.split())  # same bytes: nothing to do

    model = load_checkpoint("mdl-slt/tiny-a@step24", home).model
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.9)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        snapshot = home / "hub" / "models--mdl-slt--tiny-a" / "snapshots"
        old = (home / "hub" / "models--mdl-slt--tiny-a" / "refs" / "step24").read_text()
        for item in (snapshot / old).iterdir():
            if not (Path(tmp) / item.name).exists():
                shutil.copy(item, Path(tmp) / item.name)
        new = write_snapshot(home / "hub", "mdl-slt/tiny-a", "step24", Path(tmp))
    assert new != old
    rerun = run_cli("run", path, home=home)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 measured, 0 already stored" in " ".join(rerun.stderr.split())
    with sqlite3.connect(tmp_path / "rebuilt.sqlite") as db:
        llc = dict(db.execute("SELECT checkpoint_id, llc_mean FROM records WHERE task = 'llc'").fetchall())
    assert set(llc) == {old, new} and llc[old] != llc[new]
    from mdl_slt.analysis import analyse

    found = analyse(tmp_path / "rebuilt.sqlite")
    assert set(found.records.checkpoint_id) == {new}  # only the new bytes are fitted
    assert set(found.left_out.why) == {"older bytes of the checkpoint"}


def test_processes_sharing_a_store_measure_each_task_once_and_take_over_from_a_killed_one(tiny_suite, tmp_path):
    """Two `mdl-slt run` of one experiment on one store (a job array) claim checkpoints: together
    they give the single process's records, each task measured once and the report written once;
    when one is killed mid-task, the other takes its checkpoint over (at once, the hour-long lease
    notwithstanding: the victim died on this machine) and, last at work, writes the report."""
    home, _ = tiny_suite
    revisions = "[step1, step4, step8, step24]"
    single = write(tmp_path, "single", revisions)
    assert run_cli("run", single, home=home).returncode == 0
    expected = records(tmp_path / "single.sqlite")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MDL_SLT_HOME": str(home)}

    def start(name):
        return subprocess.Popen([sys.executable, "-m", "mdl_slt.cli", "run", str(tmp_path / f"{name}.yaml")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    for name, lease in (("shared", 3), ("killed", 3600)):
        write(tmp_path, name, revisions).write_text((tmp_path / f"{name}.yaml").read_text().replace(
            "name: resume", f"name: resume\nlease_s: {lease}\nreport: {tmp_path}/{name}.pdf"))
    first, second = start("shared"), start("shared")
    said = [p.communicate(timeout=300)[1] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], said
    assert records(tmp_path / "shared.sqlite") == expected
    log = (tmp_path / "shared.log").read_text()
    assert log.count(" base_loss\n") == 4 and log.count(" llc\n") == 4  # every task once, by one of the two
    measured = [int(" ".join(s.split()).split(" measured, ")[0].split()[-1]) for s in said]
    assert sum(measured) == 4 and all(measured), said  # both took part
    assert sum("report " in s for s in said) == 1, said  # written once, by the last to finish

    victim, survivor = start("killed"), start("killed")
    store = tmp_path / "killed.sqlite"

    def measuring(process):
        """Whether `process` holds the claim of a checkpoint it is measuring."""
        try:
            with sqlite3.connect(store) as db:
                return any(db.execute("SELECT 1 FROM claims WHERE holder LIKE ? AND unit NOT LIKE 'process %'",
                                      (f"%:{process.pid}:%",)))
        except sqlite3.OperationalError:  # no store or no claims table yet
            return False

    deadline = time.time() + 120
    while time.time() < deadline and victim.poll() is None and not measuring(victim):
        time.sleep(0.05)
    assert victim.poll() is None and measuring(victim), "the run finished before it could be killed"
    victim.kill()
    victim.wait()
    _, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    assert records(store) == expected  # the killed process's checkpoint was taken over and measured whole
    assert "report " in err and (tmp_path / "killed.pdf").exists()
