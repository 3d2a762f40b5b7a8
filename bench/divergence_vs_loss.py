"""Does the divergence from w* measure the loss increase that critical compression measures?

λ(ε) on a language model is sampled on D(w) = KL(p_w* ‖ p_w) per token (`mdl_slt.llc.scale`),
while a compressor's tolerance ε bounds the held-out loss increase ΔL. On the last checkpoint of
each micro-Pythia size, for `rtn` at 8–3 bits and `svd` at rank fractions 0.9–0.3 (their
defaults), this prints ΔL and D, both on the main job's held-out text, and their ratio: near 1
where the compression error does not follow the loss's gradient. Needs the suite
(`mdl-slt suite build`); not a timing.

    python bench/divergence_vs_loss.py [--models 90k 530k] [--revision step1000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import compressors
from mdl_slt.cli.app import experiment, load
from mdl_slt.compute.loss import divergence_from, evaluate_loss

SETTINGS = {"rtn": [8, 6, 5, 4, 3], "svd": [0.9, 0.7, 0.5, 0.3]}
BATCH = 32


def held_out_divergence(loss, model, tokens) -> float:
    """D over the held-out sequences, batch by batch, weighted by batch size."""
    with torch.no_grad():
        return sum(float(loss(model, tokens[i:i + BATCH])) * len(tokens[i:i + BATCH])
                   for i in range(0, len(tokens), BATCH)) / len(tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["90k", "530k"])
    parser.add_argument("--revision", default="step1000")
    args = parser.parse_args()
    chosen = experiment(Path("experiments/demo.yaml"), [])
    for size in args.models:
        ckpt, tokens = load(f"mdl-slt/micro-pythia-{size}@{args.revision}", chosen)
        model, held = ckpt.model, tokens.eval
        base, loss = evaluate_loss(model, held), divergence_from(model)
        for name, values in SETTINGS.items():
            compressor = compressors.get(name)
            prepared = compressor.prepare(model)
            for value in values:
                compressor.apply(model, prepared, value)
                increase, divergence = evaluate_loss(model, held) - base, held_out_divergence(loss, model, held)
                compressor.restore(prepared)
                print(f"{ckpt.ref} {name} {compressor.knob.name} {value:g}: ΔL {increase:+.4f}  D {divergence:.4f}  "
                      f"ΔL/D {increase / divergence:.2f}")


if __name__ == "__main__":
    main()
