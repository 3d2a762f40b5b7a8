"""fp32 against bf16 autocast, side by side on trained checkpoints: the base loss, the critical bits
of `rtn` at ε = 0.02, 0.05, 0.1, and λ̂. bf16 autocast runs its matrix products on bf16 inputs with
fp32 accumulation, as on a GPU; on this CPU it measures what the rounding does, not the speed.
The result decides the defaults: `critical.numerics` and `llc.numerics` (README).

    python bench/numerics.py [--home DIR]
"""

from __future__ import annotations

import argparse

import torch

import compressors
from mdl_slt.compute.loss import evaluate_loss
from mdl_slt.data.tokens import DataConfig, token_sets
from mdl_slt.home.paths import resolve_home
from mdl_slt.llc.config import LLCConfig
from mdl_slt.llc.sampling import estimate_llc
from mdl_slt.measures.critical import find_critical
from mdl_slt.models.checkpoints import load_checkpoint

REFS = ["mdl-slt/micro-pythia-230k@step1000", "mdl-slt/micro-pythia-530k@step1000"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    home = resolve_home(args.home)
    for ref in REFS:
        ckpt = load_checkpoint(ref, home)
        tokens = token_sets(home, ckpt.tokenizer, DataConfig(context_length=64))
        method = compressors.get("rtn")
        prepared = method.prepare(ckpt.model)
        found = {}
        for numerics in ("fp32", "bf16"):
            base = evaluate_loss(ckpt.model, tokens.eval, numerics=numerics)

            def loss_at(value):
                with method.applied(ckpt.model, prepared, value):
                    return evaluate_loss(ckpt.model, tokens.eval, numerics=numerics)

            search = find_critical(loss_at, base, [0.02, 0.05, 0.1], method.knob, method.knob.precision,
                                   lambda v: method.snap(v, prepared), method.levels(prepared))
            llc = estimate_llc(ckpt.model, tokens.train, LLCConfig(step_size=3e-4, batch_size=8, numerics=numerics))
            found[numerics] = (base, search, llc)
        (b32, s32, l32), (b16, s16, l16) = found["fp32"], found["bf16"]
        print(f"{ref}: base loss fp32 {b32:.5f}, bf16 {b16:.5f} (Δ {b16 - b32:+.5f} nats); "
              f"λ̂ fp32 {l32.llc_mean:.2f} ± {l32.llc_std_error:.2f}, bf16 {l16.llc_mean:.2f} ± {l16.llc_std_error:.2f}")
        for p32, p16 in zip(s32.points, s16.points):
            print(f"  ε={p32.epsilon:g}: critical bits fp32 {p32.value:.3f} (interpolated {p32.interpolated:.3f}), "
                  f"bf16 {p16.value:.3f} ({p16.interpolated:.3f}); Δ interpolated {p16.interpolated - p32.interpolated:+.3f}")


if __name__ == "__main__":
    main()
