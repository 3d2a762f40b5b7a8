"""What a researcher touches first: the registry on any install, every help screen with its defaults,
one-shot commands that say how they measure, the compressed model saved and loaded back, paths taken
from the experiment file, and errors that tell the truth."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_cli import assert_one_line_error

ROOT = Path(__file__).parent.parent


def test_the_registry_lists_every_compressor_on_an_install_without_an_extra():
    """hqq's package blocked: the list still holds every compressor, hqq with its install line, and exits 0."""
    import compressors

    code = """
import importlib.util, sys
real = importlib.util.find_spec
class NoHqq:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hqq":
            raise ModuleNotFoundError("no hqq here")
sys.meta_path.insert(0, NoHqq())
importlib.util.find_spec = lambda name, *rest: None if name.split(".")[0] == "hqq" else real(name, *rest)
sys.argv = ["mdl-slt", "compressors"]
from mdl_slt.cli import main
main()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert listed == compressors.names()
    assert "needs the hqq package, not installed: pip install 'mdl-slt[hqq]'" in done.stdout
    assert done.stdout.count("options: ") == len(compressors.names())


def screens():
    """(command path, click command) of every command and subcommand."""
    from typer.main import get_command

    from mdl_slt.cli import app

    def walk(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return list(walk(get_command(app), []))


def test_every_option_of_every_command_has_help_and_shows_its_default():
    for path, command in screens():
        shown = run_cli(*path, "--help")
        assert shown.returncode == 0, path
        text = "".join(shown.stdout.split())  # help is wrapped, at spaces and hyphens
        for option in (p for p in command.params if p.param_type_name == "option" and p.name != "help"):
            assert option.help, (path, option.opts)
            assert "".join(option.help.split()) in text, (path, option.opts)  # no markup ate a part of it
            shows = "[default:" in option.help or option.is_flag or option.required or \
                (option.show_default and option.default not in (None, [], ()))
            assert shows, (path, option.opts)


def test_one_shot_commands_say_what_they_measure_with(tiny_suite):
    home, _ = tiny_suite
    done = run_cli("llc", "mdl-slt/tiny-a@step24", "--num-draws", "20", "--num-burnin", "5", home=home)
    assert done.returncode == 0, done.stderr
    assert "data: embedded, 64 held-out sequences and 256 sampling sequences of 128 tokens; sampler sgld: step η " \
           "0.0003, nβ 30.0, γ 300, 4 chains" in " ".join(done.stderr.split())
    assert "--experiment experiments/demo.yaml" in done.stderr
    assert "sampling λ̂ of mdl-slt/tiny-a@step24…" in done.stderr and "sampling λ̂ of mdl-slt/tiny-a@step24: done" in done.stderr


def test_the_compressed_model_is_saved_loads_and_reproduces_its_measured_loss(tiny_suite, tmp_path):
    from transformers import AutoModelForCausalLM

    from mdl_slt.compute.loss import evaluate_loss
    from mdl_slt.data.tokens import DataConfig, token_sets
    from mdl_slt.models.checkpoints import load_checkpoint

    home, _ = tiny_suite
    done = run_cli("critical", "mdl-slt/tiny-a@step24", "--compressor", "rtn", "--epsilon", "0.05", "--json",
                   "--save", tmp_path / "saved", home=home)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["saved"] == [str(tmp_path / "saved")]
    info = json.loads((tmp_path / "saved" / "mdl_slt-compression.json").read_text())
    point = out["critical"][0]
    assert (info["knob"], info["epsilon"], info["dl_bits"]) == (point["knob"], 0.05, point["dl_bits"])
    assert info["loss"] == pytest.approx(point["loss"], abs=1e-12)  # the search's own evaluation at that value
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    ckpt = load_checkpoint("mdl-slt/tiny-a@step24", home)
    tokens = token_sets(home, ckpt.tokenizer, DataConfig())
    assert evaluate_loss(model, tokens.eval) == pytest.approx(point["loss"], abs=1e-6)
    assert evaluate_loss(ckpt.model, tokens.eval) == pytest.approx(out["base_loss"], abs=1e-9)
    several = run_cli("critical", "mdl-slt/tiny-a@step24", "--compressor", "rtn", "--epsilon", "0.05", "0.2",
                      "--save", tmp_path / "both", home=home)
    assert several.returncode == 0 and sorted(p.name for p in (tmp_path / "both").iterdir()) == \
        ["epsilon-0.05", "epsilon-0.2"]


def test_paths_in_an_experiment_file_are_taken_from_its_folder(tiny_suite, tmp_path):
    home, _ = tiny_suite
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "x.yaml").write_text("name: x\nstore: ../out/x.sqlite\nreport: ../out/x.pdf\n"
                                   "models: [{id: mdl-slt/tiny-a, revisions: [step24]}]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_cli("validate", folder / "x.yaml", home=home, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert f"store {tmp_path / 'out' / 'x.sqlite'}, report {tmp_path / 'out' / 'x.pdf'}" in done.stdout
    moved = run_cli("validate", folder / "x.yaml", "--set", "store=here.sqlite", home=home, cwd=elsewhere)
    assert f"store {elsewhere / 'here.sqlite'}" in moved.stdout  # --set: from the working directory


def test_errors_tell_the_truth(tiny_suite, tmp_path):
    home, _ = tiny_suite
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.4 a report, not a store")
    done = run_cli("status", pdf, home=home)
    assert_one_line_error(done, f"{pdf} is not a results store (a PDF report)")
    assert "remove" not in done.stderr and pdf.read_bytes().startswith(b"%PDF")  # the file is left as it is
    wrong = run_cli("llc", "mdl-slt/tiny-a@step23", home=home)
    assert_one_line_error(wrong, "mdl-slt/tiny-a has no revision step23: the suite holds step0, step1, step2",
                          "step24")


def test_every_name_the_package_exports_is_its_function_after_any_import():
    """`mdl_slt.results` stays the function once its module is imported (a module of the same name
    would replace the attribute)."""
    import importlib

    import mdl_slt

    for name, module in mdl_slt._LAZY.items():
        importlib.import_module(module)
        assert getattr(mdl_slt, name) is getattr(importlib.import_module(module), name), name
