"""The compression field's own sensitivity measures, beside λ̂: a registry like the compressors'.

Each measure is one class with a name, what it needs, what it costs and whether it is an estimate
(with a standard error); `measure(model, data, groups, ...)` returns its rows for the whole model
(group None) and for every weight group (compressors.groups), or for the whole model alone where no
layer study, allocation or HAWQ reads the groups' (`per_group`). Data and losses are those of
`estimate_llc`: token sequences (per-token cross-entropy), an (x, y) pair (½·squared error), or
any data with a `loss_fn(model, batch)`. Each is a task of its own, keyed by its settings, so
adding a measure measures only it.

    hessian_trace  tr(H) of the held-out loss by Hutchinson's estimator, E_v[vᵀHv] over Rademacher
                   probes v, each on a random batch of held-out sequences; per group the trace of its
                   diagonal block, E[v_gᵀ(Hv)_g] from the same probes (E[v_g v_hᵀ] = 0 for g ≠ h). Probes
                   are added until every standard error (sd/√probes) is within `target` of its trace
                   (the whole model's alone without `per_group`), or `max_probes`. Hessian-vector
                   products by double backward, attention eager (CPU flash attention has no double
                   backward). Away from an exact minimum, and on held-out text, vᵀHv can be
                   negative, and so can a trace: it is reported as measured.
    fisher         the empirical Fisher trace: the mean over held-out sequences of ‖∇ℓ_i(w*)‖², ℓ_i a
                   sequence's mean next-token NLL under its own text (the empirical labels, not the
                   model's); per group its part of each gradient
    outliers       max|w|/rms and excess kurtosis of the weights: per group, and for the model the
                   parameter-weighted mean over groups; no data
    hawq           HAWQ-V2's predicted loss increase of compressing group g at knob value b,
                   Ω_g(b) = ½·(tr(H_g)/d_g)·‖ΔW_g(b)‖² (the second-order term with the Hessian replaced
                   by its mean eigenvalue; HAWQ ranks by it without the ½). The task measures
                   ‖ΔW_g(b)‖² of each group in the whole model compressed at b, on a grid of the
                   compressor's knob; the analysis joins the Hessian trace
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator


@dataclass
class Row:
    quantity: str
    value: float
    se: float | None = None
    group: str | None = None  # None: the whole model
    knob: float | None = None
    detail: dict = field(default_factory=dict)


class Measure:
    """One sensitivity measure (module docstring)."""

    name: ClassVar[str]
    needs: ClassVar[str]  # what it computes from: the weights alone, gradients, Hessian-vector products
    estimate: ClassVar[bool]  # whether its value carries a standard error
    quantities: ClassVar[tuple[str, ...]]  # the columns it gives the analysis
    settings: ClassVar[tuple[str, ...]] = ()  # the fields of SensitivityConfig its result depends on
    data: ClassVar[bool] = True  # whether its result depends on the data settings

    def measure(self, model, data, groups, settings, entry=None, loss_fn=None, per_group=True) -> list[Row]:
        raise NotImplementedError


def _params(groups) -> list:
    return [p for g in groups for _, p in g.params]


def _split(values, groups) -> dict:
    """Per group the sum of per-parameter `values` (in the order of `_params`), and the total."""
    found, i = {}, 0
    for g in groups:
        found[g.name] = sum(float(values[i + j]) for j in range(len(g.params)))
        i += len(g.params)
    return found


def _rows(quantity: str, samples: dict, extra: dict) -> list[Row]:
    """Mean and standard error (sd/√n) of each group's samples, and of their total."""
    import numpy as np

    rows = []
    for group, values in samples.items():
        values = np.asarray(values, float)
        se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
        rows.append(Row(quantity, float(values.mean()), se, group, detail=extra))
    return rows


class HessianTrace(Measure):
    name = "hessian_trace"
    needs = "Hessian-vector products (double backward) on held-out batches"
    estimate = True
    quantities = ("hessian_trace",)
    settings = ("target", "min_probes", "max_probes", "batch_sequences", "seed")

    def measure(self, model, data, groups, settings, entry=None, loss_fn=None, per_group=True) -> list[Row]:
        import torch

        from mdl_slt.compute.loss import eager_attention
        from mdl_slt.llc.batches import data_size, default_loss, pick, to_device

        params = _params(groups)
        data = to_device(data, params[0].device)
        loss_fn = loss_fn or default_loss(data)
        gen = torch.Generator(device="cpu").manual_seed(settings.seed)
        samples: dict = {g.name: [] for g in groups} | {None: []}
        with eager_attention(model):
            for probe in range(settings.max_probes):
                picks = torch.randperm(data_size(data), generator=gen)[:settings.batch_sequences]
                grads = torch.autograd.grad(loss_fn(model, pick(data, picks.to(params[0].device))), params,
                                            create_graph=True)
                v = [torch.randint(0, 2, p.shape, generator=gen).to(p.device, p.dtype) * 2 - 1 for p in params]
                products = torch.autograd.grad(grads, params, grad_outputs=v)
                per_param = [float((a * b).sum()) for a, b in zip(v, products)]
                for name, value in _split(per_param, groups).items():
                    samples[name].append(value)
                samples[None].append(sum(per_param))
                judged = samples if per_group else {None: samples[None]}  # whose errors the probes must meet
                if probe + 1 >= settings.min_probes and _within(judged, settings.target):
                    break
        return _rows("hessian_trace", samples, {"probes": len(samples[None]), "batch": settings.batch_sequences})


def _within(samples: dict, target: float) -> bool:
    """Every standard error at most `target` of its mean's magnitude."""
    import numpy as np

    for values in samples.values():
        values = np.asarray(values, float)
        if values.std(ddof=1) / math.sqrt(len(values)) > target * abs(values.mean()):
            return False
    return True


class Fisher(Measure):
    name = "fisher"
    needs = "a gradient per held-out sequence"
    estimate = True
    quantities = ("fisher",)

    def measure(self, model, data, groups, settings, entry=None, loss_fn=None, per_group=True) -> list[Row]:
        import torch

        from mdl_slt.llc.batches import data_size, default_loss, pick, to_device

        params = _params(groups)
        data = to_device(data, params[0].device)
        loss_fn = loss_fn or default_loss(data)
        samples: dict = {g.name: [] for g in groups} | {None: []}
        for i in range(data_size(data)):
            grads = torch.autograd.grad(loss_fn(model, pick(data, slice(i, i + 1))), params)
            squares = [float((g * g).sum()) for g in grads]
            for name, value in _split(squares, groups).items():
                samples[name].append(value)
            samples[None].append(sum(squares))
        return _rows("fisher", samples, {"sequences": data_size(data)})


class Outliers(Measure):
    name = "outliers"
    needs = "the weights alone"
    estimate = False
    quantities = ("max_over_rms", "kurtosis")
    data = False

    def measure(self, model, data, groups, settings, entry=None, loss_fn=None, per_group=True) -> list[Row]:
        import torch

        rows, sizes = [], []
        for g in groups:
            w = torch.cat([p.detach().float().reshape(-1) for _, p in g.params])
            rms = float(w.pow(2).mean().sqrt())
            centred = w - w.mean()
            kurtosis = float(centred.pow(4).mean() / centred.pow(2).mean().pow(2) - 3)
            rows += [Row("max_over_rms", float(w.abs().max()) / rms, None, g.name), Row("kurtosis", kurtosis, None, g.name)]
            sizes.append(g.size)
        total = sum(sizes)
        for quantity in self.quantities:  # the model: the parameter-weighted mean over groups
            values = [r.value for r in rows if r.quantity == quantity]
            rows.append(Row(quantity, sum(v * d for v, d in zip(values, sizes)) / total, None, None))
        return rows


class Hawq(Measure):
    name = "hawq"
    needs = "the compressor's ‖ΔW_g‖² on a knob grid, and the Hessian trace"
    estimate = False
    quantities = ("perturbation",)
    settings = ("grid",)

    def measure(self, model, data, groups, settings, entry=None, loss_fn=None, per_group=True) -> list[Row]:
        method = entry.build()
        prepared = method.prepare(model, data)
        inside = {id(p): g.name for g in groups for _, p in g.params}
        rows = []
        for value in knob_grid(method, prepared, settings.grid):
            with method.applied(model, prepared, value):
                squares: dict = {}
                for t in prepared.targets:
                    if id(t.param) in inside:
                        delta = (t.param.detach().float() - t.original.to(t.param.device).float()).pow(2).sum()
                        squares[inside[id(t.param)]] = squares.get(inside[id(t.param)], 0.0) + float(delta)
            rows += [Row("perturbation", v, None, g, value) for g, v in squares.items()]
        return rows


def knob_grid(method, prepared, count: int) -> list[float]:
    """`count` knob values evenly spaced from the least to the most compressing end of the knob's
    range, each snapped to a realisable value, without repeats (the identity excluded)."""
    knob = method.knob
    found = []
    for i in range(count):
        value = method.snap(knob.least + (knob.most - knob.least) * i / max(1, count - 1), prepared)
        if value != knob.identity and value not in found:
            found.append(value)
    return found


MEASURES = {m.name: m for m in (HessianTrace, Fisher, Outliers, Hawq)}


class SensitivityConfig(BaseModel):
    """Sensitivity measures beside λ̂ (the hessian trace, HAWQ's Ω, the Fisher trace, weight outliers),
    per checkpoint and per weight group: which, on which checkpoints, with which settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    measures: list[str] = Field(default_factory=list, description=f"any of {', '.join(MEASURES)}")
    every: int = Field(1, ge=1, description="every k-th of each model's listed revisions (all when none are listed)")
    compressors: list[str] | None = Field(None, description="hawq: the compressor entries whose ‖ΔW‖² it measures; "
                                                            "default: every entry")
    target: float = Field(0.05, gt=0, description="hessian_trace: probes until every standard error is within this "
                                                  "share of its trace")
    min_probes: int = Field(10, ge=2)
    max_probes: int = Field(100, ge=2, description="hessian_trace: the most probes")
    batch_sequences: int = Field(16, ge=1, description="hessian_trace: held-out sequences per probe")
    grid: int = Field(24, ge=2, description="hawq: knob values from the least to the most compressing end")
    seed: int = 0

    @field_validator("measures")
    @classmethod
    def _known(cls, names):
        import difflib

        unknown = [n for n in names if n not in MEASURES]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(MEASURES), n=1)
            raise ValueError(f"unknown measure {unknown[0]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f": choose from {', '.join(MEASURES)}")
        if "hawq" in names and "hessian_trace" not in names:
            raise ValueError("hawq needs hessian_trace among the measures (Ω_g = ½·tr(H_g)/d_g·‖ΔW_g‖²)")
        return names


def measure(name: str, model, data, groups, settings: SensitivityConfig, entry=None,
            loss_fn=None, per_group: bool = True) -> tuple[list[Row], float]:
    """(the rows of measure `name`, the seconds it took): the whole model's, and each group's unless
    `per_group` is false (then an estimate stops when the whole model's error meets its target)."""
    start = time.perf_counter()
    rows = MEASURES[name]().measure(model, data, groups, settings, entry, loss_fn, per_group)
    return [r for r in rows if per_group or r.group is None], time.perf_counter() - start
