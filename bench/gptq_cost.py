"""GPTQ against round-to-nearest on micro-suite checkpoints: loss at 3 and 4 bits, and GPTQ's
per-bit-width cost after `prepare` (Hessians + factorisation) as a fraction of `prepare`.

    python bench/gptq_cost.py [--home DIR]
"""

from __future__ import annotations

import argparse
import time

import torch

import compressors
from mdl_slt.checkpoints import load_checkpoint
from mdl_slt.data import DataConfig, token_sets
from mdl_slt.home import resolve_home
from mdl_slt.lm_loss import evaluate_loss

REFS = ["mdl-slt/micro-pythia-90k@step1000", "mdl-slt/micro-pythia-230k@step1000", "mdl-slt/micro-pythia-530k@step1000"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    home = resolve_home(args.home)
    for ref in REFS:
        ckpt = load_checkpoint(ref, home)
        tokens = token_sets(home, ckpt.tokenizer, DataConfig())
        base = evaluate_loss(ckpt.model, tokens.eval)
        gptq = compressors.get("gptq")
        start = time.perf_counter()
        prepared = gptq.prepare(ckpt.model, tokens.train)
        prepare_s = time.perf_counter() - start
        rtn = compressors.get("rtn", granularity="channel", targets=list(gptq.targets))
        rtn_prepared = rtn.prepare(ckpt.model)
        for bits in (3.0, 4.0):
            start = time.perf_counter()
            gptq.apply(ckpt.model, prepared, bits)
            apply_s = time.perf_counter() - start
            gptq_loss = evaluate_loss(ckpt.model, tokens.eval)
            gptq.restore(prepared)
            with rtn.applied(ckpt.model, rtn_prepared, bits):
                rtn_loss = evaluate_loss(ckpt.model, tokens.eval)
            print(f"{ref} {bits:g} bits: base {base:.4f}, gptq {gptq_loss:.4f} (+{gptq_loss - base:.4f}), "
                  f"rtn per-channel {rtn_loss:.4f} (+{rtn_loss - base:.4f}); gptq prepare {prepare_s:.2f} s, "
                  f"per bit width {apply_s:.2f} s ({apply_s / prepare_s:.0%} of prepare)")


if __name__ == "__main__":
    main()
