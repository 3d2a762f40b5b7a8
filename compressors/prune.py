"""Pruning: unstructured magnitude pruning, and attention-head pruning.

`magnitude`: zero the fraction s of target weights with the smallest |w|, per tensor (`scope:
layer`), ranked across all targets (`scope: global`), or in every group of M inputs (`pattern:
n:4`, `n:8`); the ranks are computed once in `prepare`, and s snaps to the least value removing
the same weights. Patterns and description lengths: compressors.sparsity.

`heads`: remove a fraction of all attention heads, in any multi-head attention the layout
module reads (compressors.layout). A head is a query head: removing it zeroes its slice of the
output projection's input, so its output is exactly zero. Under grouped-query attention a
key/value head goes when all the query heads it serves are gone. Heads are chosen at random
(seeded, as in the compressibility paper) or by importance, |∂L/∂g_h| of a gate on each head's
output averaged over calibration tokens (Michel et al. 2019), least important first.
`retrain_steps` > 0 fine-tunes the remaining weights briefly (Adam, lr `retrain_lr`) on
calibration tokens with pruned heads held at zero. Description length: the attention weights
that remain in fp32 (everything, when retrained) plus a one-bit mask per head; a removed head's
query rows (and a removed key/value head's key and value rows) are not stored, except where
queries and keys are normalised across heads (OLMo-2), which keeps them shaping the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from compressors import layout
from compressors.registry import Compressor, Cost, DescriptionLength, Knob, Prepared, register
from compressors.sparsity import RankedPruner, ranks_within, removed
from compressors.targets import Role, select_targets
from mdl_slt.errors import UserError


@register
@dataclass(frozen=True)
class Magnitude(RankedPruner):
    """Magnitude pruning, per tensor, global or N:M, sparsity as knob."""

    name: ClassVar[str] = "magnitude"
    scope: Literal["layer", "global"] = "layer"

    def __post_init__(self):
        if self.scope == "global" and self.pattern != "unstructured":
            raise UserError("magnitude: an n:M pattern prunes within groups of M, not globally: "
                            "use scope 'layer' with it")

    def _unstructured_width(self, t) -> int:
        return t.original.numel()

    def prepare(self, model, calibration=None) -> Prepared:
        import torch

        prepared = super().prepare(model, calibration)
        scores = {t.name: t.matrix().abs() for t in prepared.targets}
        if self.scope == "layer":
            self._rank(prepared, scores)
            return prepared
        joined = torch.cat([s.reshape(-1) for s in scores.values()])
        ranks = ranks_within(joined, len(joined))
        for t, part in zip(prepared.targets, torch.split(ranks, [s.numel() for s in scores.values()])):
            prepared.cache[t.name] = part.reshape(scores[t.name].shape)
        return prepared

    def _group_sizes(self, prepared: Prepared) -> list[int]:
        if self.scope == "layer":
            return super()._group_sizes(prepared)
        return [sum(t.original.numel() for t in prepared.targets)]

    def _cuts(self, prepared: Prepared, value: float) -> dict:
        if self.scope == "layer":
            return super()._cuts(prepared, value)
        total = removed(value, self._group_sizes(prepared)[0])
        return {t.name: total for t in prepared.targets}


@register
@dataclass(frozen=True)
class Heads(Compressor):
    """Attention-head pruning (any multi-head attention): random or by gradient importance, optional retraining."""

    name: ClassVar[str] = "heads"
    knob: ClassVar[Knob] = Knob(name="fraction", low=0.0, high=0.95, identity=0.0, more_compression="higher",
                                unit="of the heads removed", description="fraction of all attention (query) heads removed",
                                precision=0.01)
    targets: tuple[Role, ...] = ("attention",)  # fixed by the head layout; see prepare
    selection: Literal["random", "importance"] = "random"
    retrain_steps: Annotated[int, Field(ge=0)] = 0
    retrain_lr: Annotated[float, Field(gt=0)] = 1e-4
    seed: int = 0
    calibration_batches: Annotated[int, Field(ge=1)] = 4

    def __post_init__(self):
        if tuple(self.targets) != ("attention",):
            raise UserError("heads pruning always acts on attention heads: leave `targets` unset")

    def cost(self) -> Cost:
        return Cost(1, f"{self.retrain_steps} retraining steps of 8 sequences" if self.retrain_steps else "")

    def total_heads(self, prepared: Prepared) -> int:
        return len(prepared.cache["order"])

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        """Fractions realisable as a whole number of heads."""
        if prepared is None:
            return value
        total = self.total_heads(prepared)
        return min(math.floor(self.knob.high * total), round(value * total)) / total

    def levels(self, prepared: Prepared) -> list[float]:
        total = self.total_heads(prepared)
        return [k / total for k in range(math.floor(self.knob.high * total) + 1)]

    def acts_on(self, group: str) -> bool:
        """A block's heads stand for its attention output group (a head's output columns carry all it
        adds; its query, key and value rows go with them)."""
        return group.endswith(".attn.out")

    def _blocks(self, count: int) -> list[int]:
        """The blocks whose heads may go: all, or those with an attention group among `groups`."""
        if self.groups is None:
            return list(range(count))
        chosen = [i for i in range(count) if {f"block{i}.attn.in", f"block{i}.attn.out"} & set(self.groups)]
        if not chosen:
            raise UserError(f"heads prunes attention heads, but groups {list(self.groups)} name no attention group "
                            "(block<i>.attn.in or .attn.out)")
        return chosen

    def prepare(self, model, calibration=None) -> Prepared:
        import torch

        attentions = layout.attentions(model)
        blocks = self._blocks(len(attentions))
        if (self.selection == "importance" or self.retrain_steps) and calibration is None:
            raise UserError("heads pruning by importance or with retraining needs calibration tokens")
        if self.retrain_steps:  # retraining moves every weight (of the groups, when restricted to some)
            chosen = list(model.named_parameters()) if self.groups is None else select_targets(
                model, ("attention", "mlp", "embedding", "unembedding"), self.groups)
        else:  # a head lives in its query/key/value rows (weights and biases) and its output columns
            touched = set()
            for a in (attentions[i] for i in blocks):
                touched.add(id(a.output.weight))
                touched.update(id(p) for m in a.row_matrices() for p in (m.weight, m.bias) if p is not None)
            chosen = [(n, p) for n, p in model.named_parameters() if id(p) in touched]
        prepared = self._snapshot(model, chosen, calibration)
        everyone = [(layer, h) for layer in blocks for h in range(attentions[layer].heads)]
        if self.selection == "random":
            gen = torch.Generator(device="cpu").manual_seed(self.seed)
            order = [everyone[i] for i in torch.randperm(len(everyone), generator=gen, device="cpu").tolist()]
        else:
            scores = self._importance(model, attentions, calibration)
            order = sorted(everyone, key=lambda lh: (float(scores[lh[0]][lh[1]]), lh))
        prepared.cache.update(order=order, attentions=attentions)
        return prepared

    def _importance(self, model, attentions, calibration):
        """|∂L/∂g| for a gate g = 1 on each head's output, summed over calibration batches."""
        import torch

        from mdl_slt.compute.loss import token_nll

        device = calibration.device
        gates = [torch.ones(a.heads, requires_grad=True, device=device) for a in attentions]
        hooks = []
        for attention, gate in zip(attentions, gates):
            def scale(module, args, gate=gate, heads=attention.heads):
                x = args[0]
                shaped = x.reshape(*x.shape[:-1], heads, -1) * gate[:, None]
                return (shaped.reshape(x.shape), *args[1:])
            hooks.append(attention.output.register_forward_pre_hook(scale))
        scores = [torch.zeros(a.heads, device=device) for a in attentions]
        try:
            for batch in calibration[: 8 * self.calibration_batches].split(8):
                grads = torch.autograd.grad(token_nll(model, batch), gates)
                for s, g in zip(scores, grads):
                    s += g.abs()
        finally:
            for hook in hooks:
                hook.remove()
        return [s.cpu() for s in scores]

    def removed(self, prepared: Prepared, value: float):
        """(layer, query head) pairs removed at `value`, in removal order."""
        return prepared.cache["order"][: round(value * self.total_heads(prepared))]

    def _zero_heads(self, attentions, removed) -> None:
        import torch

        with torch.no_grad():
            for layer, h in removed:
                attention = attentions[layer]
                layout.matrix(attention.output.weight, attention.output)[:, attention.columns(h)] = 0

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        removed = self.removed(prepared, value)
        self._zero_heads(prepared.cache["attentions"], removed)
        if self.retrain_steps:
            self._retrain(prepared, removed)

    def _retrain(self, prepared: Prepared, removed) -> None:
        import torch

        from mdl_slt.compute.loss import token_nll

        model, attentions = prepared.model, prepared.cache["attentions"]
        params = [t.param for t in prepared.targets if t.param.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.retrain_lr)
        order = torch.Generator(device="cpu").manual_seed(self.seed)
        for _ in range(self.retrain_steps):
            picks = torch.randint(len(prepared.calibration), (8,), generator=order, device="cpu")
            optimizer.zero_grad(set_to_none=True)
            token_nll(model, prepared.calibration[picks.to(prepared.calibration.device)]).backward()
            optimizer.step()
            self._zero_heads(attentions, removed)
        optimizer.zero_grad(set_to_none=True)

    def _removed_parameters(self, prepared: Prepared, value: float) -> int:
        """Weights (and biases) no longer stored once the heads of `value` are gone."""
        attentions = prepared.cache["attentions"]
        gone: dict[int, set[int]] = {}
        for layer, h in self.removed(prepared, value):
            gone.setdefault(layer, set()).add(h)
        count = 0
        for layer, heads in gone.items():
            a = attentions[layer]
            count += len(heads) * layout.matrix(a.output.weight, a.output).shape[0] * a.head_dim
            kv_gone = [g for g in range(a.kv_heads) if set(range(g * a.group, (g + 1) * a.group)) <= heads]
            parts = [("v", g) for g in kv_gone]
            if not a.shared_norm:  # else the query and key rows still shape the other heads
                parts += [("q", h) for h in heads] + [("k", g) for g in kv_gone]
            for part, head in parts:
                module, rows = a.rows(part, head)
                count += (rows.stop - rows.start) * (layout.matrix(module.weight, module).shape[1]
                                                     + (module.bias is not None))
        return count

    def _description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        kept = sum(t.original.numel() for t in prepared.targets) - self._removed_parameters(prepared, value)
        return self._length(prepared, payload=32.0 * kept, side=float(self.total_heads(prepared)))
