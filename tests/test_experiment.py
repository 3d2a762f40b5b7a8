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
