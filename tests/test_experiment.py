from pathlib import Path

import pytest

from mdl_slt.errors import UserError
from mdl_slt.plan.experiment import load_experiment

DEMO = Path(__file__).parent.parent / "experiments" / "demo.yaml"


def test_demo_file_validates():
    from mdl_slt.models.spec import SuiteSpec

    exp = load_experiment(DEMO)
    spec = SuiteSpec()
    assert exp.name == "demo" and exp.report == (DEMO.parent.parent / "reports" / "demo.pdf").resolve()  # from the file
    assert {m.id for m in exp.models} <= {spec.model_id(m) for m in spec.all_models()}
    assert {spec.model_id(m) for m in spec.models} <= {m.id for m in exp.models}  # the three sizes, and variants
    assert exp.critical.compressors[0].name == "rtn" and exp.critical.epsilons == [0.02, 0.05, 0.1]
    variants = load_experiment(DEMO.parent / "variants.yaml")  # λ̂ and the loss only, on every 90k run
    assert not variants.critical.compressors and len(variants.models) == 1 + len(spec.variants)


@pytest.mark.parametrize("name", sorted(p.name for p in DEMO.parent.glob("*.yaml")))
def test_every_experiment_file_validates_on_an_empty_home(name, tmp_path):
    """Nothing built, no hub: the plan comes from the suite's spec (its runs' layouts included), and
    validate names the runs the first run will build."""
    from mdl_slt.models.spec import SuiteSpec
    from tests.conftest import run_cli

    spec = SuiteSpec()
    done = run_cli("validate", DEMO.parent / name, home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    named = [m.id for m in load_experiment(DEMO.parent / name).models]
    built = [spec.model_id(m) for m in spec.find(named)]
    assert f"the first run builds {len(built)} run(s) of the embedded suite" in done.stdout
    assert done.stdout.split("embedded suite, not built yet in ")[1].split(": ", 1)[1].splitlines()[0] == ", ".join(built)
    assert not (tmp_path / "home" / "hub").exists()  # nothing was built or fetched
    if name == "layers.yaml":  # 10 groups per 2-layer size (embed, unembed, 4 per block), 14 for 3 layers; 2 checkpoints each
        assert "68 llc_group" in done.stdout and "critical:rtn@<group> (14 groups)" in done.stdout


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


BASE = "name: x\nstore: s.sqlite\nmodels: [{id: a/b}]\n"


def test_compressor_entries_have_unique_ids(tmp_path):
    twice = BASE + "critical: {compressors: [{name: rtn}, {name: rtn, options: {granularity: channel}}]}\n"
    with pytest.raises(UserError, match=r"compressor ids must be unique, but 'rtn' appears more than once: give each "
                                        r"entry its own `id`"):
        load_experiment(write(tmp_path, twice))
    apart = twice.replace("{name: rtn, options", "{id: rtn-channel, name: rtn, options")
    exp = load_experiment(write(tmp_path, apart))
    assert [e.key for e in exp.critical.compressors] == ["rtn", "rtn-channel"]


def test_bad_compressor_options_are_one_line_at_load(tmp_path):
    bad = {"noise": "{draws: 0}", "rtn": "{group_size: x}", "gptq": "{damp: -1}"}
    expected = {"noise": "option draws=0 is not allowed: input should be greater than or equal to 1",
                "rtn": "option group_size='x' is not allowed: input should be a valid integer",
                "gptq": "option damp=-1 is not allowed: input should be greater than 0"}
    for name, options in bad.items():
        with pytest.raises(UserError, match=f"compressor '{name}': {expected[name]}"):
            load_experiment(write(tmp_path, BASE + f"critical: {{compressors: [{{name: {name}, options: {options}}}]}}\n"))


def test_precision_lives_on_each_entry_in_its_knobs_units(tmp_path):
    with pytest.raises(UserError, match="`critical.precision` is set per compressor entry now"):
        load_experiment(write(tmp_path, BASE + "critical: {precision: 0.05}\n"))
    exp = load_experiment(write(tmp_path, BASE + "critical: {compressors: [{name: rtn, precision: 0.1}, {name: magnitude}]}\n"))
    rtn, magnitude = exp.critical.compressors
    assert rtn.search_precision(rtn.build()) == 0.1 and magnitude.search_precision(magnitude.build()) == 0.005


def test_a_task_hash_covers_only_what_the_task_depends_on(tmp_path):
    from mdl_slt.plan.tasks import Tasks

    def hashes(text, device="cpu"):
        return Tasks(load_experiment(write(tmp_path, BASE + text)).on(device)).hashes

    one = hashes("critical: {compressors: [{name: rtn}]}\n")
    two = hashes("critical: {compressors: [{name: rtn}, {name: svd}]}\n")
    assert two["critical:rtn"] == one["critical:rtn"] and two["llc"] == one["llc"]  # adding svd changes nothing else
    assert set(two) == {"base_loss", "llc", "critical:rtn", "critical:svd"}
    options = hashes("critical: {compressors: [{name: rtn, options: {granularity: channel}}]}\n")
    assert options["critical:rtn"] != one["critical:rtn"] and options["llc"] == one["llc"]
    default = hashes("critical: {compressors: [{name: rtn, options: {granularity: tensor}}]}\n")
    assert default["critical:rtn"] == one["critical:rtn"]  # an option at its default is the same measurement
    sampler = hashes("critical: {compressors: [{name: rtn}]}\nllc: {num_draws: 99}\n")
    assert sampler["llc"] != one["llc"] and sampler["critical:rtn"] == one["critical:rtn"]
    gpu = hashes("critical: {compressors: [{name: rtn}]}\n", device="cuda")
    assert all(gpu[k] != one[k] for k in one)  # the device is part of every task's identity
    bf16 = hashes("critical: {compressors: [{name: rtn}], numerics: bf16}\n")
    assert bf16["llc"] == one["llc"] and bf16["critical:rtn"] != one["critical:rtn"] != bf16["base_loss"]
