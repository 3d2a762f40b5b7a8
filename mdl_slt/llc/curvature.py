"""The curvature of the loss at w* that sets a stable step: the Hessian's top eigenvalue, its
diagonal (the `fisher` sampler's preconditioner) and the preconditioned top eigenvalue.

SGLD's discretization bias grows with η·(nβ·λ_max + γ): for a quadratic the stationary variance
in the stiffest direction is inflated by 1/(1 − η·a/4), a = nβ·λ_max + γ, and the chain is
unstable for η·a ≥ 4. `step_size: auto` (outside Pythia's table) sets η·a = 0.3 (`sampling.STEP_SCALE`);
the README gives the measured λ_max across a model's checkpoints and the resulting steps.
"""

from __future__ import annotations


def top_hessian_eigenvalue(model, data, loss_fn, batch_size: int = 1024, iterations: int = 30, seed: int = 0) -> float:
    """λ_max of ∇²L at the current parameters by power iteration on Hessian-vector products,
    over the first `batch_size` items of `data` (attention computed eagerly: fused kernels have
    no second derivative)."""
    import torch

    from mdl_slt.compute.loss import eager_attention
    from mdl_slt.llc.batches import data_size, pick

    params = [p for p in model.parameters() if p.requires_grad]
    batch = pick(data, slice(0, min(batch_size, data_size(data))))
    gen = torch.Generator(device="cpu").manual_seed(seed)  # the same start vector on any device
    vector = [torch.randn(p.shape, generator=gen, device="cpu").to(p.device) for p in params]

    def hessian_times(vector):
        grads = torch.autograd.grad(loss_fn(model, batch), params, create_graph=True)
        return torch.autograd.grad(grads, params, grad_outputs=vector)

    with eager_attention(model):
        return _power_iteration(hessian_times, vector, iterations)


def _power_iteration(apply, vector: list, iterations: int) -> float:
    """The top eigenvalue of the symmetric operator `apply` (a list of tensors to a list of
    tensors), by `iterations` steps of power iteration from `vector`."""
    import torch

    top = 0.0
    for _ in range(iterations):
        norm = torch.sqrt(sum((v**2).sum() for v in vector))
        vector = [v / norm for v in vector]
        image = apply(vector)
        top = float(sum((i * v).sum() for i, v in zip(image, vector)))
        vector = [i.detach() for i in image]
    return top


def _hutchinson(model, params, data, loss_fn, probes: int, seed: int, rows: int):
    """(v, Hv) for `probes` Rademacher vectors v, H the loss's Hessian at the current parameters on
    the first `rows` rows of `data`."""
    import torch

    from mdl_slt.compute.loss import eager_attention
    from mdl_slt.llc.batches import data_size, pick

    batch = pick(data, slice(0, min(rows, data_size(data))))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with eager_attention(model):
        grads = torch.autograd.grad(loss_fn(model, batch), params, create_graph=True)
        for _ in range(probes):
            vector = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p) for p in params]
            yield vector, torch.autograd.grad(grads, params, grad_outputs=vector, retain_graph=True)


def hessian_diagonal(model, params, data, loss_fn, probes: int, seed: int = 0, rows: int = 64) -> list:
    """The diagonal of the loss's Hessian at the current parameters, per parameter, by Hutchinson
    (mean of v ⊙ Hv over Rademacher v) on the first `rows` rows, clamped at 0: a preconditioner
    needs only its rough shape, and any positive diagonal keeps the sampler exact."""
    import torch

    diagonal = [torch.zeros_like(p) for p in params]
    for vector, product in _hutchinson(model, params, data, loss_fn, probes, seed, rows):
        for d, v, h in zip(diagonal, vector, product):
            d += v * h.detach()
    return [(d / probes).clamp_(min=0) for d in diagonal]


def hessian_trace(model, params, data, loss_fn, probes: int = 16, seed: int = 0, rows: int = 64) -> tuple:
    """tr(H) of the loss at the current parameters over `params`, by Hutchinson: the mean of vᵀHv
    over Rademacher v on the first `rows` rows, and its standard error over the probes."""
    import statistics

    samples = [float(sum((v * h).sum() for v, h in zip(vector, product)))
               for vector, product in _hutchinson(model, params, data, loss_fn, probes, seed, rows)]
    return statistics.fmean(samples), statistics.stdev(samples) / len(samples) ** 0.5 if probes > 1 else float("nan")


def preconditioned_top(model, params, data, loss_fn, diagonal, n_beta: float, gamma: float,
                       iterations: int = 20, seed: int = 0, rows: int = 64) -> float:
    """λ_max of M^½·(nβ·H + γ)·M^½, M = 1/(nβ·F + γ), by power iteration on Hessian-vector products:
    the stiffest direction the preconditioned sampler meets."""
    import torch

    from mdl_slt.compute.loss import eager_attention
    from mdl_slt.llc.batches import data_size, pick

    batch = pick(data, slice(0, min(rows, data_size(data))))
    root = [torch.rsqrt(n_beta * f + gamma) for f in diagonal]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    vector = [torch.randn(p.shape, generator=gen).to(p) for p in params]
    with eager_attention(model):
        grads = torch.autograd.grad(loss_fn(model, batch), params, create_graph=True)

        def preconditioned_times(vector):
            scaled = [r * v for r, v in zip(root, vector)]
            product = torch.autograd.grad(grads, params, grad_outputs=scaled, retain_graph=True)
            return [r * (n_beta * h.detach() + gamma * s) for r, h, s in zip(root, product, scaled)]

        return _power_iteration(preconditioned_times, vector, iterations)
