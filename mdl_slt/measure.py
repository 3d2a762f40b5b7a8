"""The measurements one checkpoint gets: base loss, LLC, critical compression per compressor.

Shared by the batch runner and the one-shot CLI commands, so both measure identically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mdl_slt.checkpoints import Checkpoint
from mdl_slt.critical import CriticalSearch, find_critical
from mdl_slt.data import TokenSets
from mdl_slt.experiment import CriticalConfig
from mdl_slt.lm_loss import evaluate_loss
from mdl_slt.sgld import LLCConfig, LLCResult, estimate_llc


def measure_llc(checkpoint: Checkpoint, tokens: TokenSets, config: LLCConfig) -> LLCResult:
    return estimate_llc(checkpoint.model, tokens.train, config)


@dataclass
class CurvePoint:
    knob: float
    loss: float
    bits: float
    bits_entropy: float


@dataclass
class CriticalMeasurement:
    compressor: str
    knob_name: str
    search: CriticalSearch
    curve: list[CurvePoint]  # every evaluated knob value, least compressed first
    uncompressed_bits: float
    elapsed_s: float

    def bits_at(self, value: float) -> CurvePoint:
        return next(p for p in self.curve if p.knob == value)


def measure_critical(checkpoint: Checkpoint, tokens: TokenSets, compressor, base_loss: float,
                     config: CriticalConfig) -> CriticalMeasurement:
    """Critical compression of `checkpoint` under `compressor` at every ε of `config`."""
    start = time.perf_counter()
    model = checkpoint.model
    prepared = compressor.prepare(model, tokens.train.to(next(model.parameters()).device))

    def loss_at(value: float) -> float:
        """Held-out loss at `value`, averaged over the method's random draws (1 for most)."""
        losses = []
        for draw in range(compressor.num_draws):
            with compressor.applied(model, prepared, value, draw):
                losses.append(evaluate_loss(model, tokens.eval))
        return sum(losses) / len(losses)

    search = find_critical(loss_at, base_loss, config.epsilons, compressor.knob, config.precision_for(compressor.knob),
                           lambda v: compressor.snap(v, prepared))
    curve = []
    for value, loss in sorted(search.evaluations.items(), key=lambda kv: compressor.knob.compression(kv[0])):
        length = compressor.description_length(prepared, value)
        curve.append(CurvePoint(value, loss, length.total_bits, length.entropy_total_bits))
    return CriticalMeasurement(compressor.name, compressor.knob.name, search, curve,
                               compressor.uncompressed_bits(prepared).total_bits, time.perf_counter() - start)
