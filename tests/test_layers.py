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
import mdl_slt.analysis, mdl_slt.analysis.fitfile, mdl_slt.report.figures, mdl_slt.report, mdl_slt.llc.trace, mdl_slt.plan.units
import mdl_slt.report.answer, mdl_slt.report.layers, mdl_slt.report.measures, mdl_slt.analysis.layers
import mdl_slt.analysis.tournament, mdl_slt.analysis.measures
import pandas as pd
from mdl_slt.analysis.fits import fit_lines, fit_relation
rows = [dict(model="m", compressor="rtn", method="rtn", epsilon=0.1, step=s, llc_mean=float(s), llc_std_error=0.1,
             num_params=10, llc_params=10, converged=True, r_hat=1.0, critical_value=1 + 0.1 * s) for s in range(6)]
print(round(fit_relation(fit_lines(pd.DataFrame(rows))).slope.iloc[0], 6))
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


def _project_imports() -> dict[str, set[str]]:
    """Module → the project modules it imports, from every import statement (top level or inside
    a function: a lazy import is still a dependency)."""
    import ast

    files = {}
    for package in ("mdl_slt", "compressors"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in files else node.module
                         for alias in node.names]
            else:
                continue
            found |= {name for name in names if name in files and name != module}
        graph[module] = found
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, as the modules along it, or None."""
    state, path = {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[module] = "done"
        path.pop()
        return None

    return next(filter(None, (visit(m) for m in sorted(graph) if m not in state)), None)


def _room(module: str) -> str:
    """The room a module stands in: a package of mdl_slt, compressors, or a loose module of mdl_slt."""
    parts = module.split(".")
    return parts[0] if parts[0] == "compressors" else (parts[1] if len(parts) > 1 else "mdl_slt")


def _allowed() -> dict[str, set[str]]:
    """Room → the rooms its docstring says it may import ("May import: a, b (why), c.")."""
    import re

    found = {}
    for init in [*(ROOT / "mdl_slt").glob("*/__init__.py"), ROOT / "compressors" / "__init__.py"]:
        room = init.parent.name
        said = re.search(r"May import: (.*?)\.\n", init.read_text(), re.S)
        assert said, f"{init.relative_to(ROOT)} does not say what its room may import"
        names = {n.strip() for n in re.sub(r"\([^)]*\)", "", said.group(1)).replace("\n", " ").split(",")}
        found[room] = names
    return found


def test_no_import_cycle_and_every_room_imports_only_what_it_says():
    graph = _project_imports()
    assert len(graph) > 40 and {"mdl_slt.llc.config", "mdl_slt.llc.trace"} <= graph["mdl_slt.llc.sampling"]
    assert _cycle(graph) is None, " → ".join(_cycle(graph))
    # the detector itself finds a cycle when there is one
    assert _cycle({**graph, "mdl_slt.errors": {"mdl_slt.llc.config"}}) is not None

    allowed = _allowed()
    rooms = set(allowed) | {"errors", "progress"}
    loose = {_room(m) for m in graph if _room(m) not in allowed} - {"mdl_slt"}
    assert loose == {"errors", "progress"}, f"modules loose in mdl_slt/: {sorted(loose)}"
    for room, names in allowed.items():
        assert names == {"every room"} or names <= rooms, (room, names - rooms)
    for module, targets in graph.items():
        room = _room(module)
        if room not in allowed or allowed[room] == {"every room"}:
            continue
        for target in targets:
            other = _room(target)
            assert other in (room, "mdl_slt") or other in allowed[room], \
                f"{module} imports {target}: the {room} room may import only {', '.join(sorted(allowed[room]))}"
    # the rooms themselves point one way: no room reaches back to one that imports it
    room_graph = {r: set() for r in rooms | {"mdl_slt"}}
    for module, targets in graph.items():
        room_graph[_room(module)] |= {_room(t) for t in targets} - {_room(module), "mdl_slt"}
    assert _cycle(room_graph) is None, " → ".join(_cycle(room_graph))

    def reach(module):
        seen, todo = set(), [module]
        while todo:
            for target in graph[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        return seen

    measuring = {"mdl_slt.run.measure", "mdl_slt.run.executors", "mdl_slt.run.runner", "mdl_slt.llc.sampling",
                 "mdl_slt.llc.chains", "mdl_slt.cli"}
    for module in graph:  # the analysis and report reach no measuring code, so they run without torch
        if _room(module) in ("analysis", "report"):
            assert not reach(module) & measuring, (module, reach(module) & measuring)
