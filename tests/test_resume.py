"""A store that never loses a result: failures recorded, status, and resume after SIGKILL."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import TINY, run_cli

EXPERIMENT = """
name: resume
store: {store}
models:
  - id: mdl-slt/tiny-a
    revisions: {revisions}
data: {{context_length: 32, eval_sequences: 16, llc_sequences: 64}}
llc: {{step_size: 1.0e-4, num_chains: 2, num_draws: 40, num_burnin: 10, batch_size: 8}}
critical: {{epsilons: [0.05, 0.2], precision: 0.1}}
"""


def write(tmp_path, name, revisions):
    path = tmp_path / f"{name}.yaml"
    path.write_text(EXPERIMENT.format(store=tmp_path / f"{name}.sqlite", revisions=revisions))
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
    assert any(l.startswith("failed") and "step999" in l and "cannot load checkpoint" in l for l in lines)
    assert lines[-1] == "resume: 2 done, 1 failed, 0 pending of 3"
    keys = records(tmp_path / "partial.sqlite")
    assert keys and not any("step999" in k for k in keys)  # nothing half-written for the failed unit
    log = (tmp_path / "partial.log").read_text()
    assert "failed mdl-slt/tiny-a@step999: cannot load checkpoint" in log and "done mdl-slt/tiny-a@step24" in log


def test_validate_prints_the_plan_without_running(tiny_suite, tmp_path):
    home, _ = tiny_suite
    path = write(tmp_path, "plan", "all")
    done = run_cli("validate", path, home=home)
    assert done.returncode == 0, done.stderr
    assert f"{len(TINY.schedule())} checkpoints" in done.stdout
    assert "SGLD steps" in done.stdout and "critical:rtn" in done.stdout
    assert "(2 chains × 50 per checkpoint)" in done.stdout
    assert not (tmp_path / "plan.sqlite").exists()
    overridden = run_cli("validate", path, "--set", "llc.num_chains=3", "--set", "models.0.revisions=[step8]", home=home)
    assert "1 checkpoints" in overridden.stdout and "(3 chains × 50 per checkpoint)" in overridden.stdout


def test_sigkill_then_rerun_gives_exactly_the_uninterrupted_records(tiny_suite, tmp_path):
    home, _ = tiny_suite
    whole = write(tmp_path, "whole", "all")
    assert run_cli("run", whole, home=home).returncode == 0
    expected = records(tmp_path / "whole.sqlite")

    killed = write(tmp_path, "killed", "all")
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


def test_ray_executor_gives_the_records_of_the_local_one(tiny_suite, tmp_path):
    """A real local Ray cluster (`ray start --head`), joined by address, measures what the local executor does."""
    import socket
    import sysconfig

    home, _ = tiny_suite
    local = write(tmp_path, "local", "[step1, step24]")
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
        remote = write(tmp_path, "remote", "[step1, step24]")
        done = run_cli("run", remote, "--executor", "ray", "--address", f"127.0.0.1:{port}", home=home)
        assert done.returncode == 0, done.stderr
    finally:
        subprocess.run([*ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
    expected = records(tmp_path / "local.sqlite")
    assert len(expected) > 10 and records(tmp_path / "remote.sqlite") == expected


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
    path.write_text(EXPERIMENT.format(store=tmp_path / "broken.sqlite", revisions="[step24]").replace("data:", more))
    done = run_cli("run", path, home=home)
    assert done.returncode == 1, done.stderr
    failed = {line.split()[1]: line for line in run_cli("status", tmp_path / "broken.sqlite", home=home).stdout.splitlines()
              if line.startswith("failed")}
    assert "is corrupt or incomplete (SafetensorError" in failed[str(corrupt)]
    assert "hub is unreachable (offline)" in failed["EleutherAI/pythia-14m@step1000"]
    keys = records(tmp_path / "broken.sqlite")
    assert keys and all("mdl-slt/tiny-a|step24" in k for k in keys)  # nothing of the failed units
