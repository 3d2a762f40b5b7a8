"""Data for the sampler: sizes, devices, minibatches and the default losses.

`data` is a LongTensor of token sequences (default loss: per-token cross-entropy), an (x, y)
pair (default: `mse_loss`), or any tensor or tuple of tensors indexed along dim 0 with a
`loss_fn(model, batch) -> scalar mean loss`.
"""

from __future__ import annotations

from typing import Callable

from mdl_slt.errors import UserError


def data_size(data) -> int:
    return len(data[0]) if isinstance(data, tuple) else len(data)


def to_device(data, device):
    return tuple(d.to(device) for d in data) if isinstance(data, tuple) else data.to(device)


def pick(data, index):
    return tuple(d[index] for d in data) if isinstance(data, tuple) else data[index]


def minibatches(size: int, batch_size: int, steps: int, gen):
    """Row indices, (steps, b): drawn uniformly with replacement, or every row at every step
    when the batch is at least the data (exact gradients)."""
    import torch

    if batch_size >= size:
        return torch.arange(size, device=gen.device).expand(steps, size)
    return torch.randint(size, (steps, batch_size), generator=gen, device=gen.device)


def batches(data, batch_size: int):
    """Fixed, in-order batches over all of `data` (a tensor, or a tuple of tensors)."""
    size = data_size(data)
    for start in range(0, size, batch_size):
        stop = min(size, start + batch_size)
        yield pick(data, slice(start, stop)), stop - start


def mse_loss(model, batch):
    """½·mean over rows of ‖model(x) − y‖²: the unit-variance Gaussian NLL up to a constant."""
    x, y = batch
    return 0.5 * ((model(x) - y) ** 2).sum(-1).mean()


def is_tokens(data) -> bool:
    import torch

    return isinstance(data, torch.Tensor) and not data.is_floating_point()


def default_loss(data, numerics: str = "fp32") -> Callable:
    import functools

    from mdl_slt.compute.loss import token_nll

    if is_tokens(data):
        return functools.partial(token_nll, numerics=numerics)
    if isinstance(data, tuple) and len(data) == 2:
        return mse_loss
    raise UserError("estimate_llc needs a loss_fn(model, batch) for data other than tokens or (x, y)")
