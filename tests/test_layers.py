"""The layering the architecture promises: the analysis and report layer runs without torch, and
nothing in the project points outside it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_analysis_and_report_import_and_run_without_torch(tmp_path):
    """With torch made unimportable, the analysis, fit-file and report modules import, and the
    analysis runs on a table."""
    code = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not allowed here")

sys.meta_path.insert(0, NoTorch())  # any `import torch` now fails
import mdl_slt.analysis, mdl_slt.fitfile, mdl_slt.figures, mdl_slt.report, mdl_slt.trace, mdl_slt.plan
import pandas as pd
from mdl_slt.analysis import fit_relation
rows = [dict(model="m", compressor="rtn", method="rtn", epsilon=0.1, step=s, llc_mean=float(s), llc_std_error=0.1,
             num_params=10, llc_params=10, converged=True, r_hat=1.0, critical_value=1 + 0.1 * s) for s in range(6)]
print(round(fit_relation(pd.DataFrame(rows)).slope.iloc[0], 6))
assert "torch" not in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0.1"


def test_nothing_in_the_project_points_outside_it():
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT).stdout.split()
    for name in tracked:
        if name.endswith((".py", ".md", ".yaml", ".toml", ".sh")) and name != "tests/test_layers.py":
            text = (ROOT / name).read_text()
            for outside in ("../shared", "SCIENCE.md", "DESIGN.md"):
                assert outside not in text, f"{name} refers to {outside}"
