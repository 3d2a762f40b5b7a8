"""The new methods against the baselines they claim to beat, at equal bits or equal sparsity.

On the last checkpoint of each micro-Pythia size, the held-out loss increase ΔL (nats per token,
over `--eval-sequences` sequences of 64 tokens) of each method at the same setting, all on the
same weights (attention, MLP and unembedding matrices: the layers with inputs), with the paired
standard error of its difference from the baseline (per-sequence losses, so the noise of the
evaluation set cancels):

- quantization at 3 and 4 bits: `awq` against `rtn` on the same grid (symmetric, groups of 128
  inputs); `hqq` (asymmetric, groups of 32 weights, which divide every row of the suite) against `rtn`
  asymmetric in groups of 32;
  `gptq` per group of 128 for reference;
- pruning at 50% and at 2:4 (`pattern: n:4` at 0.5): `sparsegpt` against `wanda` against
  `magnitude` (per tensor; per group of four at 2:4).

Prints ΔL per method and the difference from its baseline with its standard error: below,
level with (within two standard errors) or ABOVE the baseline. The claim holds where it is not
above. Needs the suite (`mdl-slt suite build`).

    python bench/new_methods.py [--models 90k 230k 530k] [--revision step1000] [--eval-sequences 256]
"""

from __future__ import annotations

import argparse
import math

import torch

import compressors
from mdl_slt.compute.loss import sequence_losses
from mdl_slt.data.tokens import DataConfig, token_sets
from mdl_slt.home.paths import resolve_home
from mdl_slt.models.checkpoints import load_checkpoint

WEIGHTS = ["attention", "mlp", "unembedding"]
QUANTIZERS = {  # label: (name, options), each compared with the baseline named beside it
    "rtn g128": ("rtn", {"granularity": "group", "group_size": 128}),
    "awq": ("awq", {"group_size": 128}),
    "rtn asym g32": ("rtn", {"granularity": "group", "group_size": 32, "symmetric": False}),
    "hqq g32": ("hqq", {"group_size": 32}),
    "gptq g128": ("gptq", {"granularity": "group", "group_size": 128}),
}
QUANTIZER_BASELINE = {"awq": "rtn g128", "hqq g32": "rtn asym g32", "gptq g128": "rtn g128"}
PRUNERS = ("magnitude", "wanda", "sparsegpt")
PRUNER_BASELINE = {"wanda": "magnitude", "sparsegpt": "wanda"}


def increases(model, tokens, base, method, settings):
    """Per setting, the per-sequence loss increases of `method` there."""
    prepared = method.prepare(model, tokens.train)
    found = {}
    for value in settings:
        with method.applied(model, prepared, value):
            found[value] = sequence_losses(model, tokens.eval) - base
    return found


def compare(rows, baselines, label, setting):
    """Print ΔL of every method at `setting`, and each against its baseline (± standard error)."""
    for name, per_setting in rows.items():
        delta = per_setting[setting]
        line = f"  {label:>6s}  {name:14s} ΔL {delta.mean():+.4f}"
        if name in baselines:
            base = rows[baselines[name]][setting]
            difference = delta - base
            se = difference.std(ddof=1) / math.sqrt(len(difference))
            verdict = "below" if difference.mean() < -2 * se else "ABOVE" if difference.mean() > 2 * se else "level"
            line += f"   vs {baselines[name]}: {difference.mean():+.4f} ± {se:.4f}  ({verdict} at 2 se)"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["90k", "230k", "530k"])
    parser.add_argument("--revision", default="step1000")
    parser.add_argument("--eval-sequences", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    home = resolve_home(None)
    for size in args.models:
        ckpt = load_checkpoint(f"mdl-slt/micro-pythia-{size}@{args.revision}", home)
        tokens = token_sets(home, ckpt.tokenizer, DataConfig(context_length=64, eval_sequences=args.eval_sequences,
                                                             llc_sequences=256))
        model = ckpt.model
        base = sequence_losses(model, tokens.eval)
        print(f"micro-pythia-{size}@{args.revision}: base loss {base.mean():.4f} over {len(base)} sequences", flush=True)
        rows = {label: increases(model, tokens, base, compressors.get(name, targets=WEIGHTS, **options), [4.0, 3.0])
                for label, (name, options) in QUANTIZERS.items()}
        for bits in (4.0, 3.0):
            compare(rows, QUANTIZER_BASELINE, f"{bits:g} bit", bits)
        for pattern, label in (("unstructured", "50%"), ("n:4", "2:4")):
            rows = {name: increases(model, tokens, base, compressors.get(name, targets=WEIGHTS, pattern=pattern), [0.5])
                    for name in PRUNERS}
            compare(rows, PRUNER_BASELINE, label, 0.5)


if __name__ == "__main__":
    main()
