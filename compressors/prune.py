"""Pruning: unstructured magnitude pruning, and attention-head pruning.

`magnitude`: zero the fraction s of target weights with the smallest |w|, per tensor (`scope:
layer`) or ranked across all targets (`scope: global`); the ranks are computed once in
`prepare`. Description length per tensor: the kept values in fp32 plus their positions, as a
bitmap or as indices, whichever is smaller, plus a 32-bit count; entropy-coded, the mask costs
n·H(density) bits.

`heads`: remove a fraction of all attention heads (GPT-NeoX layout: a head's query, key and
value rows in `query_key_value` and its columns of `dense` are zeroed, so its output is exactly
zero). Heads are chosen at random (seeded, as in the compressibility paper) or by importance,
|∂L/∂g_h| of a gate on each head's output averaged over calibration tokens (Michel et al. 2019),
least important first. `retrain_steps` > 0 fine-tunes the remaining weights briefly (Adam,
lr `retrain_lr`) on calibration tokens with pruned heads held at zero. Description length:
kept parameters of the attention layers in fp32 (everything, when retrained) plus a one-bit
mask per head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from compressors.registry import Compressor, DescriptionLength, Knob, Prepared, entropy_bits, register
from mdl_slt.errors import UserError


@register
@dataclass(frozen=True)
class Magnitude(Compressor):
    """Unstructured magnitude pruning, per tensor or global, sparsity as knob."""

    name: ClassVar[str] = "magnitude"
    knob: ClassVar[Knob] = Knob(name="sparsity", low=0.0, high=0.99, identity=0.0, more_compression="higher",
                                unit="", description="fraction of target weights set to zero", precision=0.005)
    scope: Literal["layer", "global"] = "layer"

    def __post_init__(self):
        if self.scope not in ("layer", "global"):
            raise UserError(f"magnitude: scope must be 'layer' or 'global', got {self.scope!r}")

    def prepare(self, model, calibration=None) -> Prepared:
        import torch

        prepared = super().prepare(model, calibration)
        if self.scope == "layer":
            for t in prepared.targets:
                order = torch.argsort(t.original.abs().reshape(-1), stable=True)
                prepared.cache[t.name] = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))
        else:
            flat = torch.cat([t.original.abs().reshape(-1) for t in prepared.targets])
            order = torch.argsort(flat, stable=True)
            ranks = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))
            for t, part in zip(prepared.targets, torch.split(ranks, [t.original.numel() for t in prepared.targets])):
                prepared.cache[t.name] = part
        return prepared

    def _cuts(self, prepared: Prepared, value: float) -> dict:
        """Per tensor, the rank below which weights are removed at sparsity `value`."""
        if self.scope == "layer":
            return {t.name: math.floor(value * t.original.numel()) for t in prepared.targets}
        total = math.floor(value * sum(t.original.numel() for t in prepared.targets))
        return {t.name: total for t in prepared.targets}

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        import torch

        cuts = self._cuts(prepared, value)
        with torch.no_grad():
            for t in prepared.targets:
                keep = (prepared.cache[t.name] >= cuts[t.name]).reshape(t.original.shape)
                t.param.copy_(t.original * keep)

    def description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        if value == self.knob.identity:
            return self.uncompressed_bits(prepared)
        payload = side = entropy = 0.0
        cuts = self._cuts(prepared, value)
        for t in prepared.targets:
            n = t.original.numel()
            kept = int((prepared.cache[t.name] >= cuts[t.name]).sum())
            positions = min(n, kept * max(1, math.ceil(math.log2(n))))
            payload += 32.0 * kept + positions
            side += 32.0
            entropy += 32.0 * kept + entropy_bits([kept, n - kept])
        return self._length(prepared, payload, side, entropy)


@register
@dataclass(frozen=True)
class Heads(Compressor):
    """Attention-head pruning (GPT-NeoX): random or by gradient importance, optional retraining."""

    name: ClassVar[str] = "heads"
    knob: ClassVar[Knob] = Knob(name="fraction", low=0.0, high=0.95, identity=0.0, more_compression="higher",
                                unit="", description="fraction of all attention heads removed", precision=0.01)
    targets: tuple[str, ...] = ("attention",)  # fixed by the head layout; see prepare
    selection: Literal["random", "importance"] = "random"
    retrain_steps: int = 0
    retrain_lr: float = 1e-4
    seed: int = 0
    calibration_batches: int = 4

    def __post_init__(self):
        if self.selection not in ("random", "importance"):
            raise UserError(f"heads: selection must be 'random' or 'importance', got {self.selection!r}")
        if self.retrain_steps < 0:
            raise UserError("heads: retrain_steps must be non-negative")
        if tuple(self.targets) != ("attention",):
            raise UserError("heads pruning always acts on attention heads: leave `targets` unset")

    def _layers(self, model):
        if getattr(getattr(model, "config", None), "model_type", None) != "gpt_neox":
            raise UserError("heads pruning supports GPT-NeoX models (Pythia and the embedded suite); "
                            f"this model is {getattr(getattr(model, 'config', None), 'model_type', 'unknown')!r}")
        return [layer.attention for layer in model.gpt_neox.layers]

    def total_heads(self, prepared: Prepared) -> int:
        return len(prepared.cache["order"])

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        """Fractions realisable as a whole number of heads."""
        if prepared is None:
            return value
        total = self.total_heads(prepared)
        return min(math.floor(self.knob.high * total), round(value * total)) / total

    def prepare(self, model, calibration=None) -> Prepared:
        import torch

        attentions = self._layers(model)
        if (self.selection == "importance" or self.retrain_steps) and calibration is None:
            raise UserError("heads pruning by importance or with retraining needs calibration tokens")
        heads = model.config.num_attention_heads
        if self.retrain_steps:  # retraining moves every weight
            chosen = list(model.named_parameters())
        else:  # a head lives in its query/key/value rows (weight and bias) and its output columns
            touched = {id(p) for a in attentions
                       for p in (a.query_key_value.weight, a.query_key_value.bias, a.dense.weight) if p is not None}
            chosen = [(n, p) for n, p in model.named_parameters() if id(p) in touched]
        prepared = self._snapshot(model, chosen, calibration)
        everyone = [(layer, h) for layer in range(len(attentions)) for h in range(heads)]
        if self.selection == "random":
            perm = torch.randperm(len(everyone), generator=torch.Generator().manual_seed(self.seed)).tolist()
            order = [everyone[i] for i in perm]
        else:
            scores = self._importance(model, attentions, heads, calibration)
            order = sorted(everyone, key=lambda lh: (float(scores[lh[0]][lh[1]]), lh))
        prepared.cache.update(order=order, model=model, attentions=attentions, heads=heads)
        return prepared

    def _importance(self, model, attentions, heads, calibration):
        """|∂L/∂g| for a gate g = 1 on each head's output, summed over calibration batches."""
        import torch

        from mdl_slt.lm_loss import token_nll

        gates = [torch.ones(heads, requires_grad=True) for _ in attentions]
        hooks = []
        for attention, gate in zip(attentions, gates):
            def scale(module, args, gate=gate):
                x = args[0]
                shaped = x.reshape(*x.shape[:-1], heads, -1) * gate[:, None]
                return (shaped.reshape(x.shape),)
            hooks.append(attention.dense.register_forward_pre_hook(scale))
        scores = [torch.zeros(heads) for _ in attentions]
        try:
            for batch in calibration[: 8 * self.calibration_batches].split(8):
                grads = torch.autograd.grad(token_nll(model, batch), gates)
                for s, g in zip(scores, grads):
                    s += g.abs()
        finally:
            for hook in hooks:
                hook.remove()
        return scores

    def _zero_heads(self, attentions, removed, heads) -> None:
        for layer, h in removed:
            attention = attentions[layer]
            d = attention.dense.in_features // heads
            rows = slice(h * 3 * d, (h + 1) * 3 * d)  # GPT-NeoX fuses q, k, v per head
            attention.query_key_value.weight[rows] = 0
            if attention.query_key_value.bias is not None:
                attention.query_key_value.bias[rows] = 0
            attention.dense.weight[:, h * d:(h + 1) * d] = 0

    def removed(self, prepared: Prepared, value: float):
        return prepared.cache["order"][: round(value * self.total_heads(prepared))]

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        import torch

        removed = self.removed(prepared, value)
        attentions, heads = prepared.cache["attentions"], prepared.cache["heads"]
        with torch.no_grad():
            self._zero_heads(attentions, removed, heads)
        if self.retrain_steps:
            self._retrain(prepared, removed)

    def _retrain(self, prepared: Prepared, removed) -> None:
        import torch

        from mdl_slt.lm_loss import token_nll

        model, attentions, heads = prepared.cache["model"], prepared.cache["attentions"], prepared.cache["heads"]
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.retrain_lr)
        order = torch.Generator().manual_seed(self.seed)
        for _ in range(self.retrain_steps):
            batch = prepared.calibration[torch.randint(len(prepared.calibration), (8,), generator=order)]
            optimizer.zero_grad(set_to_none=True)
            token_nll(model, batch).backward()
            optimizer.step()
            with torch.no_grad():
                self._zero_heads(attentions, removed, heads)

    def description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        if value == self.knob.identity:
            return self.uncompressed_bits(prepared)
        heads, attentions = prepared.cache["heads"], prepared.cache["attentions"]
        removed_params = 0
        for layer, _ in self.removed(prepared, value):
            a = attentions[layer]
            d = a.dense.in_features // heads
            removed_params += 3 * d * a.query_key_value.in_features + 3 * d * (a.query_key_value.bias is not None)
            removed_params += a.dense.out_features * d
        kept = sum(t.original.numel() for t in prepared.targets) - removed_params
        return self._length(prepared, payload=32.0 * kept, side=float(self.total_heads(prepared)))
