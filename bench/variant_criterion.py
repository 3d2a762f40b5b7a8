"""Which training variants let λ̂ and the held-out loss part? The criterion of
`mdl_slt.analysis.parting`, from a store of λ̂ and base losses (experiments/variants.yaml).

    python bench/variant_criterion.py reports/variants.sqlite [--reference mdl-slt/micro-pythia-90k]
"""

import argparse

from mdl_slt.analysis.parting import MAX_CORRELATION, checkpoints, criterion, parting_pairs
from mdl_slt.store.database import open_existing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--reference", default="mdl-slt/micro-pythia-90k")
    args = parser.parse_args()
    with open_existing(args.store) as store:
        table = checkpoints(store.table())
    print("run                              in window  loss range       λ̂ range        r(λ̂,L) with ref  "
          "parting pairs  max |z|  chosen")
    runs, pool = criterion(table, args.reference)
    for run, part in table[table.inside].groupby("model", sort=False):
        row = runs[runs.run == run].iloc[0] if run in set(runs.run) else None
        print(f"{run.removeprefix('mdl-slt/'):32s} {len(part):9d}  {part.base_loss.min():.3f}–{part.base_loss.max():.3f}  "
              f"{part.llc_mean.min():6.2f}–{part.llc_mean.max():6.2f}  "
              + ("reference" if row is None else
                 f"{row.r_with_reference:+16.3f}  {row.parting_pairs:13d}  {row.max_abs_z:7.1f}  {'yes' if row.chosen else 'no'}"))
    print(f"\nchosen pool: {', '.join(r.removeprefix('mdl-slt/') for r in pool['runs'])}; {pool['checkpoints']} checkpoints "
          f"in the window; r(λ̂, L) = {pool['r']:+.3f}; |r| ≤ {MAX_CORRELATION}: {'yes' if pool['meets'] else 'no'}")
    inside = table[table.inside]
    best = parting_pairs(inside[inside.model == args.reference], inside[inside.model != args.reference])
    for pair in best.reindex(best.z.abs().sort_values(ascending=False).index).head(5).itertuples():
        print(f"  {pair.run_a.removeprefix('mdl-slt/')}@{pair.step_a} vs {pair.run_b.removeprefix('mdl-slt/')}@{pair.step_b}: "
              f"ΔL {pair.loss_gap:+.3f} nats, Δλ̂ {pair.llc_gap:+.2f} ({pair.z:+.1f} se)")


if __name__ == "__main__":
    main()
