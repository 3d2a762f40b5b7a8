"""The top Hessian eigenvalue of the loss at w*, the curvature that sets a stable SGLD step.

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
    eigenvalue = 0.0
    with eager_attention(model):
        for _ in range(iterations):
            norm = torch.sqrt(sum((v**2).sum() for v in vector))
            vector = [v / norm for v in vector]
            grads = torch.autograd.grad(loss_fn(model, batch), params, create_graph=True)
            product = torch.autograd.grad(grads, params, grad_outputs=vector)
            eigenvalue = float(sum((h * v).sum() for h, v in zip(product, vector)))
            vector = [h.detach() for h in product]
    return eigenvalue
