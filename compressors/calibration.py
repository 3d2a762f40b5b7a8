"""What the data-aware compressors learn from calibration tokens: each linear layer's inputs.

Per targeted weight W (out × in, see compressors.layout) with inputs X (N tokens × in):
    H = 2XᵀX/N              the layer-wise Hessian of ‖WX − ŴX‖² (gptq, sparsegpt, awq)
    a_j = mean over tokens of |X_j|   the activation magnitude per input (awq)
    ‖X_j‖₂ = √(N·H_jj/2)    the input norm per column (wanda)
`collect_statistics` runs the calibration tokens through the model block by block: once up to
the first decoder block, whose inputs are kept; then each block once on its inputs, its layers'
statistics handed on, its outputs the next block's inputs. So a collection costs one pass
through each block, and only one block's statistics are held at a time. Weights outside the
blocks (the unembedding) take one more full pass.

`input_statistics` collects once per model, targets and calibration tokens and keeps the result
on the model (memory-mapped when large, compressors.spill), so gptq, sparsegpt, wanda and awq in
one experiment share one collection per checkpoint. The kept statistics are used only while the
model's weights are those they were collected on (a checksum of every parameter is compared).
`DataAware` is their base class: the targets they can take, the check of them, and the start of
their `prepare`.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from compressors import layout
from compressors.registry import Compressor, Prepared
from compressors.spill import Spill, spill_bytes
from compressors.targets import Role
from mdl_slt.errors import UserError

BATCH = 16  # calibration sequences per forward pass
_KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → (key, statistics, spill)


@dataclass
class InputStatistics:
    hessian: object  # (in × in) float64, 2XᵀX/N
    abs_mean: object  # (in,) float64, mean |X_j|
    tokens: int  # N

    @property
    def column_norms(self):
        """‖X_j‖₂ over the calibration tokens."""
        return (self.hessian.diagonal() * self.tokens / 2).clamp_min(0).sqrt()


def inverse_hessian_factor(hessian, damp: float):
    """U = upper Cholesky factor of (H + damp·mean(diag H)·I)⁻¹; dead inputs get H_ii = 1."""
    import torch

    h = hessian.clone().double()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(len(h), dtype=h.dtype, device=h.device)
    try:
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
        return torch.linalg.cholesky(inverse, upper=True).float(), dead
    except RuntimeError:  # torch.linalg.LinAlgError: not positive definite
        raise UserError(f"a layer's input Hessian is not positive definite with damp={damp:g}: "
                        "raise `damp` (e.g. 0.1)") from None


def linear_targets(model, roles, groups=None) -> list[tuple[str, object]]:
    """The weights of linear layers (`nn.Linear`, GPT-2's Conv1D) in `roles` (and `groups`): the ones
    with inputs."""
    import torch

    from compressors.targets import select_targets

    modules = layout.owners(model)
    return [(n, p) for n, p in select_targets(model, roles, groups)
            if isinstance(modules.get(id(p)), torch.nn.Linear) or layout.is_transposed(modules.get(id(p)))]


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the inputs it wanted are caught."""


def block_inputs(model, first_block, calibration) -> list[tuple[tuple, dict]]:
    """The (args, kwargs) the first decoder block receives, per calibration batch: one pass that
    stops at that block."""
    import torch

    caught = []

    def catch(module, args, kwargs):
        caught.append((args, kwargs))
        raise _Stop

    hook = first_block.register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.inference_mode():
            for batch in calibration.split(BATCH):
                try:
                    model(input_ids=batch, use_cache=False)
                except _Stop:
                    pass
    finally:
        hook.remove()
    return caught


def _next_inputs(args, kwargs, output):
    hidden = output[0] if isinstance(output, (tuple, list)) else output
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def collect_statistics(model, targets, calibration, on_block) -> None:
    """Run the calibration tokens through the model block by block, calling
    `on_block({target name: InputStatistics})` after each block (and once more for targets
    outside the blocks)."""
    import torch

    blocks = layout.blocks(model)
    inside = {id(p): i for i, b in enumerate(blocks) for p in b.parameters()}
    per_block: dict[int, list] = {}
    for t in targets:
        per_block.setdefault(inside.get(id(t.param), -1), []).append(t)

    def hooked(chosen):
        sums, hooks = {}, []
        for t in chosen:
            width = t.shape[1]  # the layer's inputs
            zeros = dict(dtype=torch.float64, device=t.param.device)
            sums[t.name] = [torch.zeros(width, width, **zeros), torch.zeros(width, **zeros), 0]

            def add(module, args, name=t.name):
                x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
                sums[name][0] += x.T @ x
                sums[name][1] += x.abs().sum(dim=0)
                sums[name][2] += x.shape[0]

            hooks.append(t.module.register_forward_pre_hook(add))
        return sums, hooks

    def finish(sums, hooks):
        for hook in hooks:
            hook.remove()
        if sums:
            on_block({name: InputStatistics(2 * xx / n, absolute / n, n) for name, (xx, absolute, n) in sums.items()})

    last = max(per_block)
    inputs = block_inputs(model, blocks[0], calibration) if last >= 0 else []
    with torch.inference_mode():
        for i, block in enumerate(blocks[:last + 1]):
            sums, hooks = hooked(per_block.get(i, []))
            try:
                inputs = [_next_inputs(args, kwargs, block(*args, **kwargs)) for args, kwargs in inputs]
            finally:
                finish(sums, hooks)
        if -1 in per_block:  # weights outside the blocks: one full pass
            sums, hooks = hooked(per_block[-1])
            try:
                for batch in calibration.split(BATCH):
                    model(input_ids=batch, use_cache=False)
            finally:
                finish(sums, hooks)


def _checksum(model) -> tuple:
    """Every parameter's sum in float64: changes whenever a compressor's weights are in place."""
    import torch

    with torch.no_grad():
        return tuple(float(p.sum(dtype=torch.float64)) for p in model.parameters())


def input_statistics(model, targets, calibration) -> dict[str, InputStatistics]:
    """{target name: InputStatistics} from `calibration` (a LongTensor of token sequences),
    collected once per model, targets and tokens while the weights stay the same (see above)."""
    tokens = hashlib.sha256(calibration.detach().cpu().numpy().tobytes()).hexdigest()
    key = (tuple(t.name for t in targets), tuple(calibration.shape), tokens, _checksum(model))
    kept = _KEPT.get(model)
    if kept is not None and kept[0] == key:
        return kept[1]
    _KEPT.pop(model, None)
    spill = Spill() if sum(8 * t.shape[1] ** 2 for t in targets) > spill_bytes() else None  # float64 H
    found: dict[str, InputStatistics] = {}

    def keep(statistics):
        for name, s in statistics.items():
            found[name] = InputStatistics(spill.put(s.hessian) if spill else s.hessian, s.abs_mean, s.tokens)

    collect_statistics(model, targets, calibration, keep)
    _KEPT[model] = (key, found, spill)
    return found


@dataclass(frozen=True)
class DataAware(Compressor):
    """Base class of the compressors that read each layer's inputs (gptq, sparsegpt, wanda, awq):
    their targets are the linear layers of the roles given (never the embedding, norms or biases),
    and their statistics come from the first `calibration_sequences` calibration sequences."""

    targets: tuple[Role, ...] = ("attention", "mlp", "unembedding")
    calibration_sequences: Annotated[int, Field(ge=1)] = 256

    def __post_init__(self):
        if "embedding" in self.targets:
            raise UserError(f"{self.name} needs each layer's inputs, which an embedding does not have: drop "
                            "'embedding' from targets (rtn can quantize it)")
        if {"norm", "bias"} & set(self.targets):
            raise UserError(f"{self.name} compresses weight matrices: drop 'norm' and 'bias' from targets")

    def _with_statistics(self, model, calibration) -> tuple[Prepared, dict[str, InputStatistics]]:
        """(the prepared state of the linear targets, their input statistics): the start of `prepare`."""
        if calibration is None:
            raise UserError(f"{self.name} needs calibration tokens: it reads each layer's inputs")
        prepared = self._snapshot(model, linear_targets(model, self.targets, self.groups), calibration)
        return prepared, input_statistics(model, prepared.targets, calibration[:self.calibration_sequences])
