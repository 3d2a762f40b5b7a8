import json
import math

import pytest

from mdl_slt.llc.calibrate import Setting, recommend
from tests.conftest import run_cli


def assert_one_line_error(done, *fragments):
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mdl-slt: error: "), done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_reference(home):
    done = run_cli("llc", "nosuch/model@step1", "--json", home=home)
    assert_one_line_error(done, "cannot load checkpoint 'nosuch/model@step1'")
    assert done.stdout == ""


def test_usage_errors_exit_2_and_name_the_option(home):
    done = run_cli("llc", "x@step1", "--num-chain", "2", home=home)
    assert done.returncode == 2 and "No such option: --num-chain" in done.stderr and "Traceback" not in done.stderr
    assert_one_line_error(run_cli("--device", "gpu", "llc", "x@step1", home=home), "unknown device 'gpu'")
    assert_one_line_error(run_cli("llc", "EleutherAI/pythia-70m@step1500", home=home),
                          "no checkpoint step1500", "nearest: step1000 or step2000")


def test_missing_and_malformed_experiment_files(tmp_path, home):
    assert_one_line_error(run_cli("run", tmp_path / "missing.yaml", home=home), "experiment file not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert_one_line_error(run_cli("run", bad, home=home), "not valid YAML")
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: x\nstore: s.sqlite\nmodels: [{id: a/b}]\ncritcal: {}\n")
    assert_one_line_error(run_cli("run", typo, home=home), "unknown key 'critcal'", "did you mean 'critical'")


def test_unknown_compressor_suggests(tiny_suite):
    home, _ = tiny_suite
    done = run_cli("critical", "mdl-slt/tiny-a@step24", "--compressor", "rtm", "--epsilon", "0.1", home=home)
    assert_one_line_error(done, "unknown compressor 'rtm'", "did you mean rtn")


def test_llc_json(tiny_suite):
    home, _ = tiny_suite
    done = run_cli("llc", "mdl-slt/tiny-a@step24", "--json", "--num-draws", "20", "--num-burnin", "5",
                   "--step-size", "1e-4", home=home)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ref"] == "mdl-slt/tiny-a@step24" and out["step"] == 24
    assert len(out["llc_per_chain"]) == 4 and isinstance(out["llc_mean"], float)
    assert out["config"]["num_draws"] == 20 and "loss_trace" not in out
    regime = out["regime"]  # where λ̂ lies: E[ΔL] = λ̂/nβ beside the default tolerances, λ̂ against nβ·tr(H)/(2γ)
    assert regime["excess_loss"] == out["llc_mean"] / out["n_beta"] and regime["epsilons"] == [0.02, 0.05, 0.1]
    assert regime["hessian_trace"] > 3 * regime["hessian_trace_se"] > 0
    assert regime["trace_limit"] == out["n_beta"] * regime["hessian_trace"] / (2 * out["config"]["localization"])
    assert regime["trace_ratio"] == out["llc_mean"] / regime["trace_limit"]
    assert regime["half_d"] == out["num_params"] / 2
    assert regime["slope"] is None and "ladder" not in regime  # the ladder only when asked (NaN is JSON's null)


def test_llc_ladder_reads_the_slope_in_n_beta(tiny_suite):
    """λ̂ at nβ/3 and 3·nβ (the step kept going down, divided by 3 going up): the slope is their log
    ratio over log 9 where both are positive (tests/test_regime.py checks its value on a quadratic)."""
    home, _ = tiny_suite
    done = run_cli("llc", "mdl-slt/tiny-a@step24", "--json", "--num-draws", "20", "--num-burnin", "5",
                   "--step-size", "1e-4", "--ladder", home=home)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    low, high = out["regime"]["ladder"]
    assert (low["n_beta"], high["n_beta"]) == pytest.approx((10.0, 90.0))
    assert (low["step_size"], high["step_size"]) == pytest.approx((1e-4, 1e-4 / 3))  # η·nβ fixed going up
    both = low["llc_mean"] > 0 and high["llc_mean"] > 0  # the tiny model's w* (24 steps) is barely a minimum
    assert out["regime"]["slope"] == (pytest.approx(math.log(high["llc_mean"] / low["llc_mean"]) / math.log(9))
                                      if both else None)


def test_llc_scale_finds_the_n_beta_whose_posterior_sits_at_each_tolerance(tiny_suite):
    """λ(ε) per tolerance: the last rung's E[ΔL] = λ̂/nβ within 5% of ε when found, every rung kept;
    else why (under γ = 1 the tiny model's divergence reaches ε = 0.05 near nβ = 120 in three rungs;
    at γ = 300 it sits in the trace limit, E ≈ 0.08 at any nβ)."""
    home, _ = tiny_suite
    done = run_cli("llc", "scale", "mdl-slt/tiny-b@step24", "--epsilon", "0.05", "--json", "--num-draws", "30",
                   "--num-chains", "2", "--step-size", "1e-4", "--localization", "1", home=home)
    assert done.returncode == 0, done.stderr
    scales = json.loads(done.stdout)["scales"]
    assert [s["epsilon"] for s in scales] == [0.05] and all(s["rungs"] for s in scales)
    for s in scales:
        last = s["rungs"][-1]
        assert (s["n_beta"], s["llc_mean"]) == (last["n_beta"], last["llc_mean"])
        assert s["excess_loss"] == s["llc_mean"] / s["n_beta"]
        assert s["found"] == (abs(s["excess_loss"] / s["epsilon"] - 1) <= 0.05) and s["found"] == (s["why"] == "")
        assert s["rungs"][0]["n_beta"] == 30.0 and len(s["rungs"]) <= 4
        assert s["code_bits"] == (0.0 if s["found"] else None)  # DL_λ from the widest tolerance reached: itself


def test_critical_json_takes_several_epsilons(tiny_suite):
    home, _ = tiny_suite
    done = run_cli("critical", "mdl-slt/tiny-a@step24", "--compressor", "rtn", "--epsilon", "0.01", "0.05",
                   "0.2", "--json", home=home)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    points = out["critical"]
    assert [p["epsilon"] for p in points] == [0.01, 0.05, 0.2]
    assert out["knob_name"] == "bits" and out["knob_unit"] == "bits per weight"
    bits = [p["knob"] for p in points]
    assert all(b is not None for b in bits) and bits == sorted(bits, reverse=True)  # larger ε, fewer bits
    lengths = [p["dl_bits"] for p in points]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] < out["uncompressed_dl_bits"]
    assert out["n_evaluations"] >= 3
    for p in points:  # each critical value with its standard error over the held-out sequences
        assert p["knob_se"] is not None and p["knob_se"] >= 0
        assert (p["sequences_needed"] is not None) == (p["knob_se"] > out["precision"])


@pytest.mark.parametrize("precision", [0.001, 16.0])
def test_critical_says_how_many_sequences_bring_its_error_under_the_precision(tiny_suite, precision):
    """A precision finer than every error: each point names the sequences that would meet it (errors
    fall as 1/√n, so n·(se/precision)², rounded up); one coarser than the knob's range: none does."""
    home, _ = tiny_suite
    done = run_cli("critical", "mdl-slt/tiny-a@step24", "--compressor", "rtn", "--epsilon", "0.05", "0.2",
                   "--precision", str(precision), "--json", home=home)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["precision"] == precision
    for p in out["critical"]:
        if precision < 1:
            assert p["knob_se"] > precision
            assert p["sequences_needed"] == math.ceil(out["n_sequences"] * (p["knob_se"] / precision) ** 2)
        else:
            assert p["knob_se"] < precision and p["sequences_needed"] is None


def test_compressors_lists_the_registry():
    import compressors

    done = run_cli("compressors")
    assert done.returncode == 0
    listed = [line.split()[0] for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert listed == compressors.names()
    assert "knob bits in [1, 16] bits per weight, lower compresses more" in done.stdout


def test_critical_takes_compressor_options(tiny_suite):
    home, _ = tiny_suite
    done = run_cli("critical", "mdl-slt/tiny-a@step24", "--compressor", "magnitude", "--option", "scope=global",
                   "--option", "targets=[attention, mlp]", "--epsilon", "0.05", "--json", home=home)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["knob_name"] == "sparsity" and 0 <= out["critical"][0]["knob"] <= 0.99
    bad = run_cli("critical", "mdl-slt/tiny-a@step24", "--compressor", "magnitude", "--option", "scope",
                  "--epsilon", "0.05", home=home)
    assert_one_line_error(bad, "write KEY=VALUE")


def test_llc_reports_diagnostics_and_component(tiny_suite):
    home, _ = tiny_suite
    done = run_cli("llc", "mdl-slt/tiny-a@step24", "--json", "--num-draws", "20", "--num-burnin", "5",
                   "--step-size", "1e-4", "--sampler", "rmsprop", "--step-size", "1e-5",
                   "--parameters", "gpt_neox.layers.0.attention.*", home=home)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["config"]["sampler"] == "rmsprop" and out["num_params"] < out["checkpoint_params"]
    assert {"r_hat", "ess", "diverged_chains", "negative", "n_beta"} <= set(out)
    bad = run_cli("llc", "mdl-slt/tiny-a@step24", "--n-beta", "lots", home=home)
    assert_one_line_error(bad, "--n-beta takes a number or 'auto'")


def test_llc_calibrate_recommends_and_plots(tiny_suite, tmp_path):
    home, _ = tiny_suite
    plot = tmp_path / "calibration.png"
    done = run_cli("llc", "calibrate", "mdl-slt/tiny-b@step24", "--num-draws", "30", "--num-burnin", "10",
                   "--num-chains", "2", "--batch-size", "8", "--plot", plot, "--json", home=home)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["settings"]) == 18 and plot.read_bytes()[:4] == b"\x89PNG"
    settings = [Setting(**{k: s[k] for k in Setting.__dataclass_fields__ if k != "trace"}, trace=[])
                for s in out["settings"]]
    assert any(s.stable for s in settings)  # the tiny model has a plateau of stable steps at nβ = 30
    chosen = recommend(settings)  # the rule of docs/science.md, applied to what the sweep printed
    assert chosen is not None and chosen.stable
    assert out["recommended"] == {"step_size": chosen.step_size, "n_beta": chosen.n_beta}


BAD = [("noise", "draws=0", "option draws=0 is not allowed"),
       ("rtn", "group_size=x", "option group_size='x' is not allowed: input should be a valid integer"),
       ("gptq", "damp=-1", "option damp=-1 is not allowed: input should be greater than 0"),
       ("bnb", "formats=[int4]", "option formats=['int4'] is not allowed"),
       ("svd", "targets=[heads]", "option targets=['heads'] is not allowed"),
       ("svd-energy", "targets=mlp", "option targets='mlp' is not allowed"),
       ("tucker", "targets=[mlp]", "tucker decomposes attention weights stacked by head"),
       ("cp", "iterations=0", "option iterations=0 is not allowed"),
       ("magnitude", "scope=row", "option scope='row' is not allowed"),
       ("heads", "retrain_steps=-3", "option retrain_steps=-3 is not allowed")]


@pytest.mark.parametrize("name,option,message", BAD)
def test_bad_option_values_are_one_line_with_exit_2(name, option, message, home):
    """Refused when the command line is read, before any model is loaded."""
    done = run_cli("critical", "nosuch/model@step1", "--compressor", name, "--option", option, home=home)
    assert_one_line_error(done, name, message)


def test_one_shot_commands_take_an_experiments_settings(tiny_suite, tmp_path):
    """`llc` and `critical` measure on the data an experiment file names, with its sampler and entries."""
    home, _ = tiny_suite
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"word{i % 97} and more words" for i in range(4000)))
    experiment = tmp_path / "mine.yaml"
    experiment.write_text(f"""
name: mine
store: {tmp_path}/mine.sqlite
models: [{{id: mdl-slt/tiny-a}}]
data: {{source: files, files: ["{text}"], context_length: 32, eval_sequences: 8, llc_sequences: 32}}
llc: {{step_size: 1.0e-4, num_chains: 2, num_draws: 12, num_burnin: 4, batch_size: 4}}
critical: {{compressors: [{{id: coarse, name: rtn, precision: 0.5}}], epsilons: [0.1, 0.3]}}
""")
    llc = run_cli("llc", "mdl-slt/tiny-a@step24", "--experiment", experiment, "--set", "llc.seed=3", "--json", home=home)
    assert llc.returncode == 0, llc.stderr
    out = json.loads(llc.stdout)
    assert out["config"]["num_draws"] == 12 and out["config"]["seed"] == 3 and out["config"]["batch_size"] == 4
    embedded = json.loads(run_cli("llc", "mdl-slt/tiny-a@step24", "--json", "--num-draws", "12", "--num-burnin", "4",
                                  "--step-size", "1e-4", "--batch-size", "4", "--seed", "3", home=home).stdout)
    assert out["init_loss"] != embedded["init_loss"]  # the file's text, not the embedded plays
    flag = json.loads(run_cli("llc", "mdl-slt/tiny-a@step24", "--experiment", experiment, "--num-draws", "6",
                              "--json", home=home).stdout)
    assert flag["config"]["num_draws"] == 6 and flag["init_loss"] == out["init_loss"]  # a flag beats the file
    critical = run_cli("critical", "mdl-slt/tiny-a@step24", "--experiment", experiment, "--json", home=home)
    assert critical.returncode == 0, critical.stderr
    found = json.loads(critical.stdout)
    assert found["compressor"] == "coarse" and [p["epsilon"] for p in found["critical"]] == [0.1, 0.3]
    assert "embedded Shakespeare set" in run_cli("llc", "estimate", "--help").stdout
    assert_one_line_error(run_cli("llc", "mdl-slt/tiny-a@step24", "--set", "llc.seed=3", home=home),
                          "--set changes an experiment file's settings")
