"""The compressor contract and the registry of built-ins.

A compressor is a small frozen dataclass registered under one name, with one knob:
`prepare(model)` does the one-off work per checkpoint (snapshots the weights it will touch,
factorizations, Hessians), `apply(model, prepared, value)` writes the compressed weights in
place, `restore(prepared)` puts the originals back (no reloading between knob values), and
`description_length(prepared, value)` counts the compressed model's bits from the stored
originals, never touching the model. `targets` (roles) and `groups` (weight groups) choose what
it touches; every other parameter stays exact and is counted at 32 bits. `levels(prepared)` lists the realisable knob values of a
discrete knob, so a search evaluates each distinct compressed model once.

Options are the dataclass's fields; their types and ranges (`Annotated[..., Field(ge=1)]`) are
checked by pydantic when a compressor is built, so a bad value is one line naming the option,
the value and what is allowed.
"""

from __future__ import annotations

import difflib
import functools
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

from compressors import layout
from compressors.groups import role_of
from compressors.spill import Spill, spill_bytes
from compressors.targets import DEFAULT_TARGETS, Role, select_targets
from mdl_slt.errors import UserError, first_problem


@dataclass(frozen=True)
class Knob:
    """The one setting of a compressor: its range, which end compresses more, and its no-op value."""

    name: str
    low: float
    high: float
    identity: float  # the value that leaves the model untouched
    more_compression: Literal["lower", "higher"]
    unit: str
    description: str
    precision: float  # default resolution of the critical search on this knob

    @property
    def least(self) -> float:
        """The least compressing end of the searchable range."""
        return self.high if self.more_compression == "lower" else self.low

    @property
    def most(self) -> float:
        return self.low if self.more_compression == "lower" else self.high

    def compression(self, value: float) -> float:
        """An oriented coordinate: larger means more compression."""
        return -value if self.more_compression == "lower" else value

    def check(self, value: float) -> None:
        if value != self.identity and not (self.low <= value <= self.high):
            raise UserError(f"{self.name}={value} is outside its range [{self.low}, {self.high}] "
                            f"(or {self.identity} for no compression)")


@dataclass(frozen=True)
class DescriptionLength:
    """Bits to store the compressed model: payload + side information + untouched parameters.

    `entropy_payload_bits` is the payload entropy-coded with a real code (see compressors.coding:
    its own histogram paid for, never more than one bit per tensor above the nominal payload);
    float payloads are not entropy-coded. Untouched parameters count at 32 bits each. The rules
    for every format are in docs/description-lengths.md.
    """

    payload_bits: float
    side_bits: float
    untouched_bits: float
    entropy_payload_bits: float

    @property
    def total_bits(self) -> float:
        return self.payload_bits + self.side_bits + self.untouched_bits

    @property
    def entropy_total_bits(self) -> float:
        return self.entropy_payload_bits + self.side_bits + self.untouched_bits


@dataclass(frozen=True)
class Cost:
    """What one knob value costs a critical search."""

    evaluations: int  # held-out loss evaluations
    note: str = ""  # any other work, in words


@dataclass
class Target:
    name: str
    param: Any  # torch.nn.Parameter, compressed in place
    original: Any  # its uncompressed values (memory-mapped on the host for large models)
    module: Any = None  # the module owning it, for its layout (compressors.layout)

    @property
    def working(self):
        """The original on the parameter's device: one layer's transient copy when spilled."""
        return self.original.to(self.param.device)

    @property
    def shape(self) -> tuple[int, int]:
        """The (out × in) shape of the weight (see compressors.layout), without moving it to the device."""
        return tuple(layout.matrix(self.original, self.module).shape)

    def matrix(self):
        """The original as an (out × in) matrix on the parameter's device (see compressors.layout)."""
        return layout.matrix(self.working, self.module)

    def write(self, values) -> None:
        """Write (out × in) `values` into the parameter, whatever its stored layout."""
        import torch

        with torch.no_grad():
            layout.matrix(self.param, self.module).copy_(values.reshape(layout.matrix(self.param, self.module).shape))


@dataclass
class Prepared:
    targets: list[Target]
    untouched_params: int
    calibration: Any = None  # LongTensor of training tokens, for methods that need data
    cache: dict = field(default_factory=dict)
    spill: Spill | None = None  # where large per-checkpoint state lives (see compressors.spill)
    model: Any = None

    def keep(self, tensor):
        """Hold `tensor` for the life of this state: memory-mapped from disk when spilling."""
        return self.spill.put(tensor) if self.spill is not None else tensor

    @property
    def device(self):
        return self.targets[0].param.device


@dataclass(frozen=True)
class Compressor:
    """Base class: subclasses are frozen dataclasses setting `name`, `knob`, `apply` and
    `_description_length`; `targets` (roles, see compressors.targets) is an option of every one."""

    name: ClassVar[str]
    knob: ClassVar[Knob]
    extra: ClassVar[tuple[str, str] | None] = None  # (a package it needs beyond the core install, how to install it)
    targets: tuple[Role, ...] = DEFAULT_TARGETS
    groups: tuple[str, ...] | None = None  # only these weight groups (compressors.groups); the rest left exact

    def __post_init__(self):
        needs = self.missing()
        if needs is not None:
            raise UserError(f"the {self.name} compressor needs the {self.extra[0]} package: {needs}")

    @classmethod
    def missing(cls) -> str | None:
        """How to install the package this compressor needs beyond the core install, where it is
        missing; None where nothing is."""
        import importlib.util

        if cls.extra is None or importlib.util.find_spec(cls.extra[0]) is not None:
            return None
        return cls.extra[1]

    def acts_on(self, group: str) -> bool:
        """Whether restricted to weight group `group` alone this compressor has something to compress."""
        return role_of(group) in self.targets

    def snap(self, value: float, prepared: Prepared | None = None) -> float:
        """The knob value that stands for every value giving the same compressed model (continuous: itself)."""
        return value

    def levels(self, prepared: Prepared) -> list[float] | None:
        """The realisable knob values, least compressing first, for a discrete knob; None if continuous."""
        return None

    @property
    def num_draws(self) -> int:
        """Random draws whose losses are averaged per knob value (stochastic probes override)."""
        return 1

    def cost(self) -> Cost:
        return Cost(self.num_draws)

    def prepare(self, model, calibration=None) -> Prepared:
        """Snapshot the target parameters; subclasses add their one-off work per checkpoint."""
        return self._snapshot(model, select_targets(model, self.targets, self.groups), calibration)

    def _snapshot(self, model, chosen, calibration=None) -> Prepared:
        import torch

        if not chosen:
            where = f" and groups {list(self.groups)}" if self.groups is not None else ""
            raise UserError(f"{self.name}: the model has no parameters in targets {list(self.targets)}{where}; "
                            "choose other targets or groups")
        ids = {id(p) for _, p in chosen}
        untouched = sum(p.numel() for p in model.parameters() if id(p) not in ids)
        spill = Spill() if sum(4 * p.numel() for _, p in chosen) > spill_bytes() else None
        modules = layout.owners(model)
        with torch.no_grad():
            targets = [Target(n, p, spill.put(p) if spill else p.detach().clone(), modules.get(id(p)))
                       for n, p in chosen]
        return Prepared(targets, untouched, calibration, spill=spill, model=model)

    def apply(self, model, prepared: Prepared, value: float, draw: int = 0) -> None:
        """Write the compressed weights at a realisable `value` (never the identity) in place."""
        raise NotImplementedError

    def description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        """Bits of the model compressed at `value`, from the stored originals (the model is not
        touched); the uncompressed size at the identity."""
        self.knob.check(value)
        value = value if value == self.knob.identity else self.snap(value, prepared)
        if value == self.knob.identity:
            return self.uncompressed_bits(prepared)
        return self._description_length(prepared, value)

    def _description_length(self, prepared: Prepared, value: float) -> DescriptionLength:
        raise NotImplementedError

    def code(self, prepared: Prepared, value: float, draw: int = 0) -> bytes | None:
        """The bytes a decoder rebuilds the compressed targets from, for a compressor that writes a real
        file (the variational code); None for the others, whose lengths are counted, not written."""
        return None

    def restore(self, prepared: Prepared) -> None:
        import torch

        with torch.no_grad():
            for t in prepared.targets:
                t.param.copy_(t.original)

    @contextmanager
    def applied(self, model, prepared: Prepared, value: float, draw: int = 0):
        """Compress at `value` for the duration of the block; the model is restored afterwards."""
        self.knob.check(value)
        value = value if value == self.knob.identity else self.snap(value, prepared)
        try:
            if value != self.knob.identity:
                self.apply(model, prepared, value, draw)
            yield
        finally:
            self.restore(prepared)

    def uncompressed_bits(self, prepared: Prepared) -> DescriptionLength:
        stored = sum(t.original.numel() for t in prepared.targets) * 32.0
        return DescriptionLength(stored, 0.0, prepared.untouched_params * 32.0, stored)

    def _length(self, prepared: Prepared, payload: float, side: float, entropy: float | None = None) -> DescriptionLength:
        """A description length whose untouched parameters count at 32 bits."""
        return DescriptionLength(payload, side, 32.0 * prepared.untouched_params,
                                 payload if entropy is None else entropy)


_REGISTRY: dict[str, type[Compressor]] = {}


def register(cls: type[Compressor]) -> type[Compressor]:
    if cls.name in _REGISTRY:
        raise ValueError(f"compressor name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_REGISTRY)


def registered(name: str) -> type[Compressor]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, names(), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(names())}"
        raise UserError(f"unknown compressor {name!r}: {hint} (list them with `mdl-slt compressors`)")
    return _REGISTRY[name]


@functools.lru_cache(maxsize=None)
def _validator(cls):
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def get(name: str, **options) -> Compressor:
    """Build a registered compressor, its options checked by type and range; an unknown name or
    option, or a bad value, is one clear line."""
    from pydantic import ValidationError

    cls = registered(name)
    valid = {f.name for f in fields(cls)}
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (options: {', '.join(sorted(valid)) or 'none'})"
            raise UserError(f"compressor {name!r} has no option {key!r}{hint}")
    try:
        return _validator(cls).validate_python(options)
    except ValidationError as error:
        where, first = first_problem(error)
        option = where.split(".")[0] or "options"
        raise UserError(f"compressor {name!r}: option {option}={options.get(option, first.get('input'))!r} is not "
                        f"allowed: {first['msg'][0].lower()}{first['msg'][1:]}") from None
