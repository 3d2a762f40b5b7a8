"""Seconds to build the embedded suite's three sizes: the parallel build beside one process and its floor.

`mdl-slt suite build` trains each run in a process of its own (`--workers`, longest first, one
torch thread each). It cannot finish before its longest run does: that run's own time is the
floor of the build on any number of cores. This prints the parallel build's wall time (the
corpus, the BPE tokenizer and the tokens included), then each run trained alone in this process,
their sum (the build in one process) and the longest (the floor), with the ratios.

    python bench/suite_build.py [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import torch

    from mdl_slt.data.corpus import load_corpus
    from mdl_slt.data.tokenizer import train_bpe
    from mdl_slt.home.paths import hub_cache
    from mdl_slt.models.spec import SuiteSpec
    from mdl_slt.models.suite import build_suite, train_model

    torch.set_num_threads(1)
    spec = SuiteSpec()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        start = time.perf_counter()
        build_suite(home, spec, workers=args.workers)
        parallel = time.perf_counter() - start
        print(f"build of {len(spec.models)} sizes, {args.workers} workers: {parallel:.1f} s")

        text = load_corpus(home).train
        tokens = torch.tensor(train_bpe(text, spec.vocab_size)(text)["input_ids"], dtype=torch.long)  # as the build's
        alone = {}
        for model in spec.models:
            start = time.perf_counter()
            train_model(spec, model, tokens, home / "suite-tokenizer", hub_cache(Path(tmp) / "again"))
            alone[model.name] = time.perf_counter() - start
            print(f"  {model.name} alone: {alone[model.name]:.1f} s")
    total, floor = sum(alone.values()), max(alone.values())
    print(f"one process (sum): {total:.1f} s; parallel build: {parallel:.1f} s = {total / parallel:.2f}x faster")
    print(f"floor (longest run, {max(alone, key=alone.get)}): {floor:.1f} s; the build is {parallel / floor:.2f}x it")


if __name__ == "__main__":
    main()
