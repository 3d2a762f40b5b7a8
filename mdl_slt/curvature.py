"""The top Hessian eigenvalue of the loss at w*, for choosing a stable SGLD step size.

SGLD's discretization bias grows with ε·nβ·λ_max(H): a step of ε = c / (nβ·λ_max) keeps the
stiffest direction resolved whatever the model's size (c ≈ 0.02 held every deep linear network
of SCIENCE.md §4 within a few per cent).
"""

from __future__ import annotations


def top_hessian_eigenvalue(model, data, loss_fn, batch_size: int = 1024, iterations: int = 30, seed: int = 0) -> float:
    """λ_max of ∇²L at the current parameters by power iteration on Hessian-vector products,
    over the first `batch_size` items of `data`."""
    import torch

    from mdl_slt.sgld import _pick, data_size

    params = [p for p in model.parameters() if p.requires_grad]
    batch = _pick(data, slice(0, min(batch_size, data_size(data))))
    gen = torch.Generator().manual_seed(seed)
    vector = [torch.randn(p.shape, generator=gen) for p in params]
    eigenvalue = 0.0
    for _ in range(iterations):
        norm = torch.sqrt(sum((v**2).sum() for v in vector))
        vector = [v / norm for v in vector]
        grads = torch.autograd.grad(loss_fn(model, batch), params, create_graph=True)
        product = torch.autograd.grad(grads, params, grad_outputs=vector)
        eigenvalue = float(sum((h * v).sum() for h, v in zip(product, vector)))
        vector = [h.detach() for h in product]
    return eigenvalue


def stable_step_size(model, data, loss_fn, n_beta: float, resolution: float = 0.02) -> float:
    """ε = resolution / (nβ·λ_max(H))."""
    return resolution / (n_beta * top_hessian_eigenvalue(model, data, loss_fn))
