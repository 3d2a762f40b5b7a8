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
from typing import Annotated, ClassVar

from pydantic import Field

from compressors.calibration import snapshot_with_statistics
from compressors.gptq import GPTQ_TARGETS, data_aware_targets
from compressors.registry import Prepared, register
from compressors.sparsity import RankedPruner
from compressors.targets import Role


@register
@dataclass(frozen=True)
class Wanda(RankedPruner):
    """Wanda: prune the lowest |W|·‖X‖ of each output row (or of every M inputs), sparsity as knob."""

    name: ClassVar[str] = "wanda"
    targets: tuple[Role, ...] = GPTQ_TARGETS
    calibration_sequences: Annotated[int, Field(ge=1)] = 256

    def __post_init__(self):
        data_aware_targets(self.name, self.targets)

    def _unstructured_width(self, t) -> int:
        return t.matrix().shape[1]

    def prepare(self, model, calibration=None) -> Prepared:
        prepared, statistics = snapshot_with_statistics(self, model, calibration)
        self._rank(prepared, {t.name: t.matrix().float().abs() * statistics[t.name].column_norms.float()
                              for t in prepared.targets})
        return prepared
