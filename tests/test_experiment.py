from pathlib import Path

import pytest

from mdl_slt.errors import UserError
from mdl_slt.experiment import load_experiment

DEMO = Path(__file__).parent.parent / "experiments" / "demo.yaml"


def test_demo_file_validates():
    exp = load_experiment(DEMO)
    assert exp.name == "demo" and len(exp.models) == 3 and exp.report == Path("reports/demo.pdf")
    assert exp.critical.compressors[0].name == "rtn" and exp.critical.epsilons == [0.02, 0.05, 0.1]


def write(tmp_path, text):
    path = tmp_path / "e.yaml"
    path.write_text(text)
    return path


def test_unknown_keys_name_the_closest_valid_one(tmp_path):
    with pytest.raises(UserError, match=r"unknown key 'llc.num_chain' \(did you mean 'num_chains'\?\)"):
        load_experiment(write(tmp_path, "name: x\nstore: s.sqlite\nmodels: [{id: a/b}]\nllc: {num_chain: 2}\n"))
    with pytest.raises(UserError, match=r"unknown key 'modles' \(did you mean 'models'\?\)"):
        load_experiment(write(tmp_path, "name: x\nstore: s.sqlite\nmodles: [{id: a/b}]\n"))
    with pytest.raises(UserError, match=r"unknown key 'models.0.revision' \(did you mean 'revisions'\?\)"):
        load_experiment(write(tmp_path, "name: x\nstore: s.sqlite\nmodels: [{id: a/b, revision: [x]}]\n"))


def test_malformed_and_missing_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="not valid YAML at line 3"):
        load_experiment(write(tmp_path, "name: x\nmodels: [unclosed\n"))
    with pytest.raises(UserError, match="must hold a mapping"):
        load_experiment(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(UserError, match="'critical.epsilons'"):
        load_experiment(write(tmp_path, "name: x\nstore: s\nmodels: [{id: a/b}]\ncritical: {epsilons: [-1]}\n"))
    with pytest.raises(UserError, match="'models': Field required"):
        load_experiment(write(tmp_path, "name: x\nstore: s\n"))


def test_set_overrides_and_step_ranges(tmp_path):
    path = write(tmp_path, "name: x\nstore: s.sqlite\nmodels: [{id: a/b}]\n")
    exp = load_experiment(path, ["llc.num_draws=300", "models.0.steps={start: 1000, stop: 5000, every: 2000}",
                                 "critical.epsilons=[0.1, 0.01]"])
    assert exp.llc.num_draws == 300 and exp.critical.epsilons == [0.01, 0.1]
    assert exp.models[0].listed_revisions() == ["step1000", "step3000", "step5000"]
    with pytest.raises(UserError, match=r"unknown key 'llc.num_draw' \(did you mean 'num_draws'\?\)"):
        load_experiment(path, ["llc.num_draw=3"])
    with pytest.raises(UserError, match="write KEY.PATH=VALUE"):
        load_experiment(path, ["llc"])
    pythia = load_experiment(path, ["models.0.steps={schedule: pythia}"]).models[0].listed_revisions()
    assert len(pythia) == 154 and pythia[:4] == ["step0", "step1", "step2", "step4"]
    assert pythia[10:12] == ["step512", "step1000"] and pythia[-1] == "step143000"
    window = load_experiment(path, ["models.0.steps={schedule: pythia, start: 2000, stop: 90000}"])
    assert window.models[0].listed_revisions() == [f"step{n}" for n in range(2000, 90001, 1000)]
    with pytest.raises(UserError, match="not both"):
        load_experiment(path, ["models.0.revisions=[step1]", "models.0.steps={schedule: pythia}"]).models[0].listed_revisions()
