"""The chain runners: C chains advanced block by block, writing every step's loss into a trace.

`Vectorized` runs all chains at once through `torch.func.vmap` over stacked parameters (for plain
torch modules, and transformers models on CUDA with eager attention); `Sequential` runs one chain
after another on the model's own parameters, keeping each chain's state between blocks. Either
way each chain has its own seeded stream, so the same seed gives the same chains.
"""

from __future__ import annotations

from mdl_slt.errors import UserError
from mdl_slt.llc.batches import data_size, minibatches, pick
from mdl_slt.llc.health import CHECK_EVERY, Health
from mdl_slt.llc.samplers import SAMPLERS


def generators(config, device):
    """One seeded stream per chain, on the parameters' device (minibatch picks and noise)."""
    import torch

    return [torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + c) for c in range(config.num_chains)]


def loss_module(model, loss_fn):
    """`loss_fn(model, batch)` as a module holding the model as `model`, for `functional_call`
    with parameters named `model.<name>`."""
    import torch

    class LossOf(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch):
            return loss_fn(self.model, batch)

    return LossOf()


class Vectorized:
    """All chains at once: vmap of grad-and-value over stacked parameters and per-chain batches."""

    def __init__(self, model, names, anchor, data, loss_fn, config, n_beta, curvature=None):
        import torch
        from torch.func import functional_call, grad_and_value, vmap

        wrapper = loss_module(model, loss_fn)

        def loss_single(params, batch):
            return functional_call(wrapper, {f"model.{n}": p for n, p in zip(names, params)}, (batch,))

        self.step_fn = vmap(grad_and_value(loss_single), in_dims=(0, 0), randomness="error")
        if config.compile:  # compiled once per model, loss and chains; later estimates on it reuse it
            cache = model.__dict__.setdefault("_mdl_slt_compiled", {})
            key = (loss_fn, tuple(names), config.num_chains)
            if key not in cache:
                cache[key] = torch.compile(self.step_fn)
            self.step_fn = cache[key]
        self.params = [a.expand(config.num_chains, *a.shape[1:]).clone() for a in anchor]
        self.anchor, self.data, self.config = anchor, data, config
        self.update = SAMPLERS[config.sampler](anchor, config, n_beta, curvature)
        self.gens = generators(config, anchor[0].device)

    def advance(self, start: int, stop: int, traces, health: Health) -> None:
        import torch

        size = data_size(self.data)
        picks = torch.stack([minibatches(size, self.config.batch_size, stop - start, g) for g in self.gens],
                            dim=1)  # (steps, chains, batch): a block's minibatches drawn at once
        whole = pick(self.data, picks[0]) if self.config.batch_size >= size else None  # the same at every step
        for t in range(start, stop):
            grads, loss = self.step_fn(self.params, whole if whole is not None else pick(self.data, picks[t - start]))
            traces[:, t] = loss.detach()
            self.update.step(self.params, list(grads), self.gens)
            if (t + 1) % CHECK_EVERY == 0:
                for c in health.check(traces, t + 1, range(self.config.num_chains)):
                    with torch.no_grad():  # a stopped chain is held at w*, its slot idle until the run ends
                        for p, a in zip(self.params, self.anchor):
                            p[c].copy_(a[0])
                if not health.any_active(self.config.num_chains):
                    return


_COMPILED: dict = {}  # (architecture, sampled parameters, loss, device) → compiled gradient, for this process


def compiled_gradient(model, names: list[str], loss_fn):
    """(∇ of the loss at the sampled parameters, the loss) as a function of (sampled, the other
    parameters and buffers, batch), torch.compile'd once per process for each architecture (class
    and configuration), sampled parameters, loss and device: every checkpoint and chain of that
    architecture reuses it, its tensors passed in, never baked in."""
    import functools
    import json

    import torch
    from torch.func import functional_call, grad_and_value

    config = getattr(model, "config", None)
    shape = json.dumps({k: v for k, v in config.to_dict().items()
                        if k not in ("_name_or_path", "transformers_version", "_commit_hash")},
                       sort_keys=True, default=str) if config is not None else id(model)
    loss = (loss_fn.func, tuple(sorted(loss_fn.keywords.items()))) if isinstance(loss_fn, functools.partial) else loss_fn
    key = (type(model).__qualname__, shape, tuple(names), loss, str(next(model.parameters()).device))
    if key not in _COMPILED:
        import copy

        template = copy.deepcopy(model)  # its own tensors are replaced at every call; its code is traced
        if hasattr(template, "set_attn_implementation") and getattr(config, "_attn_implementation", None) != "eager":
            template.set_attn_implementation("eager")  # fused CPU attention has no compilable backward

        wrapper = loss_module(template, loss_fn)

        def value(sampled, rest, batch):
            return functional_call(wrapper, {**rest, **sampled}, (batch,))

        _COMPILED[key] = torch.compile(grad_and_value(value))
    return _COMPILED[key]


class Sequential:
    """One chain after another on the model's own parameters; between blocks each chain's
    parameters (and RMSProp moments or BAOAB momenta) are kept in host memory, so chains can be
    extended block by block while the device holds one chain's state at a time. With `compiled`,
    each step's gradient comes from `compiled_gradient`."""

    def __init__(self, model, params, anchor, data, loss_fn, config, n_beta, compiled: bool = False,
                 curvature=None):
        self.model, self.params, self.anchor, self.data, self.loss_fn = model, params, anchor, data, loss_fn
        self.config = config
        self.update = SAMPLERS[config.sampler]([a[0] for a in anchor], config, n_beta,
                                               None if curvature is None else [c[0] for c in curvature])
        self.gens = generators(config, anchor[0].device)
        self.states: list = [None] * config.num_chains  # (parameters, sampler state, step count) per chain
        self.gradient = None
        if compiled:
            named = dict(model.named_parameters())
            self.names = [n for n, p in named.items() if any(p is q for q in params)]
            self.gradient = compiled_gradient(model, self.names, loss_fn)
            self.rest = {f"model.{n}": t.detach() for n, t in [*model.named_parameters(), *model.named_buffers()]
                         if n not in self.names}
            self.sampled = {f"model.{n}": named[n].detach() for n in self.names}  # views the update writes into

    def _gradient(self, batch):
        """(loss, gradients in the order of the sampled parameters)."""
        import torch

        if self.gradient is None:
            loss = self.loss_fn(self.model, batch)
            return loss, torch.autograd.grad(loss, self.params)
        grads, loss = self.gradient(self.sampled, self.rest, batch)
        return loss, [grads[f"model.{n}"] for n in self.names]

    def advance(self, start: int, stop: int, traces, health: Health) -> None:
        import torch

        size = data_size(self.data)
        views = [p.unsqueeze(0) for p in self.params]  # (1, ...) views: the update writes into the model
        for chain, gen in enumerate(self.gens):
            if not health.active(chain):
                continue
            state = self.states[chain]
            with torch.no_grad():
                for p, saved in zip(self.params, state[0] if state else [a[0] for a in self.anchor]):
                    p.copy_(saved)
            aux = None if not state or state[1] is None else [m.to(self.params[0].device) for m in state[1]]
            self.update.aux, self.update.t = aux, state[2] if state else 0
            picks = minibatches(size, self.config.batch_size, stop - start, gen)
            for t in range(start, stop):
                loss, grads = self._gradient(pick(self.data, picks[t - start]))
                traces[chain, t] = loss.detach()
                self.update.step(views, [g.unsqueeze(0) for g in grads], [gen])
                if (t + 1) % CHECK_EVERY == 0 and health.check(traces, t + 1, [chain]):
                    break
            if health.active(chain):  # kept in host memory: the device holds one chain at a time
                aux = self.update.aux
                self.states[chain] = ([p.detach().to("cpu", copy=True) for p in self.params],
                                      None if aux is None else [m.to("cpu", copy=True) for m in aux], self.update.t)
            else:
                self.states[chain] = None


def checkpointing(model, on: bool) -> None:
    """Switch activation (gradient) checkpointing on, in train mode, which transformers requires
    for it, or off, back to eval mode. Only for models whose dropout is zero, as Pythia's is:
    train mode must not change the loss. Newer transformers name it `activation_checkpointing`."""
    new = hasattr(model, "activation_checkpointing_enable")
    if not on:
        if getattr(model, "is_activation_checkpointing" if new else "is_gradient_checkpointing", False):
            model.activation_checkpointing_disable() if new else model.gradient_checkpointing_disable()
            if hasattr(model, "disable_input_require_grads"):  # enabling added this hook; disabling leaves it
                model.disable_input_require_grads()
            model.eval()
        return
    if not hasattr(model, "gradient_checkpointing_enable"):
        raise UserError("gradient_checkpointing needs a transformers model")
    dropout = [v for k, v in vars(model.config).items()
               if "dropout" in k and "classifier" not in k and isinstance(v, float)]
    if any(dropout):
        raise UserError("gradient_checkpointing runs the model in train mode, which would switch on its "
                        f"dropout ({max(dropout)}): use it only for models without dropout")
    if new:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()


def vectorize(model, config, device) -> bool:
    """vmap for plain modules; for transformers models only on CUDA, with eager attention (on CPU,
    chains one after another measured faster: see the README's speed table). Gradient
    checkpointing runs chain by chain."""
    if config.vectorize != "auto":
        return config.vectorize == "always" and not config.gradient_checkpointing
    if config.gradient_checkpointing or config.num_chains == 1:
        return False
    transformers_model = any(cls.__name__ == "PreTrainedModel" for cls in type(model).__mro__)
    return not transformers_model or device.type == "cuda"
