"""Wanda (Sun et al. 2023): pruning by weight times input norm, no weight update.

Each weight of a linear layer (out × in, see compressors.layout) is scored S_ij = |W_ij|·‖X_j‖₂,
‖X_j‖₂ the norm of input j over the calibration tokens (compressors.calibration, the collection
gptq, sparsegpt and awq share); the lowest scores of each output row go (the paper's
per-output comparison group), or of every M inputs of a row under `pattern: n:M`. Targets are
the weights of linear layers in the chosen roles, as for gptq. Description length: that of
magnitude pruning (compressors.sparsity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from compressors.calibration import DataAware
from compressors.registry import Prepared, register
from compressors.sparsity import RankedPruner


@register
@dataclass(frozen=True)
class Wanda(DataAware, RankedPruner):
    """Wanda: prune the lowest |W|·‖X‖ of each output row (or of every M inputs), sparsity as knob."""

    name: ClassVar[str] = "wanda"

    def _unstructured_width(self, t) -> int:
        return t.shape[1]

    def prepare(self, model, calibration=None) -> Prepared:
        prepared, statistics = self._with_statistics(model, calibration)
        self._rank(prepared, {t.name: t.matrix().float().abs() * statistics[t.name].column_norms.float()
                              for t in prepared.targets})
        return prepared
