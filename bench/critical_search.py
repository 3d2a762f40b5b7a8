"""Critical search against a dense grid (the paper's approach) on micro-suite checkpoints, and
against the search without snapping to realisable knob values (as it ran before 0.3).

For each checkpoint and compressor, the dense grid evaluates the loss at every realisable knob
value spaced by the stated precision and takes, per ε, the most compressing value before the
first failure; the search brackets and bisects over the realisable values. Prints both critical
values, both evaluation counts and their ratio; and the evaluations the unsnapped search makes,
with how many distinct compressed models they were. Needs the suite (`mdl-slt suite build`).

    python bench/critical_search.py [--home DIR] [--compressor rtn] [--refs REF ...]
"""

from __future__ import annotations

import argparse
import time

import torch

import compressors
from mdl_slt.compute.loss import evaluate_loss
from mdl_slt.data.tokens import DataConfig, token_sets
from mdl_slt.home.paths import resolve_home
from mdl_slt.measures.critical import find_critical
from mdl_slt.models.checkpoints import load_checkpoint

EPSILONS = [0.02, 0.05, 0.1]
REFS = ["mdl-slt/micro-pythia-90k@step1000", "mdl-slt/micro-pythia-230k@step500", "mdl-slt/micro-pythia-530k@step250"]


def dense_grid(loss_at, base, knob, precision, snap):
    """Every realisable value from the least to the most compressing end, `precision` apart."""
    steps = round(abs(knob.most - knob.least) / precision)
    direction = 1 if knob.more_compression == "higher" else -1
    values = []
    for i in range(steps + 1):
        v = snap(knob.least + direction * i * precision)
        if v not in values:
            values.append(v)
    losses = {v: loss_at(v) for v in values}
    critical = {}
    for eps in EPSILONS:
        passing = None
        for v in values:
            if losses[v] - base > eps:
                break
            passing = v
        critical[eps] = passing
    return critical, len(values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None)
    parser.add_argument("--compressor", default="rtn")
    parser.add_argument("--refs", nargs="+", default=REFS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    home = resolve_home(args.home)
    method = compressors.get(args.compressor)
    precision = method.knob.precision
    total_search = total_grid = total_unsnapped = total_models = 0
    print(f"compressor {args.compressor}, knob {method.knob.name}, precision {precision}, ε {EPSILONS}")
    for ref in args.refs:
        ckpt = load_checkpoint(ref, home)
        tokens = token_sets(home, ckpt.tokenizer, DataConfig())
        base = evaluate_loss(ckpt.model, tokens.eval)
        prepared = method.prepare(ckpt.model, tokens.train)

        def loss_at(value):
            with method.applied(ckpt.model, prepared, value):
                return evaluate_loss(ckpt.model, tokens.eval)

        snap = lambda v: method.snap(v, prepared)  # noqa: E731
        start = time.perf_counter()
        found = find_critical(loss_at, base, EPSILONS, method.knob, precision, snap, method.levels(prepared))
        search_s = time.perf_counter() - start
        unsnapped = find_critical(loss_at, base, EPSILONS, method.knob, precision)
        models = len({snap(v) for v in unsnapped.evaluations})
        total_unsnapped += unsnapped.num_evaluations
        total_models += models
        start = time.perf_counter()
        grid, grid_evals = dense_grid(loss_at, base, method.knob, precision, snap)
        grid_s = time.perf_counter() - start
        total_search += found.num_evaluations
        total_grid += grid_evals
        for point in found.points:
            g = grid[point.epsilon]
            agree = (point.value is None and g is None) or (
                point.value is not None and g is not None and abs(point.value - g) <= precision + 1e-9)
            print(f"  {ref} ε={point.epsilon:g}: search {point.value:.4f}  grid {g:.4f}  "
                  f"{'agree' if agree else 'DIFFER'} (monotone: {point.monotone})")
        print(f"  {ref}: evaluations search {found.num_evaluations} ({search_s:.1f} s), "
              f"grid {grid_evals} ({grid_s:.1f} s), ratio {grid_evals / found.num_evaluations:.1f}×; "
              f"unsnapped search {unsnapped.num_evaluations} evaluations of {models} distinct models")
    print(f"total evaluations: search {total_search}, dense grid {total_grid}, "
          f"search uses {total_search / total_grid:.1%} of the grid's (ratio {total_grid / total_search:.1f}×); "
          f"unsnapped search {total_unsnapped} evaluations of {total_models} distinct models")


if __name__ == "__main__":
    main()
